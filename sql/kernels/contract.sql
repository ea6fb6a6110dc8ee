-- kernels/contract.sql: what a kernel provides. The model (model/, generate/, inspect/) is written
-- once, over these primitives; a kernel folder (kernels/sql/, kernels/vector/) defines each of them,
-- in files of the same names. The loader runs this file last and refuses a kernel that lacks one.
--
--   matmul(x float8[], weight text, b real[], residual float8[] DEFAULT NULL, gelu boolean DEFAULT false)
--     -> float8[] [T][n_out]: y = x @ W + b for x [T][n_in] and the matrix named weight (b NULL: no
--     bias); plus residual [T][n_out] when given; gelu(y) when gelu. NULL if there is no such weight.
--     (model/32_linear.sql's linear() looks the bias up by name and calls it.)
--   lm_head(x float8[], OUT logits float8[], OUT best int[])
--     logits [T][V] = x @ wte^T, the tied LM head, and best [T]: the first of each row's highest
--     logits, the token greedy decoding takes.
--   embedding_rows(weight text, wanted int[]) -> float8[] [n][C]
--     whole rows of a matrix: wte's rows of some tokens, wpe's of some positions.
--   kv: the type of one layer's KV cache of one sequence (the keys and values of every position
--     seen so far); NULL is the empty cache.
--   kv_append(past kv, k float8[], v float8[]) -> kv
--     the cache extended by the keys and values [T][C] of T new positions.
--   kv_positions(cache kv) -> int: the positions the cache holds (0 for NULL).
--   attention(q float8[], cache kv) -> float8[] [T][C]
--     causal multi-head attention of T queries, the last T of the cache's S positions:
--     per head h, softmax(q_h k_h^T / sqrt(D) + causal mask) v_h, the heads side by side.
--
-- A kernel may also replace a shared function by a fused one of the same name and signature, where
-- measurement says it pays (docs/performance.md), in its 45_fused.sql; tests/test_kernels.py checks
-- each against the composition trace() shows. The functions that may be replaced:
--   mha(x, layer, lengths, past, residual) -> (y, present)   model/33_attention.sql
--   mlp(x, layer, residual) -> y                              model/34_mlp.sql
DO $$
DECLARE
    kernel text := (SELECT cf.kernel FROM config AS cf);
    wanted text[] := ARRAY[
        'matmul(float8[], text, real[], float8[], boolean) -> double precision[]',
        'lm_head(float8[]) -> record',
        'embedding_rows(text, int[]) -> double precision[]',
        'kv_append(kv, float8[], float8[]) -> kv',
        'kv_positions(kv) -> integer',
        'attention(float8[], kv) -> double precision[]'];
    primitive text;
    fn regprocedure;
BEGIN
    IF to_regtype('kv') IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: the % kernel does not define the type kv (kernels/contract.sql)', kernel;
    END IF;
    FOREACH primitive IN ARRAY wanted LOOP
        fn := to_regprocedure(split_part(primitive, ' -> ', 1));
        IF fn IS NULL OR pg_get_function_result(fn) <> split_part(primitive, ' -> ', 2) THEN
            RAISE EXCEPTION 'gpt2sql: the % kernel does not provide %, as kernels/contract.sql declares it', kernel, primitive;
        END IF;
    END LOOP;
END
$$;
