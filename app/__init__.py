"""A self-hosted image background-removal service."""

__version__ = "0.1.0"
