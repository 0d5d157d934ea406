-- 002: monthly partitions of IntegrationEvent and UserInteraction, the function that creates
-- them ahead of time, and the retention function that archives and later drops old ones.
--
-- Partitions cover whole UTC months: <table>_yYYYYmMM holds [YYYY-MM-01 00:00 UTC, next
-- month). The name is the contract: retention reads a partition's month from its name and
-- leaves tables of any other name alone. Each table also has a DEFAULT partition,
-- <table>_default, so a row whose month has no partition yet (a device clock far off, a
-- device back after months offline) is stored, never refused; midway_ensure_partitions()
-- later moves such rows into their month's partition.
--
-- The functions run as the schema owner (SECURITY DEFINER), because creating, attaching and
-- detaching partitions needs ownership; the server's maintenance loop calls them as the
-- runtime role (grants in 006). Their search_path and TimeZone are fixed, so a caller's
-- settings can neither redirect them nor shift a month boundary.

SET LOCAL search_path = public;

CREATE TABLE integrationevent_default PARTITION OF integrationevent DEFAULT;
COMMENT ON TABLE integrationevent_default IS
    'Rows whose month has no partition yet; midway_ensure_partitions() moves them out. Rows far in the future point at a device clock error.';
CREATE TABLE userinteraction_default PARTITION OF userinteraction DEFAULT;
COMMENT ON TABLE userinteraction_default IS
    'Rows whose month has no partition yet; midway_ensure_partitions() moves them out. Rows far in the future point at a device clock error.';

-- Archived partitions live here between leaving the live table and being dropped; a DBA
-- exports them to cold storage in the meantime (docs/schema.md, "Retention").
CREATE SCHEMA midway_archive;
COMMENT ON SCHEMA midway_archive IS
    'Partitions detached by midway_apply_retention(), kept until exported to cold storage and past the grace period.';

CREATE TABLE midway_archive.archived_partition (
    archive_id bigserial PRIMARY KEY,
    partition_name text NOT NULL,
    parent_table text NOT NULL,
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    row_count bigint NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    exported_at timestamptz,
    dropped_at timestamptz,
    CHECK (range_from < range_to)
);
COMMENT ON TABLE midway_archive.archived_partition IS
    'Bookkeeping of archived partitions: when each left the live table, when it was exported, when it was dropped. Rows stay after the drop as the record of what was removed.';
-- At most one live archived table per name; a month archived again after its table was
-- dropped (rows for it arrived late) gets a new row, so the history of drops stays.
CREATE UNIQUE INDEX archived_partition_live_idx ON midway_archive.archived_partition (partition_name)
    WHERE dropped_at IS NULL;
COMMENT ON COLUMN midway_archive.archived_partition.row_count IS 'Rows in the archived table; compare with the export before marking it exported.';
COMMENT ON COLUMN midway_archive.archived_partition.exported_at IS
    'Set by midway_archive_mark_exported() once the table is safely in cold storage; NULL keeps it from being dropped (by default).';
COMMENT ON COLUMN midway_archive.archived_partition.dropped_at IS 'When retention dropped the archived table; NULL while it still exists in midway_archive.';

