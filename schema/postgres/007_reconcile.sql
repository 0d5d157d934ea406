-- 007: what pull needs to describe a deletion or a rename by the key a device caches.
--
-- The change feed (005) names an item by resource_id and a role by role_id, but a device
-- caches items by SKU and role permissions by role name (the pull protocol's keys). Once an
-- Inventory row is deleted, or its SKU changed, the old SKU is gone with it and the pull
-- could not tell the device which cached row to drop; the same holds for roles. These
-- row-level triggers keep each retired name, keyed by the entity that last held it. They
-- fire only on DELETE and on an UPDATE that really changes the name (a DBA's action), never
-- on the quantity and location updates of reconciliation.
--
-- A role rename also changes the role lists of every user holding it, which the user
-- triggers of 005 do not see (userroles keeps the role_id): the rename writes a feed row
-- for each such user.

SET LOCAL search_path = public;

CREATE TABLE retired_name (
    entity text NOT NULL CHECK (entity IN ('item', 'role')),
    name text NOT NULL,
    entity_key text NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, name)
);
COMMENT ON TABLE retired_name IS
    'SKUs and role names no longer held by the row that had them (deleted or renamed), for the pull''s delete changes. A name in use again by a live row is not sent as deleted.';
COMMENT ON COLUMN retired_name.entity IS 'item (name = item_sku, entity_key = resource_id) or role (name = role_name, entity_key = role_id).';
COMMENT ON COLUMN retired_name.entity_key IS 'The change_feed entity_key of the row that last held the name.';
CREATE INDEX retired_name_entity_key_idx ON retired_name (entity, entity_key);

CREATE FUNCTION midway_retire_name() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'inventory' THEN
        INSERT INTO public.retired_name (entity, name, entity_key)
        VALUES ('item', OLD.item_sku, OLD.resource_id::text)
        ON CONFLICT (entity, name)
        DO UPDATE SET entity_key = EXCLUDED.entity_key, retired_at = now();
    ELSIF TG_TABLE_NAME = 'roles' THEN
        INSERT INTO public.retired_name (entity, name, entity_key)
        VALUES ('role', OLD.role_name, OLD.role_id::text)
        ON CONFLICT (entity, name)
        DO UPDATE SET entity_key = EXCLUDED.entity_key, retired_at = now();
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_retire_name() IS
    'AFTER DELETE / UPDATE OF the name, FOR EACH ROW on inventory and roles: records the old SKU or role name in retired_name.';
REVOKE ALL ON FUNCTION midway_retire_name() FROM PUBLIC;

CREATE TRIGGER inventory_retire_name_del AFTER DELETE ON inventory
    FOR EACH ROW EXECUTE FUNCTION midway_retire_name();
CREATE TRIGGER inventory_retire_name_upd AFTER UPDATE OF item_sku ON inventory
    FOR EACH ROW WHEN (OLD.item_sku IS DISTINCT FROM NEW.item_sku)
    EXECUTE FUNCTION midway_retire_name();
CREATE TRIGGER roles_retire_name_del AFTER DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION midway_retire_name();
CREATE TRIGGER roles_retire_name_upd AFTER UPDATE OF role_name ON roles
    FOR EACH ROW WHEN (OLD.role_name IS DISTINCT FROM NEW.role_name)
    EXECUTE FUNCTION midway_retire_name();

CREATE FUNCTION midway_role_rename_feed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO public.change_feed (entity, entity_key)
    SELECT DISTINCT 'user', ur.user_id::text FROM public.userroles ur WHERE ur.role_id = NEW.role_id;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION midway_role_rename_feed() IS
    'AFTER UPDATE OF role_name FOR EACH ROW on roles: a feed row for every user holding the role, whose pulled role list changes with the name.';
REVOKE ALL ON FUNCTION midway_role_rename_feed() FROM PUBLIC;

CREATE TRIGGER roles_rename_feed AFTER UPDATE OF role_name ON roles
    FOR EACH ROW WHEN (OLD.role_name IS DISTINCT FROM NEW.role_name)
    EXECUTE FUNCTION midway_role_rename_feed();

GRANT SELECT ON retired_name TO midway_runtime;

INSERT INTO schema_migration (version, name) VALUES (7, '007_reconcile');
