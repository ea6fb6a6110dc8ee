"""The Python client: generate, stream, tokenize and inspect a loaded model.

    import gpt2sql
    with gpt2sql.Client() as client:            # embedded server, or Client("postgresql://...")
        model = client.model("gpt2")
        print(model.generate("Hello, my name is", max_new_tokens=20))
        for piece in model.stream("Once upon a time", max_new_tokens=10):
            print(piece, end="", flush=True)

All arithmetic happens in PostgreSQL; prompts and options are always bound parameters.
"""

from __future__ import annotations

import html
import json
import numbers
import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import psycopg
from psycopg import sql

from .db import DatabaseError, connect, resolve_dsn


class ModelNotFound(LookupError):
    """No model of that name is loaded."""


class ModelNeedsUpgrade(LookupError):
    """The model was loaded by another gpt2sql: its SQL functions are not this version's."""


@dataclass(frozen=True)
class TokenProb:
    rank: int
    token: int
    piece: str
    probability: float


@dataclass(frozen=True)
class Step:
    step: int
    token: int
    piece: str
    finish: str | None
    logprob: float | None = None                      # with logprobs=n: ln p of the token where it was drawn
    top: tuple[tuple[int, float], ...] | None = None  # and the n likeliest (token, logprob) there


@dataclass(frozen=True)
class BatchStep:
    prompt_index: int    # counting from 1, like the SQL array
    step: int
    token: int
    piece: str
    finish: str | None


@dataclass(frozen=True)
class Hypothesis:
    rank: int             # 1 = the best
    tokens: list[int]     # the new tokens (one that ended with <|endoftext|> keeps it last)
    text: str             # what they add to the prompt
    score: float          # sum of log-probabilities / len(tokens) ** length_penalty
    finish: str           # 'endoftext', 'length' or 'context_full'


@dataclass(frozen=True)
class TokenScore:
    position: int        # its position in what the model reads: 0 is the <|endoftext|> scored after, so from 1
    token: int
    piece: str
    logprob: float       # natural log of its probability given the tokens before it
    rank: int            # 1 = it was the model's likeliest next token


@dataclass(frozen=True)
class AttentionWeight:
    position: int        # the query's position
    key_position: int    # the position attended to (<= position)
    query_piece: str
    key_piece: str
    score: float         # q . k / sqrt(D), before the softmax
    weight: float        # after the softmax: each position's weights sum to 1


@dataclass(frozen=True)
class Prediction:
    rank: int
    token: int
    piece: str
    logit: float
    probability: float


@dataclass(frozen=True)
class TokenChance:
    position: int
    piece: str           # the token at this position
    candidate: str       # the token asked about, as the next token after this position
    probability: float
    rank: int


@dataclass(frozen=True)
class LensPrediction:
    layer: int           # 0 = the embeddings, n_layer = the model's output
    position: int
    rank: int
    token: int
    piece: str
    probability: float


@dataclass(frozen=True)
class PredictionChange:
    position: int
    rank: int
    token_a: int         # this trace's rank-th likeliest next token
    piece_a: str
    probability_a: float
    token_b: int         # the other trace's
    piece_b: str
    probability_b: float
    probability_b_of_a: float  # how likely the other trace finds token_a
    stream_distance: float     # ||x_b - x_a|| of the residual stream after the last block, at this position


@dataclass(frozen=True)
class ResidualChange:
    layer: int
    sublayer: str        # 'attn' or 'mlp': the residual stream after that sub-layer
    position: int
    distance: float      # ||x_b - x_a||
    norm_a: float        # ||x_a||


INT_MIN, INT_MAX = -2**31, 2**31 - 1   # PostgreSQL's int


@dataclass(frozen=True)
class SamplingOptions:
    max_new_tokens: int = 20
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: float | None = None
    stop: str | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    logprobs: int = 0
    num_beams: int = 1                  # > 1: beam search (deterministic: no sampling options)
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "top_k", "no_repeat_ngram_size", "min_new_tokens", "logprobs",  # PostgreSQL
                     "num_beams"):                                                                # int
            value = getattr(self, name)                                                    # arguments: say
            if value is None and name == "top_k":                                          # which one is off
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if not INT_MIN <= value <= INT_MAX:
                raise ValueError(f"{name} = {value} is outside PostgreSQL's int range "
                                 f"({INT_MIN} .. {INT_MAX})")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', not {self.early_stopping!r}")

    def params(self) -> tuple:
        """The options in the order OPTION_ARGS takes them."""
        return (self.max_new_tokens, self.temperature, self.top_k, self.top_p, self.seed, self.stop, self.min_p,
                self.repetition_penalty, self.no_repeat_ngram_size, self.min_new_tokens, self.logprobs,
                self.num_beams, self.length_penalty, str(self.early_stopping).lower())


