-- 009: the runtime role keeps only what the server's own statements use.
--
-- 006 granted midway_runtime whole-table INSERT and UPDATE on device and UPDATE on inventory,
-- and EXECUTE on midway_apply_retention with arguments of the caller's choosing. A runtime
-- login taken over (an SQL injection we do not know about, a leaked password) could then
-- register devices of its own, rewrite a device's token hash or an item's SKU, or call
-- retention with require_export => false and archive_grace => '0' and drop every archived
-- partition at once. What is left:
--   * device: SELECT, and UPDATE of last_seen_at only. Devices are registered and revoked by
--     the admin commands, which connect as the owner. The batch lock (SELECT ... FOR NO KEY
--     UPDATE) needs UPDATE on at least one column, which last_seen_at gives.
--   * inventory: SELECT, INSERT (inventory.receive creates the item), and UPDATE of quantity,
--     location_id and last_updated_at, the three columns reconciliation writes. Names, SKUs
--     and descriptions change only through the owner.
--   * retention: midway_apply_retention_policy(), without arguments, applies the policy kept
--     in retention_policy, a table only the owner may change.

SET LOCAL search_path = public;

REVOKE INSERT, UPDATE ON device FROM midway_runtime;
GRANT UPDATE (last_seen_at) ON device TO midway_runtime;

REVOKE UPDATE ON inventory FROM midway_runtime;
GRANT UPDATE (quantity, location_id, last_updated_at) ON inventory TO midway_runtime;

-- One row: the retention policy the maintenance loop applies. The CHECKs are the bounds
-- midway_apply_retention() enforces, so a policy that would make it fail cannot be stored.
CREATE TABLE retention_policy (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    integration_keep interval NOT NULL DEFAULT '1 year' CHECK (integration_keep >= interval '1 month'),
    interaction_keep interval NOT NULL DEFAULT '2 years' CHECK (interaction_keep >= interval '1 month'),
    archive_grace interval NOT NULL DEFAULT '30 days' CHECK (archive_grace >= interval '0'),
    require_export boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE retention_policy IS
    'The one row of arguments midway_apply_retention_policy() passes to midway_apply_retention(). Changed by the owner (a DBA), never by the server.';
COMMENT ON COLUMN retention_policy.id IS 'Always true: the primary key keeps the table to one row.';
COMMENT ON COLUMN retention_policy.require_export IS
    'true: an archived partition is dropped only archive_grace after it was marked exported; false: archive_grace after archiving (no cold storage).';
INSERT INTO retention_policy DEFAULT VALUES;

-- The maintenance entry point for retention. SECURITY DEFINER: it runs as the owner, which
-- may read the policy and call midway_apply_retention(); the caller chooses nothing. With
-- no policy row (a DBA deleted it) it does nothing rather than fall back to a default.
CREATE FUNCTION midway_apply_retention_policy()
RETURNS TABLE (action text, table_name text, row_count bigint)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT r.action, r.table_name, r.row_count
      FROM public.retention_policy p
     CROSS JOIN LATERAL public.midway_apply_retention(p.integration_keep, p.interaction_keep,
                                                      p.archive_grace, p.require_export) r
$$;
COMMENT ON FUNCTION midway_apply_retention_policy() IS
    'midway_apply_retention() with the arguments in retention_policy; what the server''s maintenance loop calls.';
REVOKE ALL ON FUNCTION midway_apply_retention_policy() FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION midway_apply_retention(interval, interval, interval, boolean) FROM midway_runtime;
GRANT EXECUTE ON FUNCTION midway_apply_retention_policy() TO midway_runtime;

INSERT INTO schema_migration (version, name) VALUES (9, '009_least_privilege');
