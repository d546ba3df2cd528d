"""Our U²-Net definitions against the authors' checkpoint layout, written out here from the
paper's table 1 and the checkpoints' naming, independently of scripts/u2net.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from u2net import build, load_checkpoint

# stage: (RSU height, or "4F", in, mid, out)
U2NETP = {
    "stage1": (7, 3, 16, 64), "stage2": (6, 64, 16, 64), "stage3": (5, 64, 16, 64), "stage4": (4, 64, 16, 64),
    "stage5": ("4F", 64, 16, 64), "stage6": ("4F", 64, 16, 64), "stage5d": ("4F", 128, 16, 64),
    "stage4d": (4, 128, 16, 64), "stage3d": (5, 128, 16, 64), "stage2d": (6, 128, 16, 64), "stage1d": (7, 128, 16, 64),
}  # fmt: skip
U2NET = {
    "stage1": (7, 3, 32, 64), "stage2": (6, 64, 32, 128), "stage3": (5, 128, 64, 256), "stage4": (4, 256, 128, 512),
    "stage5": ("4F", 512, 256, 512), "stage6": ("4F", 512, 256, 512), "stage5d": ("4F", 1024, 256, 512),
    "stage4d": (4, 1024, 128, 256), "stage3d": (5, 512, 64, 128), "stage2d": (6, 256, 32, 64), "stage1d": (7, 128, 16, 64),
}  # fmt: skip
SIDE_CHANNELS = {"u2netp": (64,) * 6, "u2net": (64, 64, 128, 256, 512, 512)}


def block_layers(height: int | str, cin: int, mid: int, cout: int) -> list[tuple[str, int, int, int]]:
    """(name, in, out, dilation) of every conv+BN layer of a block, in the checkpoints' order."""
    if height == "4F":
        return [("in", cin, cout, 1), ("1", cout, mid, 1), ("2", mid, mid, 2), ("3", mid, mid, 4), ("4", mid, mid, 8),
                ("3d", 2 * mid, mid, 4), ("2d", 2 * mid, mid, 2), ("1d", 2 * mid, cout, 1)]  # fmt: skip
    assert isinstance(height, int)
    layers = [("in", cin, cout, 1), ("1", cout, mid, 1)]
    layers += [(str(level), mid, mid, 1) for level in range(2, height)] + [(str(height), mid, mid, 2)]
    layers += [(f"{level}d", 2 * mid, mid, 1) for level in range(height - 1, 1, -1)] + [("1d", 2 * mid, cout, 1)]
    return layers


def official_keys(arch: str) -> dict[str, tuple[int, ...]]:
    stages = U2NETP if arch == "u2netp" else U2NET
    keys: dict[str, tuple[int, ...]] = {}
    for stage, spec in stages.items():
        for name, cin, cout, _ in block_layers(*spec):
            prefix = f"{stage}.rebnconv{name}"
            keys[f"{prefix}.conv_s1.weight"] = (cout, cin, 3, 3)
            keys[f"{prefix}.conv_s1.bias"] = (cout,)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{prefix}.bn_s1.{buffer}"] = (cout,)
            keys[f"{prefix}.bn_s1.num_batches_tracked"] = ()
    for index, channels in enumerate(SIDE_CHANNELS[arch], start=1):
        keys[f"side{index}.weight"], keys[f"side{index}.bias"] = (1, channels, 3, 3), (1,)
    keys["outconv.weight"], keys["outconv.bias"] = (1, 6, 1, 1), (1,)
    return keys


def official_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Random weights under the official names, as a checkpoint would hold them."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in official_keys(arch).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


@pytest.mark.parametrize("arch", ["u2netp", "u2net"])
def test_state_dict_keys_shapes_and_order_are_the_official_ones(arch: str) -> None:
    ours = {key: tuple(value.shape) for key, value in build(arch).state_dict().items()}
    assert list(ours.items()) == list(official_keys(arch).items())


@pytest.mark.parametrize(("arch", "million_params", "conv_bn_layers"), [("u2netp", 1.13, 112), ("u2net", 44.0, 112)])
def test_sizes_match_the_paper(arch: str, million_params: float, conv_bn_layers: int) -> None:
    """Table 3: U²-Net 176.3 MB / 44.0 M parameters, U²-Net† 4.7 MB / 1.13 M. The shipped
    u2netp.onnx has 224 anonymous initializers: one folded weight and bias per conv+BN layer."""
    model = build(arch)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2 if arch == "u2netp" else 1) == million_params
    assert sum(1 for name, _ in model.named_modules() if name.endswith("conv_s1")) == conv_bn_layers


def test_dilations_follow_the_paper() -> None:
    modules = dict(build("u2netp").named_modules())
    for stage, spec in U2NETP.items():
        for name, _, _, dilation in block_layers(*spec):
            assert modules[f"{stage}.rebnconv{name}.conv_s1"].dilation == (dilation, dilation)


def test_official_checkpoint_loads_strictly(tmp_path: Path) -> None:
    state = official_state_dict("u2netp")
    model = build("u2netp")
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.stage4d.rebnconv3d.bn_s1.running_var, state["stage4d.rebnconv3d.bn_s1.running_var"])

    from export_onnx import load_model

    torch.save(state, tmp_path / "u2netp.pth")  # as the authors' training script saves it
    loaded = load_model("u2netp", weights=tmp_path / "u2netp.pth")
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())


def test_dataparallel_prefix_and_pre_0_4_1_buffers_are_accepted() -> None:
    state = {f"module.{key}": value for key, value in official_state_dict("u2netp").items() if "num_batches" not in key}
    model = build("u2netp")
    load_checkpoint(model, state)
    assert torch.equal(model.outconv.weight, state["module.outconv.weight"])


def test_a_wrong_checkpoint_is_refused() -> None:
    state = official_state_dict("u2netp")
    state["stage7.rebnconvin.conv_s1.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="stage7"):
        load_checkpoint(build("u2netp"), state)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(build("u2net"), official_state_dict("u2netp"))


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 320, 320), (2, 64, 96), (1, 100, 75)])
def test_seven_probability_maps_at_the_input_size(batch: int, height: int, width: int) -> None:
    model = build("u2netp")
    with torch.no_grad():
        outputs = model(torch.randn(batch, 3, height, width))
    assert len(outputs) == 7
    for output in outputs:
        assert output.shape == (batch, 1, height, width)
        assert 0.0 <= float(output.min()) and float(output.max()) <= 1.0


def test_full_u2net_runs() -> None:
    with torch.no_grad():
        outputs = build("u2net")(torch.randn(1, 3, 64, 64))
    assert [tuple(output.shape) for output in outputs] == [(1, 1, 64, 64)] * 7
