-- 004: what device sync needs beyond the seed: devices, the record of every op received
-- (deduplication and audit), the inventory ledger, and the user/correlation columns that
-- make IntegrationEvent and UserInteraction traceable.

SET LOCAL search_path = public;

CREATE TABLE device (
    device_id text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name text NOT NULL DEFAULT '' CHECK (char_length(name) <= 200),
    kind text NOT NULL CHECK (kind IN ('scanner', 'gateway')),
    token_hash text NOT NULL UNIQUE CHECK (token_hash <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_seen_at timestamptz
);
COMMENT ON TABLE device IS
    'Registered scanners and gateways. The server serializes one device''s batches with SELECT ... FOR UPDATE on its row, so its ops apply in device order.';
COMMENT ON COLUMN device.device_id IS 'Chosen at registration: 1..64 of [A-Za-z0-9._-], safe in logs, file names and URLs.';
COMMENT ON COLUMN device.token_hash IS
    'Hash of the bearer token (the token itself is shown once at registration and never stored). Unique, so a token can be looked up by its hash.';
COMMENT ON COLUMN device.revoked_at IS 'Set when the device is revoked; its token is refused from then on. Rows are kept for the audit trail.';
COMMENT ON COLUMN device.last_seen_at IS 'Last successfully authenticated request.';

CREATE TABLE received_op (
    op_id uuid PRIMARY KEY,
    device_id text NOT NULL REFERENCES device (device_id),
    batch_id uuid NOT NULL,
    op_type text NOT NULL,
    status text NOT NULL CHECK (status IN ('applied', 'rejected')),
    error_code text,
    error_message text,
    user_id uuid,
    correlation_id uuid,
    event_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT received_op_error_code_chk CHECK ((status = 'rejected') = (error_code IS NOT NULL))
);
COMMENT ON TABLE received_op IS
    'Every op the server has decided on, applied or rejected: the deduplication record (an op_id found here is a duplicate and changes nothing) and the audit trail. Never deleted, so a batch replayed at any later time is still recognised.';
COMMENT ON COLUMN received_op.op_id IS 'UUIDv7 made on the device when the op was recorded.';
COMMENT ON COLUMN received_op.batch_id IS 'The push request the op arrived in (first arrival; duplicates are not recorded again).';
COMMENT ON COLUMN received_op.op_type IS 'As sent, e.g. inventory.adjust; unknown types are recorded as rejected.';
COMMENT ON COLUMN received_op.error_code IS 'Machine-readable reason for a rejection (e.g. insufficient_stock); NULL exactly when applied.';
COMMENT ON COLUMN received_op.user_id IS 'The operator the device named. No foreign key: an op naming an unknown user is recorded as rejected.';
COMMENT ON COLUMN received_op.event_at IS 'Device clock time of the op (when the operator did it).';
COMMENT ON COLUMN received_op.received_at IS 'Server time the op was decided.';
CREATE INDEX received_op_device_received_idx ON received_op (device_id, received_at);

CREATE TABLE inventory_ledger (
    ledger_id bigserial PRIMARY KEY,
    resource_id uuid NOT NULL REFERENCES inventory (resource_id),
    kind text NOT NULL CHECK (kind IN ('adjust', 'count', 'receive', 'relocate')),
    delta int NOT NULL,
    quantity_after int NOT NULL CHECK (quantity_after >= 0),
    location_id int REFERENCES locations (location_id),
    -- Deferred: a batch may insert its ledger rows before its received_op rows.
    op_id uuid REFERENCES received_op (op_id) DEFERRABLE INITIALLY DEFERRED,
    event_at timestamptz NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    user_id uuid,
    device_id text,
    correlation_id uuid,
    CONSTRAINT inventory_ledger_relocate_chk
        CHECK (kind <> 'relocate' OR (delta = 0 AND location_id IS NOT NULL)),
    CONSTRAINT inventory_ledger_receive_chk CHECK (kind <> 'receive' OR delta >= 0)
);
COMMENT ON TABLE inventory_ledger IS
    'One row per applied inventory movement, so every quantity can be explained: the sum of an item''s deltas is its quantity. Append-only.';
COMMENT ON COLUMN inventory_ledger.kind IS
    'adjust (by a delta), count (the delta that makes the quantity what was counted at event_at plus the movements after it), receive (new item, delta = initial quantity), relocate (delta 0, location_id = destination).';
COMMENT ON COLUMN inventory_ledger.delta IS 'Change of quantity this movement made; 0 for relocate.';
COMMENT ON COLUMN inventory_ledger.quantity_after IS 'Inventory.quantity right after this movement was applied.';
COMMENT ON COLUMN inventory_ledger.location_id IS 'The item''s location after the movement; required for relocate, optional otherwise.';
COMMENT ON COLUMN inventory_ledger.op_id IS 'The op that made this movement; NULL for movements not from a device (a DBA correction, an import).';
COMMENT ON COLUMN inventory_ledger.event_at IS 'Device time of the op: what a later cycle count compares against.';
COMMENT ON COLUMN inventory_ledger.applied_at IS 'Server time the movement was applied.';
-- inventory.count needs "the sum of this item's deltas with event_at later than T"; the
-- INCLUDE lets that be answered from the index alone.
CREATE INDEX inventory_ledger_resource_event_idx ON inventory_ledger (resource_id, event_at) INCLUDE (delta);

-- Seed question DB-CON-003: events caused by a user link back to the user. NO ACTION like
-- the seed's other references to users: users are deactivated, not deleted.
ALTER TABLE integrationevent ADD COLUMN user_id uuid REFERENCES users (user_id);
COMMENT ON COLUMN integrationevent.user_id IS 'The user whose action caused the event, if any (DB-CON-003); NULL for system events.';

-- Every op is traceable across device, server and database logs by its correlation id.
ALTER TABLE userinteraction ADD COLUMN correlation_id uuid;
COMMENT ON COLUMN userinteraction.correlation_id IS 'The op''s or request''s correlation id: joins this row to received_op, IntegrationEvent and both sides'' logs.';

INSERT INTO schema_migration (version, name) VALUES (4, '004_sync_tables');
