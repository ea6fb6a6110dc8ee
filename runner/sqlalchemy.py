"""SQLAlchemy Core expressions for a model's SQL functions.

    import sqlalchemy as sa
    from gpt2sql.sqlalchemy import functions

    f = functions("gpt2")                        # a model name, or a gpt2sql Model
    posts = sa.table("posts", sa.column("id"), sa.column("body"))
    sa.select(posts.c.id, f.complete(posts.c.body, 20))                # one continuation per row
    sa.select(posts.c.id).order_by(f.perplexity(posts.c.body))         # likeliest texts first
    g = f.generate("Hello", 5)                   # table-valued: g.c.step, g.c.token, g.c.piece, g.c.finish
    sa.select(g.c.piece).order_by(g.c.step)
    b = f.generate("Hello", 5, num_beams=4, num_return_sequences=2)   # later options by name: b.c.sample

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
                    ("logprob", sa.Float), ("top_tokens", sa.ARRAY(sa.Integer)), ("top_logprobs", sa.ARRAY(sa.Float)),
                    ("sample", sa.Integer))

# the options generate and generate_batch take by name, with their SQL types (complete: all but
# logprobs and num_return_sequences)
OPTIONS = {"min_p": sa.Float, "repetition_penalty": sa.Float, "no_repeat_ngram_size": sa.Integer,
           "min_new_tokens": sa.Integer, "logprobs": sa.Integer, "num_return_sequences": sa.Integer,
           "num_beams": sa.Integer, "length_penalty": sa.Float, "early_stopping": sa.Text}


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


class NamedArgument(sa.sql.expression.ColumnElement):
    """name => value: an argument PostgreSQL matches to its parameter by name."""

    inherit_cache = False

    def __init__(self, name: str, value: ClauseElement):
        self.name = name
        self.value = value
        self.type = value.type


@compiles(NamedArgument)
def _render_named(element: NamedArgument, compiler, **kw) -> str:
    return f"{element.name} => {compiler.process(element.value, **kw)}"


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

    def _sampling(self, what: str, max_new_tokens, temperature, top_k, top_p, seed, stop, options: dict,
                  allowed=tuple(OPTIONS)) -> list[ClauseElement]:
        """The arguments after the prompt(s): the first ones by position, the rest by name (only those
        given). early_stopping may be True, False or "never", as in the Python client."""
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"{what}() takes no {', '.join(unknown)} (its options by name: {', '.join(allowed)})")
        if isinstance(options.get("early_stopping"), bool):
            options = {**options, "early_stopping": str(options["early_stopping"]).lower()}
        return [_arg(max_new_tokens, sa.Integer), _arg(temperature, sa.Float), _arg(top_k, sa.Integer),
                _arg(top_p, sa.Float), _arg(seed, sa.Float), _arg(stop, sa.Text),
                *(NamedArgument(k, _arg(v, OPTIONS[k])) for k, v in options.items())]

    @staticmethod
    def _table(fn: ModelFunction, columns, alias: str | None):
        return fn.table_valued(*(sa.column(n, t) for n, t in columns), name=alias)

    # -- scalar ---------------------------------------------------------------------------
    def complete(self, prompt, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None, seed=None,
                 stop=None, **options) -> ModelFunction:
        """prompt || its continuation (text); options by name: min_p, repetition_penalty,
        no_repeat_ngram_size, min_new_tokens, num_beams, length_penalty, early_stopping."""
        args = self._sampling("complete", max_new_tokens, temperature, top_k, top_p, seed, stop, options,
                              allowed=[k for k in OPTIONS if k not in ("logprobs", "num_return_sequences")])
        return self._function("complete", _arg(prompt, sa.Text), *args, type_=sa.Text)

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
                 stop=None, *, name: str | None = None, **options):
        """(step, token, piece, finish, logprob, top_tokens, top_logprobs, sample): one row per
        generated token; options by name as OPTIONS lists them (e.g. num_beams=4)."""
        fn = self._function("generate", _arg(prompt, sa.Text),
                            *self._sampling("generate", max_new_tokens, temperature, top_k, top_p, seed, stop, options))
        return self._table(fn, GENERATE_COLUMNS, name)

    def generate_batch(self, prompts, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None, seed=None,
                       stop=None, *, name: str | None = None, **options):
        """(prompt_index, and generate's columns): every prompt advancing together; options as generate's."""
        fn = self._function("generate_batch", _arg(prompts, sa.ARRAY(sa.Text)),
                            *self._sampling("generate_batch", max_new_tokens, temperature, top_k, top_p, seed, stop,
                                            options))
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
