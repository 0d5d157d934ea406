-- 006: row-level security and the runtime role's privileges.
--
-- The server connects as a LOGIN role that is a member of midway_runtime, never as the
-- owner, so these policies apply to it. Per transaction it says on whose behalf it acts:
--     SELECT set_config('midway.user_id', '<uuid>', true);    -- SET LOCAL: the acting user
--     SELECT set_config('midway.device_id', '<id>', true);    -- the authenticated device
-- Unset or empty means "nobody": no rows are visible and nothing can be written in a user's
-- name. The policies decide through role_permission (003), the same table the server's own
-- RBAC check reads.

SET LOCAL search_path = public;

-- The acting user of this transaction, or NULL. A value that is not a UUID is an error,
-- not "nobody": it can only come from a bug in the caller.
CREATE FUNCTION midway_acting_user() RETURNS uuid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT NULLIF(current_setting('midway.user_id', true), '')::uuid $$;
COMMENT ON FUNCTION midway_acting_user() IS 'The uuid in setting midway.user_id (set with SET LOCAL by the server), or NULL.';

-- Whether the acting user holds perm (false when there is none).
CREATE FUNCTION midway_acting_user_may(perm text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT COALESCE(public.midway_user_has_permission(public.midway_acting_user(), perm), false) $$;
COMMENT ON FUNCTION midway_acting_user_may(text) IS 'true if the acting user (midway.user_id) is active and holds the permission.';

-- Whether setting midway.device_id names a registered, unrevoked device. SECURITY DEFINER
-- so the answer does not depend on the caller's privileges on device.
CREATE FUNCTION midway_acting_device_ok() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.device d
         WHERE d.device_id = NULLIF(current_setting('midway.device_id', true), '')
           AND d.revoked_at IS NULL)
$$;
COMMENT ON FUNCTION midway_acting_device_ok() IS 'true if midway.device_id (set with SET LOCAL by the server after authenticating the device) names an unrevoked device.';

REVOKE ALL ON FUNCTION midway_acting_user() FROM PUBLIC;
REVOKE ALL ON FUNCTION midway_acting_user_may(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION midway_acting_device_ok() FROM PUBLIC;

-- Policies wrap the helper calls in (SELECT ...) so each is evaluated once per statement
-- (an InitPlan), not once per row.
--
-- Reading: your own rows, or everyone's with audit.read / report.read (manager, auditor,
-- admin as seeded). Writing: your own rows; rows for another user if you hold
-- record.on_behalf (manager, admin); or any user's rows while the server applies a batch for
-- an authenticated device. A device batch carries ops of several operators, and the server
-- has already checked each op's user against role_permission before writing; the policy
-- stops a session that has neither an acting user nor an authenticated device from writing
-- in anyone's name. No UPDATE or DELETE policies: these tables are append-only for
-- everyone but the owner. FORCE makes the owner subject to the policies too, so a server
-- misconfigured to connect as the owner still cannot read across users; DBAs and analysts
-- read through a role with BYPASSRLS (docs/schema.md).

ALTER TABLE userinteraction ENABLE ROW LEVEL SECURITY;
ALTER TABLE userinteraction FORCE ROW LEVEL SECURITY;
CREATE POLICY userinteraction_read ON userinteraction FOR SELECT
    USING (user_id = (SELECT midway_acting_user())
           OR (SELECT midway_acting_user_may('audit.read')));
CREATE POLICY userinteraction_write ON userinteraction FOR INSERT
    WITH CHECK (user_id = (SELECT midway_acting_user())
                OR (SELECT midway_acting_user_may('record.on_behalf'))
                OR (SELECT midway_acting_device_ok()));

ALTER TABLE integrationevent ENABLE ROW LEVEL SECURITY;
ALTER TABLE integrationevent FORCE ROW LEVEL SECURITY;
CREATE POLICY integrationevent_read ON integrationevent FOR SELECT
    USING (user_id = (SELECT midway_acting_user())
           OR (SELECT midway_acting_user_may('audit.read')));
-- Events no user caused (user_id NULL) may be written by any session of the server.
CREATE POLICY integrationevent_write ON integrationevent FOR INSERT
    WITH CHECK (user_id IS NULL
                OR user_id = (SELECT midway_acting_user())
                OR (SELECT midway_acting_user_may('record.on_behalf'))
                OR (SELECT midway_acting_device_ok()));

ALTER TABLE performancereport ENABLE ROW LEVEL SECURITY;
ALTER TABLE performancereport FORCE ROW LEVEL SECURITY;
CREATE POLICY performancereport_read ON performancereport FOR SELECT
    USING (user_id = (SELECT midway_acting_user())
           OR (SELECT midway_acting_user_may('report.read')));
CREATE POLICY performancereport_write ON performancereport FOR INSERT
    WITH CHECK (user_id = (SELECT midway_acting_user())
                OR (SELECT midway_acting_user_may('record.on_behalf')));

-- The runtime role: what reconciliation, pull, device authentication and the maintenance
-- loop touch, and nothing more. No DELETE anywhere, no TRUNCATE, no DDL.
GRANT SELECT ON schema_migration TO midway_runtime;

-- Never password_hash: the server does not read it, so it cannot leak it.
GRANT SELECT (user_id, username, email, first_name, last_name, is_active, created_at, updated_at)
    ON users TO midway_runtime;
GRANT SELECT ON roles, userroles, permission, role_permission, locations TO midway_runtime;

GRANT SELECT, INSERT, UPDATE ON inventory TO midway_runtime;             -- adjust, count, relocate, receive
GRANT SELECT, INSERT ON inventory_ledger TO midway_runtime;
GRANT SELECT, INSERT ON resourceallocation TO midway_runtime;           -- allocation.record
GRANT SELECT, INSERT ON userinteraction TO midway_runtime;              -- interaction.record
GRANT SELECT, INSERT ON integrationevent TO midway_runtime;             -- event.record
GRANT SELECT, INSERT ON performancereport TO midway_runtime;
GRANT SELECT, INSERT, UPDATE ON device TO midway_runtime;               -- register, revoke, last_seen, FOR UPDATE
GRANT SELECT, INSERT ON received_op TO midway_runtime;
GRANT SELECT ON change_feed, change_feed_horizon TO midway_runtime;     -- pull

GRANT USAGE ON SEQUENCE integrationevent_event_id_seq, userinteraction_interaction_id_seq,
    inventory_ledger_ledger_id_seq TO midway_runtime;

GRANT EXECUTE ON FUNCTION midway_ensure_partitions(int),
    midway_apply_retention(interval, interval, interval, boolean),
    midway_prune_change_feed(interval),
    midway_user_has_permission(uuid, text),
    midway_acting_user(),
    midway_acting_user_may(text),
    midway_acting_device_ok() TO midway_runtime;

INSERT INTO schema_migration (version, name) VALUES (6, '006_rls_and_grants');
