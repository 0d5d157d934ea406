-- 005: the change feed that device pulls read: one row per changed reference-data entity
-- (locations, items, users with their roles, roles with their permissions), written by
-- triggers in the changing transaction itself, so no change can commit without its feed row.
--
-- How a pull reads it (docs/schema.md, "Change feed and pull"): only rows whose txid is below
-- pg_snapshot_xmin(pg_current_snapshot()), i.e. rows of transactions that have all finished,
-- ordered by (txid, seq), after the cursor (txid, seq) of the last row handed out. A
-- transaction that took a lower seq but commits later has a txid at or above that xmin
-- until it finishes, so it is handed out later instead of skipped.

SET LOCAL search_path = public;

CREATE TABLE change_feed (
    seq bigserial PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    entity text NOT NULL CHECK (entity IN ('location', 'item', 'user', 'role', 'role_permission')),
    entity_key text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE change_feed IS
    'Reference-data changes for pull, in (txid, seq) order. A row says only which entity changed; the pull sends the entity''s current state (or its deletion if it no longer exists).';
COMMENT ON COLUMN change_feed.seq IS 'Order within a transaction; across transactions it is NOT commit order (use txid first).';
COMMENT ON COLUMN change_feed.txid IS 'Top-level transaction that made the change. Pull hands out only txid < pg_snapshot_xmin(pg_current_snapshot()).';
COMMENT ON COLUMN change_feed.entity IS
    'location (Locations), item (Inventory), user (Users, and UserRoles of that user), role (Roles), role_permission (the role''s permission set).';
COMMENT ON COLUMN change_feed.entity_key IS 'location_id, resource_id, user_id or role_id as text.';
CREATE INDEX change_feed_txid_seq_idx ON change_feed (txid, seq);

-- Pruning moves this horizon forward: every feed row at or below it is gone. A pull whose
-- cursor is below it has missed history and must start over with a full snapshot.
CREATE TABLE change_feed_horizon (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    txid xid8 NOT NULL,
    seq bigint NOT NULL,
    pruned_at timestamptz
);
COMMENT ON TABLE change_feed_horizon IS
    'One row: the (txid, seq) of the last pruned change_feed row. A cursor below it cannot be continued; the device needs a full snapshot.';
INSERT INTO change_feed_horizon (txid, seq) VALUES ('0', 0);

-- Statement-level: one INSERT ... SELECT per statement, however many rows it changed, so a
-- set-based reconciliation of a thousand items costs one extra statement, not a thousand.
-- Arguments: the entity name and the key column. SECURITY DEFINER so writers need no
-- privilege on change_feed (the runtime role cannot forge or delete feed rows).
CREATE FUNCTION midway_change_feed_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    entity text := TG_ARGV[0];
    keycol text := TG_ARGV[1];
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO public.change_feed (entity, entity_key) '
                       'SELECT DISTINCT %L, %I::text FROM new_rows', entity, keycol);
    ELSIF TG_OP = 'UPDATE' THEN
        -- Both sides: an UPDATE of a key column changes two entities.
        EXECUTE format('INSERT INTO public.change_feed (entity, entity_key) '
                       'SELECT %L, k FROM (SELECT %I::text AS k FROM new_rows '
                       'UNION SELECT %I::text FROM old_rows) AS keys', entity, keycol, keycol);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO public.change_feed (entity, entity_key) '
                       'SELECT DISTINCT %L, %I::text FROM old_rows', entity, keycol);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_change_feed_capture() IS
    'AFTER ... FOR EACH STATEMENT trigger: one change_feed row per changed entity key (TG_ARGV: entity, key column).';
REVOKE ALL ON FUNCTION midway_change_feed_capture() FROM PUBLIC;

-- Transition tables allow one event per trigger, hence three triggers per table.
CREATE TRIGGER locations_feed_ins AFTER INSERT ON locations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('location', 'location_id');
CREATE TRIGGER locations_feed_upd AFTER UPDATE ON locations REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('location', 'location_id');
CREATE TRIGGER locations_feed_del AFTER DELETE ON locations REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('location', 'location_id');

CREATE TRIGGER inventory_feed_ins AFTER INSERT ON inventory REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('item', 'resource_id');
CREATE TRIGGER inventory_feed_upd AFTER UPDATE ON inventory REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('item', 'resource_id');
CREATE TRIGGER inventory_feed_del AFTER DELETE ON inventory REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('item', 'resource_id');

CREATE TRIGGER users_feed_ins AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');
CREATE TRIGGER users_feed_upd AFTER UPDATE ON users REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');
CREATE TRIGGER users_feed_del AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');

-- A user's role set is part of the pulled user record.
CREATE TRIGGER userroles_feed_ins AFTER INSERT ON userroles REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');
CREATE TRIGGER userroles_feed_upd AFTER UPDATE ON userroles REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');
CREATE TRIGGER userroles_feed_del AFTER DELETE ON userroles REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('user', 'user_id');

CREATE TRIGGER roles_feed_ins AFTER INSERT ON roles REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role', 'role_id');
CREATE TRIGGER roles_feed_upd AFTER UPDATE ON roles REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role', 'role_id');
CREATE TRIGGER roles_feed_del AFTER DELETE ON roles REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role', 'role_id');

CREATE TRIGGER role_permission_feed_ins AFTER INSERT ON role_permission REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role_permission', 'role_id');
CREATE TRIGGER role_permission_feed_upd AFTER UPDATE ON role_permission REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role_permission', 'role_id');
CREATE TRIGGER role_permission_feed_del AFTER DELETE ON role_permission REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION midway_change_feed_capture('role_permission', 'role_id');

-- The seeded roles and permissions (003) predate the triggers; a device's first pull is a
-- full snapshot anyway, but the feed should describe every role that exists.
INSERT INTO change_feed (entity, entity_key) SELECT 'role', role_id::text FROM roles;
INSERT INTO change_feed (entity, entity_key)
SELECT DISTINCT 'role_permission', role_id::text FROM role_permission;

-- Drops feed rows older than keep, as a prefix in (txid, seq) order, and moves the horizon
-- to the last row dropped. Rows of transactions still running are never dropped. Returns
-- the number of rows deleted. Called by the server's maintenance loop.
CREATE FUNCTION midway_prune_change_feed(keep interval DEFAULT '30 days') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    h_txid xid8;
    h_seq bigint;
    n bigint;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'midway_prune_change_feed: keep must be at least 1 day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT f.txid, f.seq INTO h_txid, h_seq
      FROM public.change_feed f
     WHERE f.changed_at < now() - keep
       AND f.txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY f.txid DESC, f.seq DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- The row lock also serializes concurrent pruners; the horizon only moves forward.
    UPDATE public.change_feed_horizon h
       SET txid = h_txid, seq = h_seq, pruned_at = now()
     WHERE (h.txid, h.seq) < (h_txid, h_seq);
    DELETE FROM public.change_feed f WHERE (f.txid, f.seq) <= (h_txid, h_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION midway_prune_change_feed(interval) IS
    'Deletes change_feed rows older than keep (a prefix in (txid, seq) order) and advances change_feed_horizon. Returns rows deleted.';
REVOKE ALL ON FUNCTION midway_prune_change_feed(interval) FROM PUBLIC;

INSERT INTO schema_migration (version, name) VALUES (5, '005_change_feed');
