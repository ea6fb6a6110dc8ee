"""SQLAlchemy Core expressions for a model's SQL functions.

    import sqlalchemy as sa
    from gpt2sql.sqlalchemy import functions

    f = functions("gpt2")                        # a model name, or a gpt2sql Model
    posts = sa.table("posts", sa.column("id"), sa.column("body"))
    sa.select(posts.c.id, f.complete(posts.c.body, 20))                # one continuation per row
    sa.select(posts.c.id).order_by(f.perplexity(posts.c.body))         # likeliest texts first
    g = f.generate("Hello", 5)                   # table-valued: g.c.step, g.c.token, g.c.piece, g.c.finish
    sa.select(g.c.piece).order_by(g.c.step)

Arguments may be Python values (bound as parameters) or SQL expressions (columns, sub-queries).
The schema is always quoted, so any model name is safe. Scalar functions carry their return
type; table-valued ones are ``TableValuedAlias`` objects with their named, typed columns.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.functions import Function

from .loader.load import check_model_name

GENERATE_COLUMNS = (("step", sa.Integer), ("token", sa.Integer), ("piece", sa.Text), ("finish", sa.Text),
                    ("logprob", sa.Float), ("top_tokens", sa.ARRAY(sa.Integer)), ("top_logprobs", sa.ARRAY(sa.Float)))


class ModelFunction(Function):
    """schema.name(args): rendered with the schema quoted as the dialect requires (SQLAlchemy's
    own packagenames leave reserved words such as "order" unquoted)."""

    inherit_cache = False       # the schema is not part of Function's cache key

    def __init__(self, schema: str, name: str, *args, type_=None):
        self.schema = schema
        super().__init__(name, *args, type_=type_)


@compiles(ModelFunction)
def _render(element: ModelFunction, compiler, **kw) -> str:
    p = compiler.preparer
    return f"{p.quote_schema(element.schema)}.{p.quote(element.name)}{compiler.function_argspec(element, **kw)}"


def _arg(value: Any, type_: sa.types.TypeEngine) -> ClauseElement:
    """A bound parameter of the SQL argument's type, or the expression as given (a column, an ORM
    attribute, a sub-query)."""
    if isinstance(value, ClauseElement) or hasattr(value, "__clause_element__"):
        return value
    if value is None:
        return sa.cast(sa.null(), type_)
    return sa.bindparam(None, value, type_=type_)


class ModelFunctions:
    """The SQL functions of one model (schema), as SQLAlchemy expressions."""

    def __init__(self, model):
        name = model if isinstance(model, str) else getattr(model, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"functions() takes a model name or a gpt2sql Model, not {type(model).__name__}")
        self.schema = check_model_name(name)

    def _function(self, name: str, *args, type_=None) -> ModelFunction:
        return ModelFunction(self.schema, name, *args, type_=type_)

    def _sampling(self, max_new_tokens, temperature, top_k, top_p, seed, stop, min_p=None, repetition_penalty=1.0,
                  no_repeat_ngram_size=0, min_new_tokens=0, logprobs=0) -> list[ClauseElement]:
        return [_arg(max_new_tokens, sa.Integer), _arg(temperature, sa.Float), _arg(top_k, sa.Integer),
                _arg(top_p, sa.Float), _arg(seed, sa.Float), _arg(stop, sa.Text), _arg(min_p, sa.Float),
                _arg(repetition_penalty, sa.Float), _arg(no_repeat_ngram_size, sa.Integer),
                _arg(min_new_tokens, sa.Integer), _arg(logprobs, sa.Integer)]

    @staticmethod
    def _table(fn: ModelFunction, columns, alias: str | None):
        return fn.table_valued(*(sa.column(n, t) for n, t in columns), name=alias)

    # -- scalar ---------------------------------------------------------------------------
    def complete(self, prompt, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None, seed=None,
                 stop=None, **processors) -> ModelFunction:
        """prompt || its continuation (text); processors: min_p, repetition_penalty, no_repeat_ngram_size,
        min_new_tokens, as generate takes them."""
        options = self._sampling(max_new_tokens, temperature, top_k, top_p, seed, stop, **processors)
        return self._function("complete", _arg(prompt, sa.Text), *options[:-1],    # text: no logprobs
                              type_=sa.Text)

    def tokenize(self, text) -> ModelFunction:
        """token ids (int[])."""
        return self._function("tokenize", _arg(text, sa.Text), type_=sa.ARRAY(sa.Integer))

    def detokenize(self, tokens) -> ModelFunction:
        """text of token ids."""
        return self._function("detokenize", _arg(tokens, sa.ARRAY(sa.Integer)), type_=sa.Text)

    def perplexity(self, text) -> ModelFunction:
        """exp(-mean log-probability of the text's tokens) (float8)."""
        return self._function("perplexity", _arg(text, sa.Text), type_=sa.Float)

    # -- table-valued -----------------------------------------------------------------------
    def generate(self, prompt, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None, seed=None,
                 stop=None, *, name: str | None = None, **processors):
        """(step, token, piece, finish): one row per generated token."""
        fn = self._function("generate", _arg(prompt, sa.Text),
                            *self._sampling(max_new_tokens, temperature, top_k, top_p, seed, stop, **processors))
        return self._table(fn, GENERATE_COLUMNS, name)

    def generate_batch(self, prompts, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None, seed=None,
                       stop=None, *, name: str | None = None, **processors):
        """(prompt_index, step, token, piece, finish): every prompt advancing together."""
        fn = self._function("generate_batch", _arg(prompts, sa.ARRAY(sa.Text)),
                            *self._sampling(max_new_tokens, temperature, top_k, top_p, seed, stop, **processors))
        return self._table(fn, (("prompt_index", sa.Integer),) + GENERATE_COLUMNS, name)

    def next_token_probs(self, prompt, k=10, *, name: str | None = None):
        """(rank, token, piece, probability): the k likeliest next tokens."""
        fn = self._function("next_token_probs", _arg(prompt, sa.Text), _arg(k, sa.Integer))
        return self._table(fn, (("rank", sa.Integer), ("token", sa.Integer), ("piece", sa.Text),
                                ("probability", sa.Float)), name)

    def score(self, text, *, name: str | None = None):
        """(position, token, piece, logprob, rank): every token of the text, scored."""
        fn = self._function("score", _arg(text, sa.Text))
        return self._table(fn, (("position", sa.Integer), ("token", sa.Integer), ("piece", sa.Text),
                                ("logprob", sa.Float), ("rank", sa.Integer)), name)


def functions(model) -> ModelFunctions:
    """The SQL functions of ``model`` (a name or a gpt2sql Model) as SQLAlchemy Core expressions."""
    return ModelFunctions(model)


__all__ = ["functions", "ModelFunctions"]
