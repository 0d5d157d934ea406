-- 008: the references of the two tables every push writes rows into, checked once per
-- statement instead of once per row, and room for the inventory's constant updates.
--
-- 004 made these foreign keys: inventory_ledger.op_id -> received_op (deferred),
-- inventory_ledger.resource_id -> inventory, inventory_ledger.location_id -> locations and
-- received_op.device_id -> device. A foreign key is checked row by row: one index probe per
-- row (for op_id, queued until commit). Costs that came with them, measured with the ingest
-- benchmark (docs/performance.md):
--   * Each probe runs through a plan PostgreSQL caches per connection. A connection whose
--     first commits ran while received_op was nearly empty cached a sequential scan, and kept
--     it: its COMMIT then scanned all of received_op once per ledger row, growing from 5 ms
--     to over a second per 500-op batch within a minute, until autovacuum happened to
--     ANALYZE the table. A server started on a fresh database hits that every time.
--   * About 1,500 separate probes per 500-op batch (one per received_op row for its device,
--     three per ledger row), most of them while the batch holds its item locks and every
--     other device's batch that touches one of those items waits. Every row of a push names
--     the same device, and a batch's ledger rows name a few hundred items it has locked
--     and a few locations; one probe per distinct key says the same.
-- The same rules as statement-level triggers: per INSERT, one lock-and-check over the
-- distinct keys of its transition table, planned afresh each time (EXECUTE), so the plan
-- follows the tables' real size. The referenced rows are locked FOR KEY SHARE as a foreign
-- key's check locks them, so a concurrent DELETE of one waits for the writer and then sees
-- its rows. The apply inserts a batch's received_op rows before its ledger rows, in the same
-- transaction, so no rule needs deferral. Deleting, or changing the key of, a referenced row
-- is refused as before. Errors keep the foreign keys' SQLSTATE 23503.

SET LOCAL search_path = public;

ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_op_id_fkey;
ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_resource_id_fkey;
ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_location_id_fkey;
ALTER TABLE received_op DROP CONSTRAINT received_op_device_id_fkey;

-- One trigger function for all the rules; which run depends on the table it fires on and
-- the event. The queries run with EXECUTE in this function itself: transition tables are
-- visible only to the trigger function's own statements. SECURITY DEFINER, as a foreign
-- key's check runs as the owner: locking a referenced row FOR KEY SHARE needs more than the
-- SELECT the runtime role has on locations and device.
CREATE FUNCTION midway_reference_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    rule record;
    missing text;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        -- UPDATE of a referenced row's key (the WHEN clause saw it change): nothing may still
        -- name the old key.
        IF TG_TABLE_NAME = 'device' THEN
            PERFORM 1 FROM public.received_op t WHERE t.device_id = OLD.device_id LIMIT 1;
            missing := OLD.device_id;
        ELSIF TG_TABLE_NAME = 'inventory' THEN
            PERFORM 1 FROM public.inventory_ledger t WHERE t.resource_id = OLD.resource_id LIMIT 1;
            missing := OLD.resource_id::text;
        ELSIF TG_TABLE_NAME = 'locations' THEN
            PERFORM 1 FROM public.inventory_ledger t WHERE t.location_id = OLD.location_id LIMIT 1;
            missing := OLD.location_id::text;
        ELSE
            PERFORM 1 FROM public.inventory_ledger t WHERE t.op_id = OLD.op_id LIMIT 1;
            missing := OLD.op_id::text;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION 'update on table "%" violates a reference checked by midway_reference_check', TG_TABLE_NAME
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (%s)=(%s) is still referenced.', TG_ARGV[0], missing);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND TG_TABLE_NAME IN ('inventory_ledger', 'received_op')) THEN
        -- Every distinct key the new rows name exists, locked FOR KEY SHARE as a foreign
        -- key's check locks it.
        FOR rule IN SELECT * FROM (VALUES
                ('inventory_ledger', 'resource_id', 'inventory', 'resource_id'),
                ('inventory_ledger', 'location_id', 'locations', 'location_id'),
                ('inventory_ledger', 'op_id', 'received_op', 'op_id'),
                ('received_op', 'device_id', 'device', 'device_id')) AS v(tbl, col, ref, refcol)
                WHERE v.tbl = TG_TABLE_NAME LOOP
            EXECUTE format('SELECT n.k::text FROM (SELECT DISTINCT %1$I AS k FROM new_rows'
                           ' WHERE %1$I IS NOT NULL) n LEFT JOIN LATERAL (SELECT 1 AS found'
                           ' FROM public.%2$I r WHERE r.%3$I = n.k FOR KEY SHARE OF r) x ON true'
                           ' WHERE x.found IS NULL LIMIT 1', rule.col, rule.ref, rule.refcol)
                INTO missing;
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION 'insert or update on table "%" violates the rule "%_%_check"', rule.tbl, rule.tbl, rule.col
                    USING ERRCODE = 'foreign_key_violation',
                          DETAIL = format('Key (%s)=(%s) is not present in table "%s".', rule.col, missing, rule.ref);
            END IF;
        END LOOP;
    END IF;
    IF TG_OP = 'DELETE' THEN
        -- No row still names a key the deleted rows had.
        FOR rule IN SELECT * FROM (VALUES
                ('inventory_ledger', 'resource_id', 'inventory', 'resource_id'),
                ('inventory_ledger', 'location_id', 'locations', 'location_id'),
                ('inventory_ledger', 'op_id', 'received_op', 'op_id'),
                ('received_op', 'device_id', 'device', 'device_id')) AS v(tbl, col, ref, refcol)
                WHERE v.ref = TG_TABLE_NAME LOOP
            EXECUTE format('SELECT o.k::text FROM (SELECT DISTINCT %1$I AS k FROM old_rows) o'
                           ' WHERE EXISTS (SELECT 1 FROM public.%2$I t WHERE t.%3$I = o.k)'
                           ' AND NOT EXISTS (SELECT 1 FROM public.%4$I r WHERE r.%1$I = o.k)'
                           ' LIMIT 1', rule.refcol, rule.tbl, rule.col, rule.ref)
                INTO missing;
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION 'update or delete on table "%" violates the rule "%_%_check"', rule.ref, rule.tbl, rule.col
                    USING ERRCODE = 'foreign_key_violation',
                          DETAIL = format('Key (%s)=(%s) is still referenced from table "%s".', rule.refcol, missing, rule.tbl);
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_reference_check() IS
    'The references of inventory_ledger and received_op that 004 declared as foreign keys, checked per statement (and per row for a changed key).';
