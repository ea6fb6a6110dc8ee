-- settings.sql: run last at load time. JIT is off in every PL/pgSQL function of the model (the
-- functions that run its queries), so in everything they call: PostgreSQL's JIT compiles each
-- query's expressions on every call, and on these queries, with their long written-out sums, that
-- costs far more than it saves (docs/performance.md). A server without JIT is not affected.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure
                FROM pg_proc AS p
                JOIN pg_language AS l ON l.oid = p.prolang
               WHERE p.pronamespace = current_schema()::regnamespace AND l.lanname = 'plpgsql' AND p.prokind = 'f'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET jit = off', fn);
    END LOOP;
END
$$;
