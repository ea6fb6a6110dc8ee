"""gpt2sql: GPT-2 running inside PostgreSQL, its arithmetic done by SQL."""

__version__ = "0.1.0"

from .db import connect, resolve_dsn  # noqa: E402

__all__ = ["__version__", "connect", "resolve_dsn"]
