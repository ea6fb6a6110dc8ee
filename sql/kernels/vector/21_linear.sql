-- kernels/vector/21_linear.sql: the vector kernel's products, with pgvector: matmul, lm_head and
-- embedding_rows of the contract (kernels/contract.sql), and the forms of matmul that take or give
-- pgvector vectors, for the fused sub-layers (45_fused.sql).
--
--   y[t][j] = sum over i of x[t][i] * W[i][j] + b[j]
--           = b[j] - sum over chunks c of (W[j, c] <#> x[t, c])
--
-- Each weight row is a pgvector vector of n_embd floats (tables/01_matrices.sql); the input is cut
-- the same way, one vector per (position, chunk), and y is pgvector's inner product of the two (one
-- chunk, except for mlp.c_proj's 4 * n_embd inputs). <#> is the negative inner product (so that an
-- index can sort by it): b - (w <#> x) is one operation for the negation and the bias. pgvector
-- computes in float32: the logits differ from float64 NumPy by ~1e-6 (docs/performance.md).

-- [T * n_pieces] the rows of x [T][n] cut into pgvector vectors of `width` floats, row after row:
-- piece c of row t (from 0) is element t * n / width + c + 1. The products cut their input by
-- config.chunk; attention and kv_append (22_attention.sql) take whole rows. x is read out into one
-- flat array once (a 2-D array cannot be cast to a vector) and every piece is a slice of it, cast.
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

-- [T * n_pieces] vectors v[t] (from 1) each cut into pieces of `width` floats, in order: the output
-- rows of one product as the input of the next, cut by pgvector's subvector without going through a
-- float8 array
CREATE FUNCTION vector_pieces(v vector[], width int)
RETURNS vector[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT ARRAY(SELECT subvector(u.v, 1 + c * width, width)
                   FROM unnest(v) WITH ORDINALITY AS u(v, t)
                  CROSS JOIN LATERAL generate_series(0, vector_dims(u.v) / width - 1) AS c
                  ORDER BY u.t, c);
END;

-- The query that multiplies n positions by a weight matrix, for the call's shape. $1 holds the n
-- positions' chunk vectors (position t's chunks after one another), $2 the weight's name, $3 the bias
-- b and $4 the residual ([n][n_out]). One pass over the weight rows in (row, chunk) order computes,
-- for every position at once, the inner products with its chunks, gathered by an ordered array_agg
-- per position: the rows arrive in the primary key's order, so nothing is sorted, no (t, j) rows
-- are formed, and n positions read each weight row once. For n = 2, one chunk, a bias and no
-- residual, it reads
--   SELECT ARRAY[array_agg(p.y1 ORDER BY p.row), array_agg(p.y2 ORDER BY p.row)] AS y,
--          NULL::vector[] AS yv, NULL::int[] AS best
--     FROM (SELECT q.row, q.b - (q.w <#> $1[1]) AS y1, q.b - (q.w <#> $1[2]) AS y2
--             FROM (SELECT m.row, m.w, $3[m.row + 1]::float8 AS b
--                     FROM matrices AS m WHERE m.name = $2 ORDER BY m.row OFFSET 0) AS q
--            ORDER BY q.row OFFSET 0) AS p
-- With several chunks (mlp.c_proj), y_t sums its row's chunks instead: GROUP BY m.row on rows that
-- arrive grouped. Terms that are absent (no bias, no residual) are left out rather than added as 0,
-- since each is evaluated n times per weight row. With gelu, GELU is applied to p's column, not to
-- the expression: gelu() names its argument four times, and PostgreSQL would compute the inner
-- product four times. OFFSET 0 keeps p and q from being merged into the query above them, which
-- would write their expressions out again. result says what the query gives:
--   'floats'           y [n][n_out] float8
--   'vectors'          yv [n]: each output row as one vector of n_out floats (the next product
--                      takes it as it is; it would be rounded to float32 there anyway)
--   'floats_and_best'  y, and best [n]: the first of each row's highest outputs (the greedy token),
--                      from the array being gathered (array_position of its max)
CREATE FUNCTION product_query(n int, n_chunks int, has_bias boolean, has_residual boolean, gelu boolean,
                              result text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    -- y_t for position %2$s, whose first chunk is $1[%1$s], in the sub-query named %3$s
    ip      text := CASE WHEN n_chunks = 1 THEN '(q.w <#> $1[%1$s])'                -- w . x_t, negated
                         ELSE 'sum(m.w <#> $1[%1$s + m.chunk])' END;
    bias    text := CASE WHEN NOT has_bias THEN '' WHEN n_chunks = 1 THEN 'q.b ' ELSE '$3[m.row + 1] ' END;
    y_t     text := bias || '- ' || ip
                    || CASE WHEN has_residual AND NOT gelu THEN ' + $4[%2$s][%3$s.row + 1]' ELSE '' END;
    outputs text := '';         -- p's columns y1 .. yn
    gathered text := '';        -- one array_agg per position
    bests   text := '';
    value   text;
BEGIN
    FOR t IN 1 .. n LOOP
        outputs := outputs || format(', ' || y_t || ' AS y%2$s',
                                     CASE WHEN n_chunks = 1 THEN t ELSE (t - 1) * n_chunks + 1 END,
                                     t, CASE WHEN n_chunks = 1 THEN 'q' ELSE 'm' END);
        value := format(CASE WHEN gelu THEN 'gelu(p.y%s)' ELSE 'p.y%s' END, t);
        gathered := gathered || CASE WHEN t > 1 THEN ', ' ELSE '' END
                    || format('array_agg(%s ORDER BY p.row)', value)
                    || CASE WHEN result = 'vectors' THEN '::vector' ELSE '' END;
        bests := bests || CASE WHEN t > 1 THEN ', ' ELSE '' END
                 || format('array_position(array_agg(%1$s ORDER BY p.row), max(%1$s)) - 1', value);
    END LOOP;
    RETURN format('SELECT %s AS y, %s AS yv, %s AS best FROM (%s) AS p',
                  CASE WHEN result = 'vectors' THEN 'NULL::float8[]' ELSE 'ARRAY[' || gathered || ']' END,
                  CASE WHEN result = 'vectors' THEN 'ARRAY[' || gathered || ']' ELSE 'NULL::vector[]' END,
                  CASE WHEN result = 'floats_and_best' THEN 'ARRAY[' || bests || ']' ELSE 'NULL::int[]' END,
                  CASE WHEN n_chunks = 1
                       THEN format('SELECT q.row%s FROM (SELECT m.row, m.w%s FROM matrices AS m WHERE m.name = $2 '
                                   'ORDER BY m.row OFFSET 0) AS q ORDER BY q.row OFFSET 0',
                                   outputs, CASE WHEN has_bias THEN ', $3[m.row + 1]::float8 AS b' ELSE '' END)
                       ELSE format('SELECT m.row%s FROM matrices AS m WHERE m.name = $2 '
                                   'GROUP BY m.row ORDER BY m.row OFFSET 0', outputs)
                  END);
END
$$;

-- The product of T input rows, given as chunk vectors xs [T * n_chunks], with a weight: x @ W + b
-- (b NULL: no bias), plus residual [T][n_out] (NULL: none), through GELU if gelu, as product_query
-- writes it for blocks of at most 16 positions (a query's input vectors are an array, and finding
-- its k-th element walks the ones before it). y and yv are NULL if there is no weight of that name.
CREATE FUNCTION vector_product(xs vector[], n_t int, weight text, b real[], residual float8[], gelu boolean,
                               result text, OUT y float8[], OUT yv vector[], OUT best int[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0     -- one ordered pass; workers cannot share ordered aggregates
SET enable_sort = off                       -- the order comes from the primary key's index: sorting the
                                            -- wide weight rows instead would spill them to disk
AS $$
DECLARE
    n_chunks int := cardinality(xs) / n_t;
    per_query int := ceil(n_t / ceil(n_t / 16.0));     -- positions per query, the blocks evened out
    n        int;               -- positions in this block
    part     record;            -- (y, yv, best) of one block
BEGIN
    y := CASE WHEN result <> 'vectors' THEN '{}' END;
    yv := CASE WHEN result = 'vectors' THEN '{}' END;
    best := CASE WHEN result = 'floats_and_best' THEN '{}' END;
    FOR t0 IN 0 .. n_t - 1 BY per_query LOOP
        n := least(per_query, n_t - t0);
        EXECUTE product_query(n => n, n_chunks => n_chunks, has_bias => b IS NOT NULL,
                              has_residual => residual IS NOT NULL, gelu => gelu, result => result)
           INTO part
          USING xs[t0 * n_chunks + 1:(t0 + n) * n_chunks], weight, b, residual[t0 + 1:t0 + n][:];
        y := CASE WHEN t0 = 0 THEN part.y ELSE array_cat(y, part.y) END;
        yv := yv || part.yv;
        best := best || part.best;
    END LOOP;
    IF coalesce(y = '{}', yv[1] IS NULL) THEN   -- no rows: no such weight
        y := NULL;
        yv := NULL;
    END IF;
END
$$;

-- matmul of the contract: x [T][n_in] @ W + b (+ residual) (through GELU) -> [T][n_out]
CREATE FUNCTION matmul(x float8[], weight text, b real[], residual float8[] DEFAULT NULL, gelu boolean DEFAULT false)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN (vector_product(xs => row_vectors(x, (SELECT cf.chunk FROM config AS cf)), n_t => array_length(x, 1),
                       weight => weight, b => b, residual => residual, gelu => gelu, result => 'floats')).y;

-- linear() (model/32_linear.sql) for input rows given as chunk vectors xs [T * n_chunks]: y [T][n_out],
-- or, as_vectors, yv [T] the output rows as vectors. Used by the fused sub-layers (45_fused.sql),
-- where one product's output is the next one's input: it stays a vector in between.
CREATE FUNCTION linear_vectors(xs vector[], n_t int, weight text, bias text, residual float8[] DEFAULT NULL,
                               gelu boolean DEFAULT false, as_vectors boolean DEFAULT false,
                               OUT y float8[], OUT yv vector[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    p record;
BEGIN
    p := vector_product(xs => xs, n_t => n_t, weight => weight,      -- assigned: a SELECT ... FROM would
                        b => (SELECT v.value FROM vectors AS v WHERE v.name = bias),  -- copy the result
                        residual => residual, gelu => gelu,                           -- through a tuplestore
                        result => CASE WHEN as_vectors THEN 'vectors' ELSE 'floats' END);
    y := p.y;
    yv := p.yv;
    IF y IS NULL AND yv IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: no weight named %', weight;
    END IF;
END
$$;

-- logits [T][V] = x @ wte^T (GPT-2's LM head: the token embeddings, tied), and best[t]: the first of
-- position t's highest logits, the token greedy decoding takes, found in the same pass
CREATE FUNCTION lm_head(x float8[], OUT logits float8[], OUT best int[])
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT (g.p).y, (g.p).best                    -- one call, its result a value rather than a row source
      FROM (SELECT vector_product(xs => row_vectors(x, (SELECT cf.chunk FROM config AS cf)), n_t => array_length(x, 1),
                                  weight => 'wte.weight', b => NULL, residual => NULL, gelu => false,
                                  result => 'floats_and_best') AS p OFFSET 0) AS g;
END;

-- v1 || v2 || ... in the aggregate's order (pgvector's ||): a weight row's chunks side by side
-- (embedding_rows below), the heads' outputs of attention side by side (22_attention.sql)
CREATE AGGREGATE concat_vectors(vector) (SFUNC = vector_concat, STYPE = vector);

-- (name, rows[]) -> [n][n_in]: whole rows of a matrix, e.g. the embeddings of some tokens
CREATE FUNCTION embedding_rows(weight text, wanted int[])
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
