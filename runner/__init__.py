"""gpt2sql: GPT-2 running inside PostgreSQL, its arithmetic done by SQL.

    import gpt2sql
    with gpt2sql.Client() as client:
        print(client.model("gpt2").generate("Hello, my name is"))
"""

__version__ = "0.5.0"

from .client import Client, Hypothesis, Model, ModelNeedsUpgrade, ModelNotFound, Step, TokenProb, Trace  # noqa: E402
from .db import DatabaseError, connect, resolve_dsn  # noqa: E402

__all__ = ["__version__", "Client", "Hypothesis", "Model", "ModelNeedsUpgrade", "ModelNotFound", "Step", "TokenProb", "Trace", "DatabaseError",
           "connect", "resolve_dsn"]
