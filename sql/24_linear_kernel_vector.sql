-- 24_linear_kernel_vector.sql: the vector kernel, product and matrix_rows with pgvector.
-- Created for models loaded with --kernel vector (the default where the extension is available);
-- 23_linear_kernel_sql.sql has the same functions in plain SQL.
--
-- product(x [T][n_in], weight, b) -> y[t][j] = sum over i of x[t][i] * W[i][j] + b[j]
--   Each weight row is a pgvector vector of n_embd floats (01_matrices.sql); the input is cut the
--   same way, one vector per (position, chunk). Then y is pgvector's inner product of the two
--   rows, summed over the chunks (one chunk, except for mlp.c_proj's 4 * n_embd inputs):
--       y[t][j] = sum over c of  -(W[j, c] <#> x[t, c])  + b[j]
--   (<#> is the negative inner product, so that an index can sort by it; we only negate it.)
--   pgvector computes in float32: the logits differ from float64 NumPy by ~1e-6 (README, Kernels).

-- [T * n_pieces] the rows of x [T][n] cut into pgvector vectors of `width` floats, row after row:
-- piece c of row t (from 0) is element t * n / width + c + 1. The products cut their input by
-- config.chunk, attention (32_attention_kernel_vector.sql) by head. x is read out into one flat
-- array once (a 2-D array cannot be cast to a vector) and every piece is a slice of it, cast
-- (8 rows of 3,072 cut by 768: 1.1 -> 1.0 ms; 1 row of 768 by head: 0.075 -> 0.041 ms, against a
-- sub-query unnesting each piece of x).
CREATE FUNCTION row_vectors(x float8[], width int)
RETURNS vector[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT ARRAY(SELECT f.flat[k * width + 1:(k + 1) * width]::vector
                   FROM generate_series(0, cardinality(x) / width - 1) AS k
                  ORDER BY k)
      FROM (SELECT ARRAY(SELECT unnest(x)) AS flat) AS f;     -- [T * n] x's values in storage order
END;

-- [T * n_pieces] vectors v[t] (from 1) each cut into pieces of `width` floats, in order, from its
-- float `first` on, len floats of it (NULL: to its end): what a product gathered as vectors
-- (as_vectors below) becomes as the input of the next product, or qkv's queries, keys or values per
-- head, cut by pgvector's subvector instead of going through a float8 array (8 rows of 3,072:
-- 0.06 ms against 1.1 ms to read a [8][3072] array out and cut it)
CREATE FUNCTION vector_pieces(v vector[], width int, first int DEFAULT 1, len int DEFAULT NULL)
RETURNS vector[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT ARRAY(SELECT subvector(u.v, first + c * width, width)
                   FROM unnest(v) WITH ORDINALITY AS u(v, t)
                  CROSS JOIN LATERAL generate_series(0, coalesce(len, vector_dims(u.v) - first + 1) / width - 1) AS c
                  ORDER BY u.t, c);
END;

-- x @ W + b (b NULL: no bias), plus residual[t][j] (NULL: none), through GELU if gelu, for the T
-- input rows given as xs [T * n_chunks], row t's chunks of config.chunk floats after one another:
--   y [T][n_out]        the outputs as float8 (as_vectors false), or
--   yv [T]              each output row as one vector of n_out floats (as_vectors: the next product
--                       takes them as they are; they would be rounded to float32 there anyway)
--   best [T]            with_best: the first of row t's highest outputs (lm_head's greedy token)
-- One pass over the weight rows in (row, chunk) order computes, for every position t at once, the
-- inner products with t's input chunks, gathered by an ordered array_agg per position (the rows
-- arrive in the primary key's order, so nothing is sorted). No (t, j) rows are formed, sorted or
-- grouped: a batch of positions reads each weight row once, and the arrays come out whole. The
-- query is written for the call, for the n positions of a block:
--   q: (row) -> w, b[row]      each weight row with its bias, looked up once per row, not per position
--   p: (row) -> y1 .. yn       y_t = b[row] - (w <#> x_t) (+ residual[t][row]), i.e. w . x_t + b[row];
--                              for mlp.c_proj (4C inputs, 4 chunks a row) p sums each row's chunks
--                              (GROUP BY row, on rows that arrive grouped) before adding b and residual
--   ARRAY[array_agg(y_1 ORDER BY row), ...], or gelu(y_t), or each array_agg cast to a vector
-- Terms that are NULL (no bias, no residual) are left out of the query rather than added as 0:
-- every term is evaluated T times per weight row (c_attn for 8 positions: 5.3 -> 3.9 ms).
-- GELU is applied to p's column, not to the expression: gelu() names its argument four times,
-- and an expression argument made PostgreSQL compute the inner product four times or call gelu()
-- as a function for every output (c_fc for 8 positions: 20 -> 8 ms). OFFSET 0 keeps p and q from
-- being merged into the query above them, which would write their expressions out again.
-- best is found from the array being gathered (array_position of its max; the same array_agg,
-- computed once). y and yv are NULL if there is no weight of that name.
CREATE FUNCTION vector_product(xs vector[], n_t int, weight text, b real[], residual float8[], gelu boolean,
                               with_best boolean, as_vectors boolean,
                               OUT y float8[], OUT best int[], OUT yv vector[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0     -- one ordered pass; workers cannot share ordered aggregates
                                            -- (and two halves of the rows in parallel were no faster
                                            -- on our 2 cores)
SET enable_sort = off                       -- the order comes from the primary key's index: sorting the
                                            -- wide weight rows instead spilled them to disk
AS $$
DECLARE
    n_chunks int := cardinality(xs) / n_t;
    part     float8[];          -- [n][n_out] the outputs of one block of positions
    part_v   vector[];          -- [n] or as vectors
    top      int[];             -- [n] their best, if with_best
    block    int;               -- positions per query, one array_agg each: a query's input vectors are
                                -- an array, and finding its k-th element walks the ones before it, so
                                -- at most 16 (34 positions: 3 queries of 12, 10-20% faster than 5 of 8)
    n        int;               -- positions in this block
    p        text;              -- the query p above
    -- y_t from the negative inner product (sum) %1$s for position %2$s: b - %1$s (one operation for
    -- the negation and the bias, the same number as -%1$s + b), + residual, where given
    finish   text := CASE WHEN b IS NULL THEN '-%1$s' ELSE '%3$s - %1$s' END
                            || CASE WHEN residual IS NULL OR gelu THEN '' ELSE ' + $4[%2$s][%4$s.row + 1]' END
                            || ' AS y%5$s';
    outer_v  text := CASE WHEN gelu THEN 'gelu(p.y%s)' ELSE 'p.y%s' END;
    gather   text := CASE WHEN as_vectors THEN 'array_agg(%s ORDER BY p.row)::vector' ELSE 'array_agg(%s ORDER BY p.row)' END;
    outputs  text;              -- ARRAY[gather(y_1), ...]
BEGIN
    block := ceil(n_t / ceil(n_t / 16.0));
    y := CASE WHEN NOT as_vectors THEN '{}' END;
    yv := CASE WHEN as_vectors THEN '{}' END;
    best := CASE WHEN with_best THEN '{}' END;
    FOR t0 IN 0 .. n_t - 1 BY block LOOP
        n := least(block, n_t - t0);
        IF n_chunks = 1 THEN    -- (row) -> y_t: one inner product per weight row and position
            p := format('SELECT q.row, %s FROM (SELECT m.row, m.w%s FROM matrices AS m WHERE m.name = $2 '
                        'ORDER BY m.row OFFSET 0) AS q ORDER BY q.row OFFSET 0',
                        (SELECT string_agg(format(finish, format('(q.w <#> $1[%s])', t), t0 + t, 'q.b', 'q', t),
                                           ', ' ORDER BY t)
                           FROM generate_series(1, n) AS t),
                        CASE WHEN b IS NULL THEN '' ELSE ', $3[m.row + 1]::float8 AS b' END);
        ELSE                    -- (row) -> y_t: the sum of the row's chunks' inner products
            p := format('SELECT m.row, %s FROM matrices AS m WHERE m.name = $2 GROUP BY m.row ORDER BY m.row OFFSET 0',
                        (SELECT string_agg(format(finish, format('sum(m.w <#> $1[%s + m.chunk])', (t - 1) * n_chunks + 1),
                                                  t0 + t, '$3[m.row + 1]', 'm', t), ', ' ORDER BY t)
                           FROM generate_series(1, n) AS t));
        END IF;
        outputs := (SELECT 'ARRAY[' || string_agg(format(gather, format(outer_v, t)), ', ' ORDER BY t) || ']'
                      FROM generate_series(1, n) AS t);
        EXECUTE format('SELECT %s, %s, %s FROM (%s) AS p',
                       CASE WHEN as_vectors THEN 'NULL::float8[]' ELSE outputs END,
                       CASE WHEN as_vectors THEN outputs ELSE 'NULL::vector[]' END,
                       CASE WHEN with_best
                            THEN (SELECT 'ARRAY[' || string_agg(format('array_position(array_agg(%1$s ORDER BY p.row), max(%1$s)) - 1',
                                                                       format(outer_v, t)), ', ' ORDER BY t) || ']'
                                    FROM generate_series(1, n) AS t)
                            ELSE 'NULL::int[]' END,
                       p)
           INTO part, part_v, top USING xs[t0 * n_chunks + 1:(t0 + n) * n_chunks], weight, b, residual;
        IF as_vectors THEN
            yv := yv || part_v;
        ELSE
            y := CASE WHEN t0 = 0 THEN part ELSE array_cat(y, part) END;
        END IF;
        best := best || top;
    END LOOP;
    IF (NOT as_vectors AND y = '{}') OR (as_vectors AND yv[1] IS NULL) THEN   -- no rows: no such weight
        y := NULL;
        yv := NULL;
    END IF;
END
$$;

-- the kernel's product (21_linear.sql): x [T][n_in] @ W + b (+ residual) (through GELU) -> [T][n_out]
CREATE FUNCTION product(x float8[], weight text, b real[], residual float8[], gelu boolean)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (vector_product(row_vectors(x, (SELECT cf.chunk FROM config AS cf)), array_length(x, 1),
                       weight, b, residual, gelu, false, false)).y;

-- linear() (21_linear.sql) for input rows given as chunk vectors xs [T * n_chunks]: y [T][n_out],
-- or, as_vectors, yv [T] the output rows as vectors. Used inside the vector kernel's mha and mlp,
-- where one product's output is the next one's input: it stays a vector in between.
CREATE FUNCTION linear_vectors(xs vector[], n_t int, weight text, bias text, residual float8[] DEFAULT NULL,
                               gelu boolean DEFAULT false, as_vectors boolean DEFAULT false,
                               OUT y float8[], OUT yv vector[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    b real[] := (SELECT v.value FROM vectors AS v WHERE v.name = bias);  -- [n_out], or NULL for none
    p record;
BEGIN
    p := vector_product(xs, n_t, weight, b, residual, gelu, false, as_vectors);  -- assigned: not through a
    y := p.y;                                                                    -- tuplestore, as
    yv := p.yv;                                                                  -- SELECT ... FROM would
    IF y IS NULL AND yv IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: no weight named %', weight;
    END IF;
END
$$;

-- logits [T][V] = x @ wte^T (GPT-2's LM head: the token embeddings, tied), and best[t]: the first of
-- position t's highest logits, the token greedy decoding takes, found in the same pass instead of
-- unnesting the 50,257 logits again afterwards (~7 ms per position)
CREATE FUNCTION lm_head(x float8[], OUT logits float8[], OUT best int[])
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (g.p).y, (g.p).best                    -- one call, its result a value rather than a row source
      FROM (SELECT vector_product(row_vectors(x, (SELECT cf.chunk FROM config AS cf)), array_length(x, 1),
                                  'wte.weight', NULL, NULL, false, true, false) AS p OFFSET 0) AS g;
END;

-- v1 || v2 || ... in the aggregate's order (pgvector's ||): a weight row's chunks side by side
-- (matrix_rows below), the heads' outputs of attention side by side (32_attention_kernel_vector.sql).
-- Joining n_head vectors of D floats this way takes a third of the time of unnesting their C values
-- and gathering them again in (head, dim) order.
CREATE AGGREGATE concat_vectors(vector) (SFUNC = vector_concat, STYPE = vector);

-- (name, rows[]) -> [n][n_in]: whole rows of a matrix, e.g. the embeddings of some tokens
CREATE FUNCTION matrix_rows(weight text, wanted int[])
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT array_agg(r.v ORDER BY r.ord)
      FROM (SELECT q.ord, (concat_vectors(m.w ORDER BY m.chunk))::real[]::float8[] AS v    -- (ord) -> the row
              FROM unnest(wanted) WITH ORDINALITY AS q(row, ord)
              JOIN matrices AS m ON m.name = weight AND m.row = q.row
             GROUP BY q.ord) AS r;
END;