def _check_text(value: str, what: str = "prompt") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text ({exc.reason} at position {exc.start})") from None
    return value


def _check_tokens(tokens: Sequence[int]) -> list[int]:
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence) or \
            not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise TypeError(f"tokens must be a list of int, not {tokens!r:.60}")
    return list(tokens)


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of str, not {type(prompts).__name__}")
    return [_check_text(p, f"prompt {i}") for i, p in enumerate(prompts, 1)]


# the model's generate() and generate_batch() with the prompt(s) and every SamplingOptions field
# as bound parameters (OPTION_ARGS, in the order of SamplingOptions.params())
OPTION_ARGS = ("%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
               "num_beams => %s, length_penalty => %s, early_stopping => %s")
GENERATE = "{m}.generate(%s, " + OPTION_ARGS + ")"
GENERATE_SAMPLES = "{m}.generate(%s, " + OPTION_ARGS + ", num_return_sequences => %s)"
GENERATE_BATCH = "{m}.generate_batch(%s::text[], " + OPTION_ARGS + ")"
PROCESSORS = ("repetition_penalty", "no_repeat_ngram_size", "min_new_tokens")


class Model:
    """One loaded model (a schema). Obtain it with ``Client.model(name)``."""

    def __init__(self, client: "Client", name: str):
        self.client = client
        self.name = name
        self._schema = sql.Identifier(name)

    def query(self, template: str, params: Sequence = ()) -> list[tuple]:
        """The rows of one query, with {m} in the template standing for the model's schema."""
        query = sql.SQL(template).format(m=self._schema)
        with self.client.connection.cursor() as cur:
            return cur.execute(query, params).fetchall()

    def config(self) -> dict:
        """The model's shape and settings: the one row of its config table, by column name."""
        with self.client.connection.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {m}.config").format(m=self._schema))
            return dict(zip([c.name for c in cur.description], cur.fetchone()))

    def quoted(self) -> str:
        """The model's schema as SQL writes it (quoted where its name needs it, e.g. "order")."""
        return self._schema.as_string(self.client.connection)

    # -- tokenizer -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return self.query("SELECT {m}.tokenize(%s)", (_check_text(text, "text"),))[0][0]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.query("SELECT {m}.detokenize(%s::int[])", (list(tokens),))[0][0]

    # -- the model -------------------------------------------------------------------------
    def next_token_logits(self, tokens: Sequence[int]) -> list[float]:
        """Logits of every vocabulary entry for the position after ``tokens`` (index = token id)."""
        rows = self.query("SELECT token, logit FROM {m}.next_token_logits(%s::int[]) ORDER BY token",
                          (list(tokens),))
        return [logit for _, logit in rows]

    def next_token_probs(self, prompt: str, k: int = 10) -> list[TokenProb]:
        rows = self.query("SELECT rank, token, piece, probability FROM {m}.next_token_probs(%s, %s)",
                          (_check_text(prompt), k))
        return [TokenProb(*r) for r in rows]

    def steps(self, prompt: str, **options) -> list[Step]:
        """Every generated token, with its piece of text and why generation stopped (last row);
        with logprobs=n, each token's log-probability and the n likeliest alternatives."""
        opts = SamplingOptions(**options)
        rows = self.query("SELECT step, token, piece, finish, logprob, top_tokens, top_logprobs FROM " + GENERATE,
                          (_check_text(prompt), *opts.params()))
        return [Step(*r[:5], top=None if r[5] is None else tuple(zip(r[5], r[6]))) for r in rows]

    def generate(self, prompt: str, **options) -> str:
        """The continuation of ``prompt`` (without the prompt). Options, named as in transformers'
        generate: max_new_tokens=20, temperature=0 (greedy), top_k, top_p, min_p, seed (in [-1, 1]:
        reproducible sampling), stop, repetition_penalty=1, no_repeat_ngram_size=0, min_new_tokens=0;
        num_beams > 1 (with length_penalty=1, early_stopping=False): beam search's best hypothesis."""
        return "".join(s.piece for s in self.steps(prompt, **options))

    def samples(self, prompt: str, num_return_sequences: int, **options) -> list[str]:
        """``num_return_sequences`` sampled continuations of ``prompt`` (temperature > 0), all advancing
        together in one SQL generate call; with a seed, sample i draws from its own stream, so it is
        the same whatever num_return_sequences is. With num_beams: beam search's best hypotheses,
        best first. Same options as ``generate``."""
        opts = SamplingOptions(**options)
        rows = self.query("SELECT sample, piece FROM " + GENERATE_SAMPLES,
                          (_check_text(prompt), *opts.params(), num_return_sequences))
        out = [""] * num_return_sequences
        for sample, piece in rows:
            out[sample - 1] += piece
        return out

    def beam_search(self, prompt: str, num_beams: int = 4, max_new_tokens: int = 20, length_penalty: float = 1.0,
                    early_stopping: bool | str = False, num_return_sequences: int = 1, **processors) -> list[Hypothesis]:
        """The ``num_return_sequences`` best hypotheses of a beam search, best first, as transformers'
        generate finds them with ``num_beams`` and no sampling. early_stopping: False, True or
        "never"; processors: repetition_penalty, no_repeat_ngram_size, min_new_tokens."""
        unknown = sorted(set(processors) - set(PROCESSORS))
        if unknown:
            raise TypeError(f"beam search is deterministic and takes no {', '.join(unknown)} "
                            f"(its options: num_beams, max_new_tokens, length_penalty, early_stopping, "
                            f"num_return_sequences, {', '.join(PROCESSORS)})")
        opts = SamplingOptions(max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                               early_stopping=early_stopping, **processors)               # checks them
        rows = self.query("SELECT rank, tokens, text, score, finish FROM {m}.beam_search(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                          (_check_text(prompt), opts.num_beams, opts.max_new_tokens, opts.length_penalty,
                           str(opts.early_stopping).lower(), num_return_sequences, opts.repetition_penalty,
                           opts.no_repeat_ngram_size, opts.min_new_tokens))
        return [Hypothesis(*r) for r in rows]

    def generate_batch(self, prompts: Sequence[str], **options) -> list[str]:
        """The continuation of each prompt, in order: all prompts advance together, one model run per
        step for all of them (SQL generate_batch; with num_beams, all prompts' beams). Same options
        as ``generate``."""
        steps = self.steps_batch(prompts, **options)        # checks the prompts
        out = [""] * len(prompts)
        for s in steps:
            out[s.prompt_index - 1] += s.piece
        return out

    def steps_batch(self, prompts: Sequence[str], **options) -> list[BatchStep]:
        opts = SamplingOptions(**options)
        rows = self.query("SELECT prompt_index, step, token, piece, finish FROM " + GENERATE_BATCH,
                          (_check_prompts(prompts), *opts.params()))
        return [BatchStep(*r) for r in rows]

    def stream_batch(self, prompts: Sequence[str], **options) -> Iterator[BatchStep]:
        """Like ``steps_batch`` but as they happen (step by step, every prompt in each step);
        closing the iterator early cancels the query."""
        opts = SamplingOptions(**options)
        params = (_check_prompts(prompts), *opts.params())
        for d in self._notices("SELECT count(*) FROM " + GENERATE_BATCH, params):
            yield BatchStep(d["prompt_index"], d["step"], d["token"], d["piece"], d["finish"])

    # -- scoring ---------------------------------------------------------------------------
    def score(self, text: str) -> list[TokenScore]:
        """Every token of ``text`` with its log-probability given the tokens before it (the first
        one after <|endoftext|>) and its rank among all candidates; longer texts than the context
        are scored with a sliding window (SQL score)."""
        rows = self.query('SELECT "position", token, piece, logprob, rank FROM {m}.score(%s)',
                          (_check_text(text, "text"),))
        return [TokenScore(*r) for r in rows]

    def perplexity(self, text: str) -> float:
        """exp(-mean log-probability) of the text's tokens."""
        return self.query("SELECT {m}.perplexity(%s)", (_check_text(text, "text"),))[0][0]

    # -- looking inside -------------------------------------------------------------------
    def trace(self, prompt: str | Sequence[int], keep: str | None = None,
              ablate: Sequence[tuple[int, int]] | None = None) -> "Trace":
        """Run one forward pass over ``prompt`` (a text, or its tokens) keeping every intermediate
        value (see Trace); ``keep`` is how long to keep them, as a PostgreSQL interval ('1 day' by
        default); ``ablate`` lists (layer, head) pairs whose output is zeroed: a trace of the changed model."""
        pairs = [list(p) for p in ablate] if ablate else None
        if pairs is not None and any(len(p) != 2 for p in pairs):
            raise ValueError(f"ablate takes (layer, head) pairs, got {list(ablate)!r}")
        if isinstance(prompt, str):
            what, cast = _check_text(prompt), "text"
        else:
            what, cast = _check_tokens(prompt), "int[]"
        trace_id = self.query("SELECT {m}.trace(%s::" + cast + ", coalesce(%s::interval, '1 day'), %s::int[])",
                              (what, keep, pairs))[0][0]
        return Trace(self, trace_id)

    def get_trace(self, trace_id: int) -> "Trace":
        return Trace(self, trace_id)

    def drop_traces(self, expired_only: bool = False) -> int:
        return self.query("SELECT {m}.drop_traces(%s)", (expired_only,))[0][0]

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Yield the pieces of text as PostgreSQL produces them (one per token)."""
        for step in self.stream_steps(prompt, **options):
            if step.piece:
                yield step.piece

    def stream_steps(self, prompt: str, **options) -> Iterator[Step]:
        """Like ``steps`` but as they happen: the query runs on its own connection and its
        per-token NOTICEs are forwarded here. Closing the iterator early cancels the query."""
        opts = SamplingOptions(**options)
        for d in self._notices("SELECT count(*) FROM " + GENERATE, (_check_text(prompt), *opts.params())):
            yield Step(d["step"], d["token"], d["piece"], d["finish"])

    def _notices(self, template: str, params: Sequence) -> Iterator[dict]:
        """Run the query on its own connection, yielding the JSON detail of each per-token NOTICE
        as it arrives; closing the iterator early cancels the query."""
        events: queue.Queue = queue.Queue()
        conn = connect(self.client.dsn)

        def on_notice(diag) -> None:
            if (diag.message_primary or "").startswith("gpt2sql token") and diag.message_detail:
                events.put(("step", json.loads(diag.message_detail)))

        conn.add_notice_handler(on_notice)
        query = sql.SQL(template).format(m=self._schema)

        def run() -> None:
            try:
                conn.execute(query, params)
                events.put(("done", None))
            except BaseException as exc:  # delivered to the consumer below
                events.put(("error", exc))

        worker = threading.Thread(target=run, name="gpt2sql-generate", daemon=True)
        worker.start()
        finished = False
        try:
            while True:
                kind, payload = events.get()
                if kind == "step":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    finished = True
                    return
        finally:
            if not finished:
                try:
                    conn.cancel_safe()
                except Exception:
                    pass
            worker.join()
            conn.close()


class Trace:
    """One traced forward pass (``Model.trace``): its intermediate values stay in the model's trace
    tables, keyed by ``id``, until ``drop()`` or until they expire. Every method is one SQL query;
    the same queries work in psql (see docs/walkthrough.md)."""

    def __init__(self, model: Model, trace_id: int):
        row = model.query("SELECT prompt, tokens, expires_at, ablate FROM {m}.traces WHERE trace_id = %s", (trace_id,))
        if not row:
            raise LookupError(f"no trace {trace_id} in model {model.name!r} (traces expire; see its traces table)")
        self.model, self.id = model, trace_id
        self.prompt, self.tokens, self.expires_at, ablate = row[0]
        self.ablate: list[tuple[int, int]] = [tuple(p) for p in ablate or []]  # (layer, head) zeroed
        self.pieces: list[str] = [r[0] for r in model.query(
            "SELECT piece FROM {m}.trace_tokens WHERE trace_id = %s ORDER BY position", (trace_id,))]

    def __repr__(self) -> str:
        return f"<Trace {self.id} of {self.model.name}: {self.prompt!r}, {len(self.tokens)} tokens>"

    def stage(self, stage: str, layer: int | None = None) -> np.ndarray:
        """One stored stage as a [T, n] array, e.g. stage('ln_1', 0); stages: the trace_stages table."""
        rows = self.model.query("SELECT value FROM {m}.trace_vectors WHERE trace_id = %s AND stage = %s "
                                "AND layer IS NOT DISTINCT FROM %s ORDER BY position", (self.id, stage, layer))
        if not rows:
            raise ValueError(f"trace {self.id} has no stage {stage!r} at layer {layer}")
        return np.array([r[0] for r in rows])

    def attention(self, layer: int, head: int) -> list[AttentionWeight]:
        rows = self.model.query("SELECT * FROM {m}.attention_pattern(%s::bigint, %s, %s)", (self.id, layer, head))
        return [AttentionWeight(*r) for r in rows]

    def attention_matrix(self, layer: int, head: int) -> np.ndarray:
        """[T, T] attention weights, query position by key position (0 above the diagonal)."""
        m = np.zeros((len(self.tokens), len(self.tokens)))
        for a in self.attention(layer, head):
            m[a.position, a.key_position] = a.weight
        return m

    def top_predictions(self, position: int = -1, k: int = 10) -> list[Prediction]:
        """The k likeliest tokens after ``position`` (negative counts from the end, -1 = the last)."""
        pos = position + len(self.tokens) if position < 0 else position
        rows = self.model.query("SELECT * FROM {m}.top_predictions(%s, %s, %s)", (self.id, pos, k))
        return [Prediction(*r) for r in rows]

    def token_probability(self, token: int | str) -> list[TokenChance]:
        """How likely ``token`` (an id, or text that is exactly one token) is after each position."""
        cast = "int" if isinstance(token, int) else "text"
        rows = self.model.query(f"SELECT * FROM {{m}}.token_probability(%s, %s::{cast})", (self.id, token))
        return [TokenChance(*r) for r in rows]

    def logit_lens(self, k: int = 5, position: int | None = None) -> list[LensPrediction]:
        """The top k tokens of every layer's residual stream, at every position or just one."""
        rows = self.model.query("SELECT * FROM {m}.logit_lens(%s, %s, %s)", (self.id, k, position))
        return [LensPrediction(*r) for r in rows]

    def compare(self, other: "Trace", k: int = 5) -> list[PredictionChange]:
        """Per position and rank, this trace's and ``other``'s top k next tokens (same prompt)."""
        rows = self.model.query("SELECT * FROM {m}.compare_traces(%s, %s, %s)", (self.id, other.id, k))
        return [PredictionChange(*r) for r in rows]

    def compare_residuals(self, other: "Trace") -> list[ResidualChange]:
        """How far ``other``'s residual stream is from this one's after every sub-layer."""
        rows = self.model.query("SELECT * FROM {m}.compare_residuals(%s, %s)", (self.id, other.id))
        return [ResidualChange(*r) for r in rows]

    def drop(self) -> bool:
        return self.model.query("SELECT {m}.drop_trace(%s)", (self.id,))[0][0]

    def _repr_html_(self) -> str:
        """In Jupyter, a trace shows as the explorer's page (gpt2sql explore), inline in a frame."""
        from . import explore

        page = explore.render(explore.collect(self))
        return (f'<iframe title="{html.escape(repr(self))}" srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
                'style="width: 100%; height: 760px; border: 1px solid #ddd"></iframe>')


