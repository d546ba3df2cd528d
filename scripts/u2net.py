"""U²-Net and U²-Net-p in PyTorch, written from the paper, for export to ONNX.

Qin, Zhang, Huang, Dehghan, Zaiane, Jagersand: "U²-Net: Going Deeper with Nested U-Structure
for Salient Object Detection", Pattern Recognition 106 (2020). Section 3 and table 1 give the
residual U-blocks (RSU-L, RSU-4F), the six encoder and five decoder stages, the saliency map
each decoder stage and the last encoder stage emit, and their fusion by a 1x1 convolution.

Every parameter and buffer is named as in the authors' checkpoints (``u2net.pth``,
``u2netp.pth`` and fine-tunes of them such as ``u2net_human_seg.pth``), so those load with
``strict=True``: ``stage1`` .. ``stage6``, ``stage5d`` .. ``stage1d``, ``side1`` .. ``side6``,
``outconv``; inside a block ``rebnconvin``, ``rebnconv1`` .. ``rebnconvL``,
``rebnconv(L-1)d`` .. ``rebnconv1d``, each a ``conv_s1`` and a ``bn_s1``.

PyTorch is an export-time dependency only: the service runs the ONNX file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ARCHITECTURES = ("u2net", "u2netp")
SIDE_OUTPUTS = 7  # the fused map first, then side1 .. side6
DOWNSAMPLING = 32  # five 2x poolings between the six encoder stages


class ConvBnRelu(nn.Module):
    """3x3 convolution (dilated by ``dilation``, padded to keep the size), BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


