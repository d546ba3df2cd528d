"""The models the settings name, loaded once: catalogue files held to their pinned hashes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from app.model.catalog import CATALOGUE, KnownModel
from app.model.session import ModelError, SaliencyModel
from app.priority import at_low_priority
from app.settings import Settings


@dataclass(frozen=True)
class ModelSet:
    """The loaded models by name; ``default`` is what a request gets unless it names another."""

    models: dict[str, SaliencyModel]
    default: str

    @classmethod
    def of(cls, model: SaliencyModel) -> ModelSet:
        return cls({model.info.name: model}, model.info.name)

    def get(self, name: str | None = None) -> SaliencyModel | None:
        """The model called ``name`` (the default for None), or None if it is not loaded."""
        return self.models.get(self.default if name is None else name)

    def for_request(self, name: str | None, quality: str) -> SaliencyModel | None:
        """What a request gets: the model it names, else for ``best`` the strongest loaded, else the default."""
        if name is None and quality == "best":
            strongest = next((self.models[known] for known in CATALOGUE if known in self.models), None)
            return strongest or self.default_model
        return self.get(name)

    @property
    def default_model(self) -> SaliencyModel:
        return self.models[self.default]

    def __iter__(self) -> Iterator[SaliencyModel]:
        return iter(self.models.values())


def load_models(settings: Settings) -> ModelSet:
    """``MODEL`` and ``MODELS`` from the catalogue, or ``MODEL_PATH``'s own file as the default.

    Loaded from a thread at the workers' priority: the intra-op threads onnxruntime starts
    with a session inherit it, and must not compete with the event loop any more than the
    workers do.
    """
    unknown = [name for name in settings.model_names if name not in CATALOGUE]
    if unknown:
        raise ModelError(f"MODEL and MODELS must name catalogue models ({', '.join(CATALOGUE)}); got {', '.join(unknown)}")
    models: dict[str, SaliencyModel] = {}
    default = settings.model
    if settings.model_path is not None:
        own = _load(settings, settings.model_path, None)
        default = own.info.name
        models[default] = own
    for name in settings.model_names:
        if name in models:
            continue
        if settings.model_path is not None and name == settings.model and name not in settings.models:
            continue  # MODEL_PATH took the default's place
        known = CATALOGUE[name]
        path = settings.model_dir / known.filename
        if known.derived_from is None:
            models[name] = _load(settings, path, known, expected_sha256=known.sha256)
        else:
            models[name] = _load(settings, path, known, expected_source_sha256=known.sha256)
    return ModelSet(models, default)


def load_model(settings: Settings) -> SaliencyModel:
    """The default model alone, for callers that need only one (the benchmarks)."""
    return load_models(replace(settings, models=())).default_model


def _load(
    settings: Settings,
    path: Path,
    known: KnownModel | None,
    expected_sha256: str | None = None,
    expected_source_sha256: str | None = None,
) -> SaliencyModel:
    return at_low_priority(
        SaliencyModel.load,
        path,
        settings.intra_op_threads,
        expected_sha256=expected_sha256,
        solo_threads=settings.solo_threads,
        expected_source_sha256=expected_source_sha256,
        known=known,
    )
