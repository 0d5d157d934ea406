-- 001: the migrations table and the seed tables of the database schema document.
--
-- The seed's CREATE statements are kept as the document writes them (unquoted names, so
-- `Users` is the table users and the document's own SQL runs against these tables). The one
-- deliberate difference: IntegrationEvent and UserInteraction are partitioned by month
-- (the document's section 3.2 asks for it), and PostgreSQL requires a partitioned table's
-- primary key to include the partition column, so their keys are (id, timestamp).
-- Columns Midway adds to seed tables come in later files, so this file reads against the
-- document line by line.
--
-- Every file runs in one transaction (psql -1, or the server's runner) and ends by
-- recording itself in schema_migration.

-- Objects go to schema public whatever the applying role's search_path says; LOCAL scopes
-- this to the file's transaction.
SET LOCAL search_path = public;

CREATE TABLE schema_migration (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migration IS
    'One row per applied migration file (schema/postgres/NNN_name.sql); each file inserts its own row as its last statement.';
COMMENT ON COLUMN schema_migration.version IS 'The NNN of the file name.';
COMMENT ON COLUMN schema_migration.name IS 'The file name without .sql, e.g. 001_migrations_and_seed_tables.';

-- 2.2.1.1 Users
CREATE TABLE Users (
    user_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    username VARCHAR(255) UNIQUE NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    first_name VARCHAR(100),
    last_name VARCHAR(100),
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
COMMENT ON TABLE users IS
    'Operators, managers, auditors and admins (seed 2.2.1.1). Never deleted once they have history: set is_active = false (soft delete).';
COMMENT ON COLUMN users.user_id IS 'UUIDv7 when created by Midway (time-ordered); gen_random_uuid() only as the default for manual inserts.';
COMMENT ON COLUMN users.password_hash IS
    'Password hash for interactive logins; the sync server never reads it and the runtime role has no privilege on this column.';
COMMENT ON COLUMN users.is_active IS 'false = deactivated (soft delete): loses every permission, keeps its history.';

-- 2.2.1.2 Roles & UserRoles
CREATE TABLE Roles (
    role_id SERIAL PRIMARY KEY,
    role_name VARCHAR(50) UNIQUE NOT NULL,
    description TEXT
);
COMMENT ON TABLE roles IS 'Application roles (seed 2.2.1.2): admin, manager, operator, auditor. What each may do is in role_permission.';

CREATE TABLE UserRoles (
    user_id UUID NOT NULL REFERENCES Users(user_id) ON DELETE CASCADE,
    role_id INT NOT NULL REFERENCES Roles(role_id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);
COMMENT ON TABLE userroles IS 'Which user holds which role (seed 2.2.1.2; M:N). Deleting a user or a role removes its assignments.';

-- 2.2.1.4 Locations (before Inventory, which references it)
CREATE TABLE Locations (
    location_id SERIAL PRIMARY KEY,
    location_name VARCHAR(255) NOT NULL,
    address TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE
);
COMMENT ON TABLE locations IS 'Physical or logical places that hold inventory (seed 2.2.1.4). Retire with is_active = false rather than DELETE.';

-- 2.2.1.3 Inventory
CREATE TABLE Inventory (
    resource_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    item_name VARCHAR(255) NOT NULL,
    item_sku VARCHAR(100) UNIQUE NOT NULL,
    description TEXT,
    quantity INT NOT NULL CHECK (quantity >= 0),
    location_id INT NOT NULL REFERENCES Locations(location_id),
    last_updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
COMMENT ON TABLE inventory IS
    'Inventory items with their current quantity and location (seed 2.2.1.3). Every change of quantity or location has a row in inventory_ledger.';
COMMENT ON COLUMN inventory.quantity IS 'Current on-hand quantity in whole units; never below zero (an op that would make it negative is rejected).';
COMMENT ON COLUMN inventory.last_updated_at IS 'When the row last changed; kept current by a trigger unless the writer sets it.';

-- 2.2.2.1 ResourceAllocation
CREATE TABLE ResourceAllocation (
    allocation_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    resource_id UUID NOT NULL REFERENCES Inventory(resource_id),
    predicted_need INT NOT NULL CHECK (predicted_need >= 0),
    manual_override BOOLEAN NOT NULL DEFAULT FALSE,
    override_reason TEXT,
    allocation_timestamp TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    allocated_by_user_id UUID REFERENCES Users(user_id),
    CONSTRAINT chk_override_reason CHECK (manual_override = FALSE OR override_reason IS NOT NULL)
);
COMMENT ON TABLE resourceallocation IS 'Allocations of inventory with predicted need and manual overrides (seed 2.2.2.1); kept 7 years.';
COMMENT ON CONSTRAINT chk_override_reason ON resourceallocation IS 'A manual override must say why (seed 2.2.2.1).';

-- 2.2.2.2 PerformanceReport
CREATE TABLE PerformanceReport (
    report_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES Users(user_id),
    generated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    kpi_values JSONB NOT NULL,
    customized_view JSONB
);
COMMENT ON TABLE performancereport IS
    'Per-user KPI reports (seed 2.2.2.2). Row-level security: a user sees their own, holders of report.read see all.';
COMMENT ON COLUMN performancereport.kpi_values IS 'KPI name -> number; its JSON schema is validated by the writer (docs/schema.md, DB-VAL-003).';

-- 2.2.2.3 IntegrationEvent, partitioned by month (partitions: 002_partitions.sql)
CREATE TYPE event_source_type AS ENUM ('sync', 'update', 'error', 'create', 'delete');

CREATE TABLE IntegrationEvent (
    event_id BIGSERIAL,
    source_system VARCHAR(50) NOT NULL,
    event_type event_source_type NOT NULL,
    event_timestamp TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    details JSONB NOT NULL,
    correlation_id UUID,
    PRIMARY KEY (event_id, event_timestamp)
) PARTITION BY RANGE (event_timestamp);
COMMENT ON TABLE integrationevent IS
    'Events from integration sources and devices (seed 2.2.2.3). Partitioned by UTC month on event_timestamp; live for 1 year, then archived (docs/schema.md).';
COMMENT ON COLUMN integrationevent.event_id IS 'Unique by its sequence; the primary key also carries event_timestamp because the table is partitioned on it.';
COMMENT ON COLUMN integrationevent.correlation_id IS 'The op''s or request''s correlation id: joins this row to received_op, UserInteraction and both sides'' logs.';

-- 2.2.2.4 UserInteraction, partitioned by month (partitions: 002_partitions.sql)
CREATE TABLE UserInteraction (
    interaction_id BIGSERIAL,
    user_id UUID NOT NULL REFERENCES Users(user_id),
    action VARCHAR(100) NOT NULL,
    interaction_timestamp TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    target_entity_id VARCHAR(255),
    target_entity_type VARCHAR(50),
    metadata JSONB,
    PRIMARY KEY (interaction_id, interaction_timestamp)
) PARTITION BY RANGE (interaction_timestamp);
COMMENT ON TABLE userinteraction IS
    'User actions for behaviour analysis and audit (seed 2.2.2.4). Partitioned by UTC month on interaction_timestamp; live for 2 years, then archived. Row-level security: a user sees their own rows, holders of audit.read see all.';
COMMENT ON COLUMN userinteraction.interaction_id IS 'Unique by its sequence; the primary key also carries interaction_timestamp because the table is partitioned on it.';

-- Section 3.1 indexes, names as the document gives them. On the partitioned tables each is
-- a partitioned index: every partition gets its own copy automatically.
CREATE INDEX idx_performancereport_user_id ON PerformanceReport(user_id);
CREATE INDEX idx_userinteraction_user_id ON UserInteraction(user_id);
CREATE INDEX idx_resourceallocation_resource_id ON ResourceAllocation(resource_id);
CREATE INDEX idx_integrationevent_event_type ON IntegrationEvent(event_type);
CREATE INDEX idx_integrationevent_event_timestamp ON IntegrationEvent(event_timestamp DESC);
CREATE INDEX idx_userinteraction_user_timestamp ON UserInteraction(user_id, interaction_timestamp DESC);
CREATE INDEX idx_performancereport_kpi_values ON PerformanceReport USING GIN (kpi_values);
CREATE INDEX idx_integrationevent_details ON IntegrationEvent USING GIN (details);

-- users.updated_at and inventory.last_updated_at follow the row: a writer that changes a row
-- without touching the timestamp (a DBA fixing a name, a set-based update) still leaves an
-- honest time; a writer that sets it explicitly keeps its value.
CREATE FUNCTION midway_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
            NEW.updated_at := now();
        END IF;
    ELSIF TG_TABLE_NAME = 'inventory' THEN
        IF NEW.last_updated_at IS NOT DISTINCT FROM OLD.last_updated_at THEN
            NEW.last_updated_at := now();
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION midway_touch_updated_at() IS 'BEFORE UPDATE trigger: bumps users.updated_at / inventory.last_updated_at unless the UPDATE set it.';

CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION midway_touch_updated_at();
CREATE TRIGGER inventory_touch_updated_at BEFORE UPDATE ON inventory
    FOR EACH ROW EXECUTE FUNCTION midway_touch_updated_at();

INSERT INTO schema_migration (version, name) VALUES (1, '001_migrations_and_seed_tables');