class Client:
    """A connection to the database holding the models.

    ``Client()`` uses ``$DATABASE_URL`` or else the embedded PostgreSQL; ``Client(dsn)`` any server,
    where dsn is a libpq connection string or URL, an SQLAlchemy URL (``postgresql+psycopg://...``,
    as text or a ``sqlalchemy.engine.URL``) or an SQLAlchemy ``Engine`` (its URL is used).
    """

    def __init__(self, dsn=None):
        self.dsn = resolve_dsn(dsn)
        self.connection: psycopg.Connection = connect(self.dsn)

    def models(self) -> list[str]:
        from .loader.load import list_models

        return [m["name"] for m in list_models(self.connection)]

    def model(self, name: str = "gpt2") -> Model:
        from .loader.load import is_model, needs_upgrade

        if not isinstance(name, str) or not is_model(self.connection, name):
            loaded = ", ".join(self.models()) or "none"
            raise ModelNotFound(f"no model named {name!r} is loaded (loaded: {loaded}); "
                                f"load one with: gpt2sql load SOURCE --model {name}")
        if needs_upgrade(self.connection, name):
            raise ModelNeedsUpgrade(f"model {name!r} was loaded by another version of gpt2sql; re-create its SQL "
                                    f"functions (its weights stay) with: gpt2sql upgrade --model {name}")
        return Model(self, name)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Client", "Model", "ModelNotFound", "ModelNeedsUpgrade", "TokenProb", "Step", "BatchStep", "TokenScore", "SamplingOptions", "DatabaseError", "Trace",
           "AttentionWeight", "Prediction", "TokenChance", "LensPrediction"]