def upsample_like(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to ``like``'s height and width (``ceil_mode`` pooling makes
    sizes round up, so a 2x upsample would not always match the skip connection)."""
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of height ``height`` (RSU-7 .. RSU-4): a small U-Net over the input
    convolution's features, pooling between its ``height - 1`` encoder layers, a dilated
    bottom layer, and the input features added back to the decoder's output."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.height = height
        self.rebnconvin = ConvBnRelu(in_ch, out_ch)
        self.rebnconv1 = ConvBnRelu(out_ch, mid_ch)
        for level in range(2, height):
            setattr(self, f"rebnconv{level}", ConvBnRelu(mid_ch, mid_ch))
        setattr(self, f"rebnconv{height}", ConvBnRelu(mid_ch, mid_ch, dilation=2))
        for level in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{level}d", ConvBnRelu(2 * mid_ch, mid_ch))
        self.rebnconv1d = ConvBnRelu(2 * mid_ch, out_ch)

    def _layer(self, name: str) -> nn.Module:
        return getattr(self, f"rebnconv{name}")

    def forward(self, x: Tensor) -> Tensor:
        residual = self.rebnconvin(x)
        skips = [self.rebnconv1(residual)]
        for level in range(2, self.height):
            skips.append(self._layer(str(level))(_pool(skips[-1])))
        hx = self._layer(str(self.height))(skips[-1])
        hx = self._layer(f"{self.height - 1}d")(torch.cat((hx, skips[-1]), 1))
        for level in range(self.height - 2, 0, -1):
            skip = skips[level - 1]
            hx = self._layer(f"{level}d")(torch.cat((upsample_like(hx, skip), skip), 1))
        return hx + residual


class RSU4F(nn.Module):
    """RSU-4F: the residual U-block for the low-resolution stages, with dilations 1, 2, 4, 8
    in place of pooling, so no resolution is lost where there is little left."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = ConvBnRelu(in_ch, out_ch)
        self.rebnconv1 = ConvBnRelu(out_ch, mid_ch)
        self.rebnconv2 = ConvBnRelu(mid_ch, mid_ch, dilation=2)
        self.rebnconv3 = ConvBnRelu(mid_ch, mid_ch, dilation=4)
        self.rebnconv4 = ConvBnRelu(mid_ch, mid_ch, dilation=8)
        self.rebnconv3d = ConvBnRelu(2 * mid_ch, mid_ch, dilation=4)
        self.rebnconv2d = ConvBnRelu(2 * mid_ch, mid_ch, dilation=2)
        self.rebnconv1d = ConvBnRelu(2 * mid_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.rebnconvin(x)
        hx1 = self.rebnconv1(residual)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + residual


# (block height or "4F", in, mid, out) per stage, from the paper's table 1; "4F" is RSU-4F.
_STAGES = {
    "u2net": {
        "stage1": (7, 3, 32, 64),
        "stage2": (6, 64, 32, 128),
        "stage3": (5, 128, 64, 256),
        "stage4": (4, 256, 128, 512),
        "stage5": ("4F", 512, 256, 512),
        "stage6": ("4F", 512, 256, 512),
        "stage5d": ("4F", 1024, 256, 512),
        "stage4d": (4, 1024, 128, 256),
        "stage3d": (5, 512, 64, 128),
        "stage2d": (6, 256, 32, 64),
        "stage1d": (7, 128, 16, 64),
    },
    "u2netp": {
        "stage1": (7, 3, 16, 64),
        "stage2": (6, 64, 16, 64),
        "stage3": (5, 64, 16, 64),
        "stage4": (4, 64, 16, 64),
        "stage5": ("4F", 64, 16, 64),
        "stage6": ("4F", 64, 16, 64),
        "stage5d": ("4F", 128, 16, 64),
        "stage4d": (4, 128, 16, 64),
        "stage3d": (5, 128, 16, 64),
        "stage2d": (6, 128, 16, 64),
        "stage1d": (7, 128, 16, 64),
    },
}
_ENCODER = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6")
_DECODER = ("stage5d", "stage4d", "stage3d", "stage2d", "stage1d")
# The stage whose output each side convolution reads: the decoder stages, then the last encoder stage.
_SIDE_SOURCES = ("stage1d", "stage2d", "stage3d", "stage4d", "stage5d", "stage6")


def stage_specs(arch: str) -> dict[str, tuple[int | str, int, int, int]]:
    """The block type and channel widths of every stage, in module (and execution) order."""
    if arch not in _STAGES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    return dict(_STAGES[arch])


class U2Net(nn.Module):
    """The full network: six encoder stages, five decoder stages, six side maps and their fusion.

    ``forward`` returns seven probability maps at the input's size, the fused map first,
    as the authors' models (and so every U²-Net ONNX file in the wild) do.
    """

    def __init__(self, arch: str = "u2netp", out_ch: int = 1) -> None:
        super().__init__()
        self.arch = arch
        for name, (height, in_ch, mid_ch, stage_out) in stage_specs(arch).items():
            block = RSU4F(in_ch, mid_ch, stage_out) if height == "4F" else RSU(int(height), in_ch, mid_ch, stage_out)
            self.add_module(name, block)
        specs = stage_specs(arch)
        for index, source in enumerate(_SIDE_SOURCES, start=1):
            self.add_module(f"side{index}", nn.Conv2d(specs[source][3], out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features: dict[str, Tensor] = {}
        encoded: list[Tensor] = []
        hx = x
        for depth, name in enumerate(_ENCODER):
            if depth:
                hx = _pool(hx)
            hx = getattr(self, name)(hx)
            features[name] = hx
            encoded.append(hx)
        for name, skip in zip(_DECODER, reversed(encoded[:-1]), strict=True):
            hx = getattr(self, name)(torch.cat((upsample_like(hx, skip), skip), 1))
            features[name] = hx
        side_maps = [getattr(self, f"side{index}")(features[source]) for index, source in enumerate(_SIDE_SOURCES, start=1)]
        side_maps = [side_maps[0]] + [upsample_like(side, side_maps[0]) for side in side_maps[1:]]
        fused = self.outconv(torch.cat(side_maps, 1))
        return tuple(torch.sigmoid(logits) for logits in (fused, *side_maps))


def build(arch: str) -> U2Net:
    """A randomly initialised network in evaluation mode (BatchNorm uses its running statistics)."""
    return U2Net(arch).eval()


def load_checkpoint(model: U2Net, state_dict: dict[str, Tensor]) -> None:
    """Load an official-layout state_dict strictly, tolerating two harmless differences:
    a ``module.`` prefix (saved from ``nn.DataParallel``) and absent ``num_batches_tracked``
    buffers (checkpoints from before PyTorch 0.4.1; eval-mode BatchNorm never reads them)."""
    state = {key.removeprefix("module."): value for key, value in state_dict.items()}
    for key, buffer in model.state_dict().items():
        if key.endswith(".num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(buffer))
    model.load_state_dict(state, strict=True)
