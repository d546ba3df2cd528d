"""Other services' APIs answered on our own pipeline: remove.bg's v1.0."""