-- Which column each monthly-partitioned table is partitioned on; NULL for anything else.
-- Also the allow-list that keeps the SECURITY DEFINER functions below to these two tables.
CREATE FUNCTION midway_partition_column(parent text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE parent
        WHEN 'integrationevent' THEN 'event_timestamp'
        WHEN 'userinteraction' THEN 'interaction_timestamp'
    END
$$;
COMMENT ON FUNCTION midway_partition_column(text) IS 'Partition column of a monthly-partitioned table; NULL if the table is not one.';

-- Creates parent's partition for the month containing month_start, moving any rows of that
-- month out of the DEFAULT partition first. A plain CREATE TABLE ... PARTITION OF fails when
-- the DEFAULT partition holds rows of the new range, so the partition is built standalone,
-- filled from DEFAULT, then attached. Returns false if it already existed.
CREATE FUNCTION midway_partition_create(parent text, month_start date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    col text := midway_partition_column(parent);
    m date := date_trunc('month', month_start)::date;
    lo timestamptz;
    hi timestamptz;
    part text;
    dflt text := parent || '_default';
    cols text;
BEGIN
    IF col IS NULL OR month_start IS NULL THEN
        RAISE EXCEPTION 'midway_partition_create: % is not a monthly-partitioned table', parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Serializes partition maintenance between servers; re-entrant within one transaction.
    PERFORM pg_advisory_xact_lock(7887878208638579827);

    part := format('%s_y%s', parent, to_char(m, 'YYYY"m"MM'));
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    lo := m::timestamp AT TIME ZONE 'UTC';
    hi := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';

    -- Inserts routed to DEFAULT wait until the rows have moved and the partition is attached.
    EXECUTE format('LOCK TABLE public.%I IN ACCESS EXCLUSIVE MODE', dflt);
    EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING STORAGE INCLUDING COMPRESSION)', part, parent);
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
      FROM pg_attribute
     WHERE attrelid = format('public.%I', parent)::regclass AND attnum > 0 AND NOT attisdropped;
    EXECUTE format('WITH moved AS (DELETE FROM public.%I WHERE %I >= $1 AND %I < $2 RETURNING %s) '
                   'INSERT INTO public.%I (%s) SELECT %s FROM moved',
                   dflt, col, col, cols, part, cols, cols)
        USING lo, hi;
    -- ATTACH adds the parent's indexes, primary key and foreign keys to the new partition.
    EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    EXECUTE format('COMMENT ON TABLE public.%I IS %L', part,
                   format('%s rows of %s (UTC month).', parent, to_char(m, 'YYYY-MM')));
    RETURN true;
END;
$$;
COMMENT ON FUNCTION midway_partition_create(text, date) IS
    'Creates <parent>_yYYYYmMM for the UTC month of month_start, moving that month''s rows out of the DEFAULT partition; false if it existed.';

-- The maintenance entry point: makes sure both tables have partitions for the current UTC
-- month and the next months_ahead months, and for every earlier month that has rows waiting
-- in the DEFAULT partition, so DEFAULT keeps only rows beyond the horizon. Returns how many
-- partitions it created. Cheap when there is nothing to do (a catalog lookup per month and
-- one scan of each normally empty DEFAULT partition).
CREATE FUNCTION midway_ensure_partitions(months_ahead int DEFAULT 3) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    parent text;
    col text;
    first_month date := date_trunc('month', now())::date;
    horizon timestamptz;
    m date;
    created int := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'midway_ensure_partitions: months_ahead must be 0..120, got %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7887878208638579827);
    horizon := (first_month + make_interval(months => months_ahead + 1))::timestamp AT TIME ZONE 'UTC';

    FOREACH parent IN ARRAY ARRAY['integrationevent', 'userinteraction'] LOOP
        col := midway_partition_column(parent);
        FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I)::date FROM public.%I '
                                'WHERE %I < $1 ORDER BY 1', col, parent || '_default', col)
            USING horizon
        LOOP
            IF midway_partition_create(parent, m) THEN
                created := created + 1;
            END IF;
        END LOOP;
        FOR i IN 0 .. months_ahead LOOP
            IF midway_partition_create(parent, (first_month + make_interval(months => i))::date) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$$;
COMMENT ON FUNCTION midway_ensure_partitions(int) IS
    'Creates missing monthly partitions: this UTC month, the next months_ahead, and past months with rows in DEFAULT (moving them). Returns the number created.';

-- Retention, in three steps (docs/schema.md, "Retention"):
--  1. archive: a partition whose whole month is older than the table's keep interval is
--     detached and moved to schema midway_archive (IntegrationEvent 1 year, UserInteraction
--     2 years by default);
--  2. export (outside the database): a DBA or cron job dumps the archived table to cold
--     storage and calls midway_archive_mark_exported();
--  3. drop: an archived table exported more than archive_grace ago is dropped. With
--     require_export = false, deployments without cold storage drop archive_grace after
--     archiving instead.
-- Returns one row per action. The live tables only lose whole months, never single rows.
CREATE FUNCTION midway_apply_retention(
    integration_keep interval DEFAULT '1 year',
    interaction_keep interval DEFAULT '2 years',
    archive_grace interval DEFAULT '30 days',
    require_export boolean DEFAULT true)
