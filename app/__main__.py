"""``python -m app``: check the settings and the model, then serve with uvicorn.

The model is loaded here, before uvicorn starts, so a missing or corrupt file
stops the process with one readable line instead of a lifespan traceback.
"""

from __future__ import annotations

import sys

import uvicorn

from app.main import create_app
from app.model import ModelError, load_model
from app.settings import Settings, SettingsError


def main() -> None:
    try:
        settings = Settings.from_env()
        model = load_model(settings)
    except (SettingsError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    uvicorn.run(
        create_app(settings, model),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
