-- 003: role-based access control in the database: the seeded application roles, the
-- catalog of permissions, which role holds which, and the PostgreSQL role the server runs as.
--
-- Application roles (rows of Roles) are what people hold; the server decides whether an op
-- may apply by looking up the acting user's permissions here, and the row-level security
-- policies (006) read the same tables, so there is one source of truth for "who may do
-- what".

SET LOCAL search_path = public;

-- The runtime role: what the server's connections act as. Roles are cluster-wide, so it is
-- created only if missing (a second Midway database in the same cluster shares it). It is
-- NOLOGIN and owns nothing; deployments create a LOGIN role that is a member of it
-- (docs/schema.md, "Database roles"). Creating it needs CREATEROLE: if the migration owner
-- lacks it, a superuser runs `CREATE ROLE midway_runtime NOLOGIN` once beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'midway_runtime') THEN
        CREATE ROLE midway_runtime NOLOGIN;
    END IF;
END
$$;

CREATE TABLE permission (
    permission text PRIMARY KEY CHECK (permission ~ '^[a-z]+(\.[a-z_]+)+$'),
    description text NOT NULL
);
COMMENT ON TABLE permission IS
    'Every permission the server checks: the op types of the sync protocol and a few administrative actions. role_permission may only name these.';

INSERT INTO permission (permission, description) VALUES
    ('inventory.adjust',   'op: change an item''s quantity by a delta'),
    ('inventory.count',    'op: record a cycle count (the quantity on the shelf at a time)'),
    ('inventory.relocate', 'op: move an item to another location'),
    ('inventory.receive',  'op: receive goods as a new item (creates an Inventory row: a new SKU)'),
    ('interaction.record', 'op: record a UserInteraction'),
    ('allocation.record',  'op: record a ResourceAllocation, including manual overrides'),
    ('event.record',       'op: record an IntegrationEvent from a device'),
    ('record.on_behalf',   'record interactions, events and reports attributed to another user'),
    ('report.read',        'read every user''s PerformanceReport'),
    ('audit.read',         'read every user''s UserInteraction and IntegrationEvent rows, received ops and the ledger'),
    ('device.manage',      'register, rename and revoke devices'),
    ('user.manage',        'create and deactivate users, assign roles');

CREATE TABLE role_permission (
    role_id int NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    permission text NOT NULL REFERENCES permission (permission),
    PRIMARY KEY (role_id, permission)
);
COMMENT ON TABLE role_permission IS
    'Which application role may do which operation. A user may do what any of their roles may (and nothing if users.is_active is false).';

INSERT INTO Roles (role_name, description) VALUES
    ('admin',    'Everything, including devices and users.'),
    ('manager',  'Every op type, recording on behalf of others, reading all reports and audit data.'),
    ('operator', 'Floor work: adjust, count and relocate stock, record interactions and device events.'),
    ('auditor',  'Read-only: all reports and audit data, no ops.');

-- admin: everything.
INSERT INTO role_permission (role_id, permission)
SELECT r.role_id, p.permission FROM roles r CROSS JOIN permission p WHERE r.role_name = 'admin';

-- manager: every op type, on behalf of others, and all reading.
INSERT INTO role_permission (role_id, permission)
SELECT r.role_id, p.permission
  FROM roles r CROSS JOIN permission p
 WHERE r.role_name = 'manager'
   AND p.permission IN ('inventory.adjust', 'inventory.count', 'inventory.relocate',
                        'inventory.receive', 'interaction.record', 'allocation.record',
                        'event.record', 'record.on_behalf', 'report.read', 'audit.read');

-- operator: the floor ops. Not inventory.receive, which creates a new catalog item (a
-- mistyped SKU becomes a permanent duplicate), and not allocation.record (planning).
INSERT INTO role_permission (role_id, permission)
SELECT r.role_id, p.permission
  FROM roles r CROSS JOIN permission p
 WHERE r.role_name = 'operator'
   AND p.permission IN ('inventory.adjust', 'inventory.count', 'inventory.relocate',
                        'interaction.record', 'event.record');

-- auditor: reading only.
INSERT INTO role_permission (role_id, permission)
SELECT r.role_id, p.permission
  FROM roles r CROSS JOIN permission p
 WHERE r.role_name = 'auditor' AND p.permission IN ('report.read', 'audit.read');

-- Whether user uid, active, holds permission perm through any of their roles. STABLE and
-- SECURITY DEFINER: row-level security policies call it as the runtime role, and the answer
-- must not depend on what that role may read.
CREATE FUNCTION midway_user_has_permission(uid uuid, perm text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM public.users u
          JOIN public.userroles ur ON ur.user_id = u.user_id
          JOIN public.role_permission rp ON rp.role_id = ur.role_id
         WHERE u.user_id = uid AND u.is_active AND rp.permission = perm)
$$;
COMMENT ON FUNCTION midway_user_has_permission(uuid, text) IS
    'true if the user is active and one of their roles holds the permission; false for NULL or unknown users.';
REVOKE ALL ON FUNCTION midway_user_has_permission(uuid, text) FROM PUBLIC;

INSERT INTO schema_migration (version, name) VALUES (3, '003_rbac');