RETURNS TABLE (action text, table_name text, row_count bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    parent text;
    keep interval;
    part record;
    lo timestamptz;
    hi timestamptz;
    n bigint;
    cols text;
    a record;
BEGIN
    IF integration_keep IS NULL OR interaction_keep IS NULL OR archive_grace IS NULL
       OR require_export IS NULL
       OR integration_keep < interval '1 month' OR interaction_keep < interval '1 month'
       OR archive_grace < interval '0' THEN
        RAISE EXCEPTION 'midway_apply_retention: keep intervals must be at least 1 month and the grace not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7887878208638579827);

    FOREACH parent IN ARRAY ARRAY['integrationevent', 'userinteraction'] LOOP
        keep := CASE parent WHEN 'integrationevent' THEN integration_keep ELSE interaction_keep END;
        FOR part IN
            SELECT c.relname::text AS name,
                   make_date(substring(c.relname FROM '_y([0-9]+)m[0-9]{2}$')::int,
                             substring(c.relname FROM 'm([0-9]{2})$')::int, 1) AS month
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = format('public.%I', parent)::regclass
               AND c.relname ~ ('^' || parent || '_y[0-9]{4,}m[0-9]{2}$')
             ORDER BY 2
        LOOP
            lo := part.month::timestamp AT TIME ZONE 'UTC';
            hi := (part.month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
            CONTINUE WHEN hi > now() - keep;

            EXECUTE format('SELECT count(*) FROM public.%I', part.name) INTO n;
            EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I', parent, part.name);
            IF to_regclass(format('midway_archive.%I', part.name)) IS NOT NULL THEN
                -- The month was archived before and rows for it arrived again (a device
                -- back after a long time): add them to the archived table, export again.
                SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
                  FROM pg_attribute
                 WHERE attrelid = format('midway_archive.%I', part.name)::regclass
                   AND attnum > 0 AND NOT attisdropped;
                EXECUTE format('INSERT INTO midway_archive.%I (%s) SELECT %s FROM public.%I',
                               part.name, cols, cols, part.name);
                EXECUTE format('DROP TABLE public.%I', part.name);
                UPDATE midway_archive.archived_partition ap
                   SET row_count = ap.row_count + n, archived_at = now(), exported_at = NULL
                 WHERE ap.partition_name = part.name AND ap.dropped_at IS NULL;
            ELSE
                EXECUTE format('ALTER TABLE public.%I SET SCHEMA midway_archive', part.name);
                INSERT INTO midway_archive.archived_partition
                       (partition_name, parent_table, range_from, range_to, row_count)
                VALUES (part.name, parent, lo, hi, n);
            END IF;
            action := 'archived';
            table_name := 'midway_archive.' || part.name;
            row_count := n;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    FOR a IN
        SELECT ap.archive_id, ap.partition_name, ap.row_count
          FROM midway_archive.archived_partition ap
         WHERE ap.dropped_at IS NULL
           AND CASE WHEN require_export
                    THEN ap.exported_at IS NOT NULL AND ap.exported_at <= now() - archive_grace
                    ELSE ap.archived_at <= now() - archive_grace END
         ORDER BY ap.range_from
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS midway_archive.%I', a.partition_name);
        UPDATE midway_archive.archived_partition ap SET dropped_at = now()
         WHERE ap.archive_id = a.archive_id;
        action := 'dropped';
        table_name := 'midway_archive.' || a.partition_name;
        row_count := a.row_count;
        RETURN NEXT;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION midway_apply_retention(interval, interval, interval, boolean) IS
    'Archives partitions older than the keep intervals into midway_archive and drops archived ones exported more than archive_grace ago. One result row per action.';

-- Step 2 of retention: the export job calls this after the archived table is safely stored.
CREATE FUNCTION midway_archive_mark_exported(part_name text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    UPDATE midway_archive.archived_partition SET exported_at = now()
     WHERE partition_name = part_name AND dropped_at IS NULL
    RETURNING true
$$;
COMMENT ON FUNCTION midway_archive_mark_exported(text) IS
    'Records that midway_archive.<partition> is in cold storage, so retention may drop it after the grace period. NULL if no such archived table.';

-- SECURITY DEFINER functions are not for everyone: 006 grants the maintenance ones to the
-- runtime role; partition creation and export marking stay with the owner.
REVOKE ALL ON FUNCTION midway_partition_create(text, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION midway_ensure_partitions(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION midway_apply_retention(interval, interval, interval, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION midway_archive_mark_exported(text) FROM PUBLIC;

-- The current month and the next three exist from the start.
DO $$ BEGIN PERFORM midway_ensure_partitions(3); END $$;

INSERT INTO schema_migration (version, name) VALUES (2, '002_partitions');
