-- 010: a bound on the partitions one call of midway_ensure_partitions() creates.
--
-- The function of 002 creates, in one transaction, a partition for every earlier month that
-- has rows waiting in the DEFAULT partition. Each creation locks DEFAULT ACCESS EXCLUSIVE
-- until the transaction ends (every insert routed to DEFAULT waits), scans DEFAULT to move
-- its month out and again to ATTACH, and adds a table with four indexes to the catalog that
-- every query without a time bound on the parent then plans over. One push of 5,000
-- event.record ops dated in 5,000 distinct months (op times were not bounded then; the server
-- now rejects them, reconcile.h "bad_time") made the next maintenance run create 5,000
-- partitions in one transaction. Rows in DEFAULT can still come from anywhere a row can
-- (a DBA's import, an older server, wider max-op-age settings), so the bound lives here.
--
-- midway_ensure_partitions(months_ahead, max_create) creates at most max_create partitions:
-- first the current UTC month and the next months_ahead (both tables, month by month: the
-- months live inserts land in), then earlier months with rows in DEFAULT, newest first (the
-- months queries read; the oldest are the next candidates for retention anyway). What is
-- left waits in DEFAULT, where it is stored and readable, for the next call. The function of
-- 002 keeps its signature and now calls this one with max_create 2 * (months_ahead + 1) + 24
-- (every month ahead, and 24 more), so a DBA's call is bounded too; repeating it drains the
-- rest.

SET LOCAL search_path = public;

CREATE FUNCTION midway_ensure_partitions(months_ahead int, max_create int) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    parent text;
    first_month date := date_trunc('month', now())::date;
    horizon timestamptz;
    w record;
    created int := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'midway_ensure_partitions: months_ahead must be 0..120, got %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_create IS NULL OR max_create < 1 OR max_create > 1000 THEN
        RAISE EXCEPTION 'midway_ensure_partitions: max_create must be 1..1000, got %', max_create
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7887878208638579827);
    horizon := (first_month + make_interval(months => months_ahead + 1))::timestamp AT TIME ZONE 'UTC';

    FOR i IN 0 .. months_ahead LOOP
        FOREACH parent IN ARRAY ARRAY['integrationevent', 'userinteraction'] LOOP
            IF created >= max_create THEN
                RETURN created;
            END IF;
            IF midway_partition_create(parent, (first_month + make_interval(months => i))::date) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;

    -- Every month from first_month to the horizon has its partitions now, so what DEFAULT
    -- holds below the horizon is in earlier months.
    FOR w IN
        SELECT t.parent, t.month FROM (
            SELECT DISTINCT 'integrationevent' AS parent,
                   date_trunc('month', d.event_timestamp)::date AS month
              FROM public.integrationevent_default d WHERE d.event_timestamp < horizon
            UNION ALL
            SELECT DISTINCT 'userinteraction',
                   date_trunc('month', d.interaction_timestamp)::date
              FROM public.userinteraction_default d WHERE d.interaction_timestamp < horizon) t
         ORDER BY t.month DESC, t.parent
         LIMIT max_create - created
    LOOP
        IF midway_partition_create(w.parent, w.month) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
COMMENT ON FUNCTION midway_ensure_partitions(int, int) IS
    'Creates at most max_create missing monthly partitions: this UTC month and the next months_ahead first, then past months with rows in DEFAULT, newest first (moving them). Returns the number created.';

CREATE OR REPLACE FUNCTION midway_ensure_partitions(months_ahead int DEFAULT 3) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'midway_ensure_partitions: months_ahead must be 0..120, got %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN midway_ensure_partitions(months_ahead, 2 * (months_ahead + 1) + 24);
END;
$$;
COMMENT ON FUNCTION midway_ensure_partitions(int) IS
    'midway_ensure_partitions(months_ahead, 2 * (months_ahead + 1) + 24): this UTC month and the next months_ahead, then past months with rows in DEFAULT, newest first, at most that many in all; call again for more. Returns the number created.';

REVOKE ALL ON FUNCTION midway_ensure_partitions(int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION midway_ensure_partitions(int, int) TO midway_runtime;

INSERT INTO schema_migration (version, name) VALUES (10, '010_partition_cap');
