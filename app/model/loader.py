"""The model the settings name; the shipped default is held to its pinned hash."""

from __future__ import annotations

from app.model.catalog import U2NETP
from app.model.session import SaliencyModel
from app.priority import at_low_priority
from app.settings import DEFAULT_MODEL_PATH, Settings


def load_model(settings: Settings) -> SaliencyModel:
    """Load ``MODEL_PATH``; a user's own file is loaded as it is, the default must match its pin.

    Loaded from a thread at the workers' priority: the intra-op threads onnxruntime starts
    with a session inherit it, and must not compete with the event loop any more than the
    workers do.
    """
    expected = U2NETP.sha256 if settings.model_path.resolve() == DEFAULT_MODEL_PATH else None
    return at_low_priority(
        SaliencyModel.load,
        settings.model_path,
        settings.intra_op_threads,
        expected_sha256=expected,
        solo_threads=settings.solo_threads,
    )