REVOKE ALL ON FUNCTION midway_reference_check() FROM PUBLIC;

-- Inserts: one check per statement over its transition table. Transition tables allow one
-- event per trigger, hence one trigger per event.
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
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
-- Deletes of referenced rows: one check per statement.
CREATE TRIGGER received_op_ref_del AFTER DELETE ON received_op
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER device_ref_del AFTER DELETE ON device
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER inventory_ref_del AFTER DELETE ON inventory
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
CREATE TRIGGER locations_ref_del AFTER DELETE ON locations
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_reference_check();
-- A changed key of a referenced row: row-level, so that the constant updates of
-- inventory.quantity, device.last_seen_at and the like cost only the WHEN test.
CREATE TRIGGER received_op_ref_key AFTER UPDATE OF op_id ON received_op
    FOR EACH ROW WHEN (OLD.op_id IS DISTINCT FROM NEW.op_id)
    EXECUTE FUNCTION midway_reference_check('op_id');
CREATE TRIGGER device_ref_key AFTER UPDATE OF device_id ON device
    FOR EACH ROW WHEN (OLD.device_id IS DISTINCT FROM NEW.device_id)
    EXECUTE FUNCTION midway_reference_check('device_id');
CREATE TRIGGER inventory_ref_key AFTER UPDATE OF resource_id ON inventory
    FOR EACH ROW WHEN (OLD.resource_id IS DISTINCT FROM NEW.resource_id)
    EXECUTE FUNCTION midway_reference_check('resource_id');
CREATE TRIGGER locations_ref_key AFTER UPDATE OF location_id ON locations
    FOR EACH ROW WHEN (OLD.location_id IS DISTINCT FROM NEW.location_id)
    EXECUTE FUNCTION midway_reference_check('location_id');

COMMENT ON COLUMN inventory_ledger.op_id IS
    'The op that made this movement (a received_op row; checked per statement, see midway_reference_check); NULL for movements not from a device (a DBA correction, an import).';
COMMENT ON COLUMN inventory_ledger.resource_id IS 'The item (an inventory row; checked per statement, see midway_reference_check).';
COMMENT ON COLUMN inventory_ledger.location_id IS
    'The item''s location after the movement (a locations row; checked per statement); required for relocate, optional otherwise.';
COMMENT ON COLUMN received_op.device_id IS 'The device that sent the op (a device row; checked per statement, see midway_reference_check).';

-- Inventory rows are the only ones rewritten all the time: a busy item once per batch that
-- touches it. Its indexes are on keys that never change, so each update is HOT (no index
-- entry), but every reader then walks the chain of the row's versions on its page until the
-- page is pruned, and a full page is pruned only once less than a tenth of it is free: on the
-- hottest items, the batch's item lock, the reference checks and the update itself walked
-- chains of a dozen versions (heap_hot_search_buffer was the top PostgreSQL function in a
-- profile of the ingest). Half-full pages are pruned as soon as they pass half, which keeps
-- the chains short, and leave room for the new versions on the same page. A catalogue of a
-- million items takes twice the pages (some 200 MB instead of 100 MB) to make the rows every
-- batch locks cheap to update. Applies to pages written from now on.
ALTER TABLE inventory SET (fillfactor = 50);

INSERT INTO schema_migration (version, name) VALUES (8, '008_ingest');
