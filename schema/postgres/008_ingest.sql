-- 008: the references of the two tables every push writes a row per op into, checked once per
-- statement instead of once per row: inventory_ledger.op_id -> received_op and
-- received_op.device_id -> device.
--
-- 004 made both foreign keys. A foreign key is checked row by row: one index probe per row
-- (for the ledger's, queued until commit). Costs that came with them, measured with the ingest
-- benchmark (docs/performance.md):
--   * Each probe runs through a plan PostgreSQL caches per connection. A connection whose
--     first commits ran while received_op was nearly empty cached a sequential scan, and kept
--     it: its COMMIT then scanned all of received_op once per ledger row, growing from 5 ms
--     to over a second per 500-op batch within a minute, until autovacuum happened to
--     ANALYZE the table. A server started on a fresh database hits that every time.
--   * Some 800 separate probes per 500-op batch (one per received_op row for its device, one
--     per ledger row for its op), inside the window where the batch holds its item locks and
--     every other device's batch that touches one of those items waits: 3 to 6 ms of a
--     batch's 30. Every row of a push names the same device, the one whose row the batch
--     locked first; one probe per statement says the same.
-- The same rule as statement-level triggers: one anti-join per INSERT over its transition
-- table, planned afresh each time (EXECUTE), so the plan follows the table's real size. The
-- apply inserts a batch's received_op rows before its ledger rows, in the same transaction,
-- so the rule needs no deferral. Deleting or re-keying a received_op row that a ledger row
-- names is refused as before (the runtime role cannot do either; this guards the owner).
-- The error stays foreign_key_violation (23503), the code the foreign keys raised. Devices are
-- revoked, never deleted; deleting or renaming one that has received ops is refused as before.

SET LOCAL search_path = public;

ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_op_id_fkey;
ALTER TABLE received_op DROP CONSTRAINT received_op_device_id_fkey;

-- One function for the seven triggers: which check runs depends on the table it fires on.
CREATE FUNCTION midway_reference_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    missing text;
BEGIN
    IF TG_TABLE_NAME = 'inventory_ledger' THEN
        EXECUTE 'SELECT n.op_id::text FROM new_rows n WHERE n.op_id IS NOT NULL AND NOT EXISTS '
                '(SELECT 1 FROM public.received_op r WHERE r.op_id = n.op_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'insert or update on table "inventory_ledger" violates the rule "inventory_ledger_op_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (op_id)=(%s) is not present in table "received_op".', missing);
        END IF;
    ELSIF TG_TABLE_NAME = 'received_op' AND TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE 'SELECT d.device_id FROM (SELECT DISTINCT device_id FROM new_rows) d WHERE NOT EXISTS '
                '(SELECT 1 FROM public.device x WHERE x.device_id = d.device_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'insert or update on table "received_op" violates the rule "received_op_device_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (device_id)=(%s) is not present in table "device".', missing);
        END IF;
    END IF;
    IF TG_TABLE_NAME = 'received_op' AND TG_OP IN ('UPDATE', 'DELETE') THEN
        -- An op that a ledger row names must keep existing under that op_id.
        EXECUTE 'SELECT o.op_id::text FROM old_rows o JOIN public.inventory_ledger l ON l.op_id = o.op_id '
                'WHERE NOT EXISTS (SELECT 1 FROM public.received_op r WHERE r.op_id = o.op_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'update or delete on table "received_op" violates the rule "inventory_ledger_op_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (op_id)=(%s) is still referenced from table "inventory_ledger".', missing);
        END IF;
    ELSIF TG_TABLE_NAME = 'device' AND TG_LEVEL = 'ROW' THEN
        IF EXISTS (SELECT 1 FROM public.received_op r WHERE r.device_id = OLD.device_id) THEN
            RAISE EXCEPTION 'update or delete on table "device" violates the rule "received_op_device_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (device_id)=(%s) is still referenced from table "received_op".', OLD.device_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'device' THEN
        EXECUTE 'SELECT o.device_id FROM old_rows o WHERE EXISTS (SELECT 1 FROM public.received_op r '
                'WHERE r.device_id = o.device_id) AND NOT EXISTS (SELECT 1 FROM public.device d '
                'WHERE d.device_id = o.device_id) LIMIT 1'
            INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'update or delete on table "device" violates the rule "received_op_device_id_check"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (device_id)=(%s) is still referenced from table "received_op".', missing);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_reference_check() IS
    'AFTER ... FOR EACH STATEMENT: inventory_ledger.op_id names a received_op row and received_op.device_id a device (what the foreign keys of 004 checked row by row).';

-- Transition tables allow one event per trigger, hence one trigger per event.
CREATE TRIGGER inventory_ledger_ref_ins AFTER INSERT ON inventory_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER inventory_ledger_ref_upd AFTER UPDATE ON inventory_ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER received_op_ref_ins AFTER INSERT ON received_op
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER received_op_ref_upd AFTER UPDATE ON received_op
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER received_op_ref_del AFTER DELETE ON received_op
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
-- Row-level, so that the frequent updates of last_seen_at and revoked_at cost only the WHEN
-- test (a trigger with a transition table cannot have a column list).
CREATE TRIGGER device_ref_upd AFTER UPDATE OF device_id ON device
    FOR EACH ROW WHEN (OLD.device_id IS DISTINCT FROM NEW.device_id)
    EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER device_ref_del AFTER DELETE ON device
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();

-- Inventory rows are the only ones rewritten all the time: a busy item once per batch that
-- touches it. Its indexes are on keys that never change, so each update is HOT (no index
-- entry), but every reader then walks the chain of the row's versions on its page until the
-- page is pruned, and a full page is pruned only once less than a tenth of it is free: on the
-- hottest items, the batch's item lock, each ledger row's reference check and the update
-- itself walked chains of a dozen versions (heap_hot_search_buffer was the top function in a
-- profile of the ingest). Half-full pages are pruned as soon as they pass half, which keeps
-- the chains short, and leave room for the new versions on the same page. A catalogue of a
-- million items takes twice the pages (some 200 MB instead of 100 MB); that buys
-- cheap updates of the rows every batch locks. Applies to pages written from now on.
ALTER TABLE inventory SET (fillfactor = 50);

COMMENT ON COLUMN inventory_ledger.op_id IS
    'The op that made this movement (a received_op row, checked per statement by midway_reference_check); NULL for movements not from a device (a DBA correction, an import).';
COMMENT ON COLUMN received_op.device_id IS 'The device that sent the op (a device row, checked per statement by midway_reference_check).';

INSERT INTO schema_migration (version, name) VALUES (8, '008_ingest');
