-- 008: the ledger's link to received_op, checked once per statement instead of once per row.
--
-- 004 made inventory_ledger.op_id a deferred foreign key to received_op. A foreign key is
-- checked row by row: one index probe per ledger row, queued until commit. Two costs came
-- with it, both measured with the ingest benchmark (docs/performance.md):
--   * Each probe runs through a plan PostgreSQL caches per connection. A connection whose
--     first commits ran while received_op was nearly empty cached a sequential scan, and kept
--     it: its COMMIT then scanned all of received_op once per ledger row, growing from 5 ms
--     to over a second per 500-op batch within a minute, until autovacuum happened to
--     ANALYZE the table. A server started on a fresh database hits that every time.
--   * The deferred queue and several hundred separate probes per batch, inside the window
--     where the batch holds its item locks (every other device's batch waits on it).
-- The same rule as statement-level triggers: one anti-join per INSERT over its transition
-- table, planned afresh each time (EXECUTE), so the plan follows the table's real size. The
-- apply inserts a batch's received_op rows before its ledger rows, in the same transaction,
-- so the rule needs no deferral. Deleting or re-keying a received_op row that a ledger row
-- names is refused as before (the runtime role cannot do either; this guards the owner).
-- The error stays foreign_key_violation (23503), the code the foreign key raised.

SET LOCAL search_path = public;

ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_op_id_fkey;

CREATE FUNCTION midway_ledger_op_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    missing uuid;
BEGIN
    IF TG_TABLE_NAME = 'inventory_ledger' THEN
        EXECUTE 'SELECT n.op_id FROM new_rows n WHERE n.op_id IS NOT NULL AND NOT EXISTS '
                '(SELECT 1 FROM public.received_op r WHERE r.op_id = n.op_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'insert or update on table "inventory_ledger" violates the rule "inventory_ledger_op_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (op_id)=(%s) is not present in table "received_op".', missing);
        END IF;
    ELSE
        -- received_op: an op that a ledger row names must keep existing under that op_id.
        EXECUTE 'SELECT o.op_id FROM old_rows o JOIN public.inventory_ledger l ON l.op_id = o.op_id '
                'WHERE NOT EXISTS (SELECT 1 FROM public.received_op r WHERE r.op_id = o.op_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'update or delete on table "received_op" violates the rule "inventory_ledger_op_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (op_id)=(%s) is still referenced from table "inventory_ledger".', missing);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_ledger_op_check() IS
    'AFTER ... FOR EACH STATEMENT: every inventory_ledger.op_id names a received_op row (what the foreign key of 004 checked row by row).';

CREATE TRIGGER inventory_ledger_op_check AFTER INSERT ON inventory_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_ledger_op_check();
CREATE TRIGGER inventory_ledger_op_check_upd AFTER UPDATE ON inventory_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_ledger_op_check();
CREATE TRIGGER received_op_ledger_check_del AFTER DELETE ON received_op
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_ledger_op_check();
CREATE TRIGGER received_op_ledger_check_upd AFTER UPDATE ON received_op
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_ledger_op_check();

COMMENT ON COLUMN inventory_ledger.op_id IS
    'The op that made this movement (a received_op row, checked per statement by midway_ledger_op_check); NULL for movements not from a device (a DBA correction, an import).';

INSERT INTO schema_migration (version, name) VALUES (8, '008_ingest');
