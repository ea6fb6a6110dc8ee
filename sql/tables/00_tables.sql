-- tables/00_tables.sql: the tables one model's schema holds.
-- Run by the loader with search_path set to the model's schema, inside the load's transaction.

-- one row: the model's hyper-parameters, read from config.json
CREATE TABLE config (
    n_layer            int     NOT NULL,  -- transformer blocks
    n_head             int     NOT NULL,  -- attention heads per block
    n_embd             int     NOT NULL,  -- width of the residual stream (C)
    n_positions        int     NOT NULL,  -- context length
    vocab_size         int     NOT NULL,  -- 50257
    layer_norm_epsilon float8  NOT NULL,
    kernel             text    NOT NULL CHECK (kernel IN ('sql', 'vector')),  -- the kernel: kernels/contract.sql
    chunk              int     NOT NULL,  -- weights per row of the matrices table (divides n_embd)
    n_params           bigint  NOT NULL,
    source             text    NOT NULL,
    loaded_at          timestamptz NOT NULL DEFAULT now(),
    gpt2sql_version    text    NOT NULL,
    sql_version        text               -- digest of the SQL that made the model's functions (loader/load.py:
                                          -- sql_version); NULL: loaded by gpt2sql 0.1. Another one: gpt2sql upgrade
);

-- (token) -> piece: the vocabulary; piece is in GPT-2's byte alphabet, bytes the raw UTF-8 bytes
CREATE TABLE vocab (
    token int PRIMARY KEY,
    piece text NOT NULL UNIQUE,
    bytes bytea NOT NULL
);

-- (rank) -> (left, right): the BPE merges, lowest rank merges first
CREATE TABLE merges (
    rank         int PRIMARY KEY,
    left_symbol  text NOT NULL,
    right_symbol text NOT NULL,
    UNIQUE (left_symbol, right_symbol)
);

-- (byte) -> symbol: GPT-2's reversible map from the 256 byte values to printable characters
CREATE TABLE byte_symbols (
    byte   int PRIMARY KEY CHECK (byte BETWEEN 0 AND 255),
    symbol text NOT NULL UNIQUE
);

-- (lo..hi) -> class: Unicode letters (L), numbers (N) and White_Space (W) as code-point ranges,
-- written by the loader from Python's unicodedata so tokenizing never depends on the server's locale
CREATE TABLE char_classes (
    lo    int PRIMARY KEY,
    hi    int NOT NULL,
    class "char" NOT NULL CHECK (class IN ('L', 'N', 'W'))
);

-- (name) -> shape: every tensor of the checkpoint and where it is stored
CREATE TABLE tensors (
    name   text PRIMARY KEY,  -- Hugging Face name without the "transformer." prefix
    layer  int,               -- block index, NULL for wte/wpe/ln_f
    shape  int[] NOT NULL,    -- as in the checkpoint (Conv1D weights are [in, out])
    stored text NOT NULL CHECK (stored IN ('vectors', 'matrices')),
    partition text            -- for matrices: the partition of the matrices table holding it
);

-- (name) -> value[]: 1-D tensors (biases, layer-norm gains and shifts)
CREATE TABLE vectors (
    name  text PRIMARY KEY,
    value real[] NOT NULL
);
