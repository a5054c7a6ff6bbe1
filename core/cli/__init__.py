"""One module per command of ``python -m core``; each exposes ``register(subparsers)``."""
