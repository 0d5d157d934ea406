-- 001_init.sql - the agent's local data file: outbox, rejected ops, sync state, settings and
-- the cache of reference data pulled from the server.
--
-- agent/store.c applies this file inside one BEGIN IMMEDIATE transaction and then sets
-- PRAGMA user_version = 1 in the same transaction, so a crash or a full disk leaves either
-- the whole step or nothing. The file therefore holds no BEGIN/COMMIT and no PRAGMA.
--
-- Conventions:
-- * Tables are STRICT: a value of the wrong type is an error at INSERT instead of a text
--   '12' silently sitting in an INTEGER column and sorting wrong (needs SQLite 3.37+).
-- * Times are INTEGER milliseconds since the epoch, UTC, suffixed _ms.
-- * UUIDs (op_id, user_id) are canonical lower-case text, 36 characters: that is the form on
--   the wire and in the sqlite3 shell when someone inspects a device, and for UUIDv7 the text
--   sorts in the same order as the bytes. The 20 bytes over BLOB(16) are small next to data.
-- * Length CHECKs follow shared/bounds.h (MW_OP_TYPE_MAX 32, MW_SKU_MAX 100,
--   MW_OP_DATA_MAX 65536, MW_DEVICE_ID_MAX 64, MW_FREE_TEXT_MAX 4096, 255 for names). They
--   are a last line of defence against our own bugs; the code checks the same bounds first.
--
-- Local view of an item's quantity (rule documented in agent/store.h):
--   quantity = items.server_quantity + SUM(outbox.qty_delta) over the SKU's pending ops.
-- Recording writes qty_delta on the outbox row itself, so the effect and the op are one
-- INSERT: there is no separate counter that could drift from the outbox. An acknowledged op
-- folds its qty_delta into items.server_quantity in the transaction that deletes it from the
-- outbox; a pull then overwrites server_quantity with the server's value, which includes it.

-- Ops recorded on this device and not yet acknowledged by the server, in recording order.
CREATE TABLE outbox (
    -- AUTOINCREMENT, not a plain rowid alias: a rowid alias restarts at 1 when the outbox
    -- drains, so one seq would name two different ops in logs and in the rejected table
    -- (which keeps the seq an op had here). AUTOINCREMENT never reuses a value.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UUIDv7 made on the device; the server deduplicates on it, so it never changes once
    -- recorded. Generated above MAX(outbox.op_id) and sync_state.last_op_id (see there).
    -- Only the length is checked here and in rejected: a per-character GLOB on the three
    -- UUID columns made a bulk INSERT ~25% slower (measured, 100k rows), and these values
    -- come from our own UUID code, not from input.
    op_id           TEXT    NOT NULL UNIQUE CHECK (length(op_id) = 36),
    -- Set when this op retries a rejected one: the op_id it replaces (see rejected).
    orig_op_id      TEXT    CHECK (orig_op_id IS NULL OR length(orig_op_id) = 36),
    correlation_id  TEXT    NOT NULL CHECK (length(correlation_id) BETWEEN 1 AND 128),
    type            TEXT    NOT NULL CHECK (length(type) BETWEEN 1 AND 32),
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),      -- device clock at the action
    -- The operator; NULL for ops the device makes on its own (event.record from the daemon).
    user_id         TEXT    CHECK (user_id IS NULL OR length(user_id) = 36),
    data            TEXT    NOT NULL CHECK (length(data) BETWEEN 2 AND 65536), -- compact JSON
    -- Effect on the local quantity of sku: the delta for adjust/receive, (counted - local
    -- quantity at recording) for count, 0 for ops that move no stock.
    sku             TEXT    CHECK (sku IS NULL OR length(sku) BETWEEN 1 AND 100),
    qty_delta       INTEGER NOT NULL DEFAULT 0,
    recorded_at_ms  INTEGER NOT NULL CHECK (recorded_at_ms >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0), -- pushes that carried it
    last_attempt_ms INTEGER,
    -- 1 from the moment a push carries the op until a definitive answer: a per-op result, or
    -- a whole-request refusal that guarantees nothing was applied (401/403/413/429/503). An
    -- op in flight may already be applied on the server, so no pull may run while one exists
    -- (its quantity would then be counted twice: once pulled, once pending).
    in_flight       INTEGER NOT NULL DEFAULT 0 CHECK (in_flight IN (0, 1)),
    CHECK (qty_delta = 0 OR sku IS NOT NULL)
) STRICT;

-- Local quantity: SUM(qty_delta) of one SKU's pending ops, read from the index alone.
-- Partial: ops that move no stock (interactions, events) cost no index entry when recorded.
CREATE INDEX outbox_pending_sku ON outbox (sku, qty_delta) WHERE qty_delta <> 0;
-- "May we pull?" = no op in flight; only in-flight rows are in this index, so it stays tiny.
CREATE INDEX outbox_in_flight ON outbox (seq) WHERE in_flight = 1;

-- Ops the server rejected (insufficient_stock, unknown SKU, ...). They stay, visible to the
-- operator, until someone retries or drops them; nothing is dropped silently. A retry cannot
-- reuse the op_id (the server has it recorded as rejected and would answer "duplicate"), so
-- it becomes a new op at the end of the outbox with a new op_id and orig_op_id = this op_id,
-- and this row is deleted in the same transaction. qty_delta is kept for display only: a
-- rejected op no longer counts in the local quantity.
CREATE TABLE rejected (
    seq             INTEGER PRIMARY KEY,  -- the seq it had in the outbox
    op_id           TEXT    NOT NULL UNIQUE CHECK (length(op_id) = 36),
    orig_op_id      TEXT    CHECK (orig_op_id IS NULL OR length(orig_op_id) = 36),
    correlation_id  TEXT    NOT NULL CHECK (length(correlation_id) BETWEEN 1 AND 128),
    type            TEXT    NOT NULL CHECK (length(type) BETWEEN 1 AND 32),
    at_ms           INTEGER NOT NULL CHECK (at_ms >= 0),
    user_id         TEXT    CHECK (user_id IS NULL OR length(user_id) = 36),
    data            TEXT    NOT NULL CHECK (length(data) BETWEEN 2 AND 65536),
    sku             TEXT    CHECK (sku IS NULL OR length(sku) BETWEEN 1 AND 100),
    qty_delta       INTEGER NOT NULL DEFAULT 0,
    recorded_at_ms  INTEGER NOT NULL CHECK (recorded_at_ms >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_attempt_ms INTEGER,
    error_code      TEXT    NOT NULL CHECK (length(error_code) BETWEEN 1 AND 64),
    error_message   TEXT    CHECK (error_message IS NULL OR length(error_message) <= 4096),
    rejected_at_ms  INTEGER NOT NULL CHECK (rejected_at_ms >= 0)
) STRICT;

-- The operator's list: "what did the server refuse for this SKU?"
CREATE INDEX rejected_sku ON rejected (sku) WHERE sku IS NOT NULL;

-- Sync progress: one row, written by the one sync client that runs at a time.
CREATE TABLE sync_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    cursor          TEXT    CHECK (cursor IS NULL OR length(cursor) BETWEEN 1 AND 1024),
    last_attempt_ms INTEGER,
    last_success_ms INTEGER,
    last_error      TEXT    CHECK (last_error IS NULL OR length(last_error) <= 4096),
    last_error_ms   INTEGER,
    -- Highest op_id that has left the outbox (acknowledged or rejected). New op_ids are made
    -- above MAX(this, MAX(outbox.op_id)) inside the recording transaction, so they stay
    -- monotonic across processes, restarts and a device clock that steps back, even when
    -- the outbox has drained. Written at acknowledgement, so recording costs no extra write.
    last_op_id      TEXT    CHECK (last_op_id IS NULL OR length(last_op_id) = 36)
) STRICT;
INSERT INTO sync_state (id) VALUES (1);

-- Where and as whom this device syncs. One row with typed, checked columns rather than a
-- key/value table, so a bad value is refused when it is written, not when sync reads it.
CREATE TABLE settings (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    server_url      TEXT    CHECK (server_url IS NULL OR (length(server_url) <= 2048
                                   AND (server_url GLOB 'https://?*'
                                        OR server_url GLOB 'http://?*')
                                   AND server_url NOT GLOB '*[^!-~]*')),
    -- Printable ASCII without spaces: it goes into log lines and the push envelope.
    device_id       TEXT    CHECK (device_id IS NULL OR (length(device_id) BETWEEN 1 AND 64
                                   AND device_id NOT GLOB '*[^!-~]*')),
    -- Absolute paths: the scanner app and the gateway daemon run from different working
    -- directories, and both must find the same token and CA bundle.
    token_file      TEXT    CHECK (token_file IS NULL OR (length(token_file) BETWEEN 2 AND 4096
                                   AND substr(token_file, 1, 1) = '/')),
    ca_file         TEXT    CHECK (ca_file IS NULL OR (length(ca_file) BETWEEN 2 AND 4096
                                   AND substr(ca_file, 1, 1) = '/')),
    updated_at_ms   INTEGER
) STRICT;
INSERT INTO settings (id) VALUES (1);

-- Reference data pulled from the server. The cache mirrors the server and arrives in pages,
-- in no particular table order, so it has no foreign keys: a page holding an item whose
-- location comes in a later page must not fail.
CREATE TABLE locations (
    location_id     INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    address         TEXT    CHECK (address IS NULL OR length(address) <= 4096),
    is_active       INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1))
) STRICT;

CREATE TABLE items (
    sku             TEXT    PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 100),
    -- The server's row id; NULL for an item received on this device and not pulled yet.
    resource_id     INTEGER,
    name            TEXT    CHECK (name IS NULL OR length(name) <= 255),
    location_id     INTEGER,
    -- Quantity as of the last pull plus this device's ops acknowledged since. No ">= 0"
    -- CHECK: folding an acknowledged count's delta after an earlier op was rejected can
    -- dip below zero until the next pull corrects it, and a CHECK failing there would
    -- block the acknowledgement and with it all sync.
    server_quantity INTEGER NOT NULL DEFAULT 0,
    description     TEXT    CHECK (description IS NULL OR length(description) <= 4096),
    updated_at_ms   INTEGER  -- server's change time of this row
) STRICT;

-- Scanner screens list what is stored at a location.
CREATE INDEX items_location ON items (location_id);

-- Active users and their roles, for offline login and permission checks. Never a password
-- hash: the server does not send them.
CREATE TABLE users (
    user_id         TEXT    PRIMARY KEY CHECK (length(user_id) = 36
                                               AND user_id NOT GLOB '*[^0-9a-f-]*'),
    username        TEXT    NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 255),
    first_name      TEXT    CHECK (first_name IS NULL OR length(first_name) <= 255),
    last_name       TEXT    CHECK (last_name IS NULL OR length(last_name) <= 255),
    roles           TEXT    NOT NULL DEFAULT '[]'
                            CHECK (json_valid(roles) AND json_type(roles) = 'array')
) STRICT;

CREATE TABLE permissions (
    role            TEXT    NOT NULL CHECK (length(role) BETWEEN 1 AND 100),
    permission      TEXT    NOT NULL CHECK (length(permission) BETWEEN 1 AND 100),
    PRIMARY KEY (role, permission)
) STRICT, WITHOUT ROWID;

-- What scanner screens show: the cached item with its local quantity. The correlated SUM
-- is answered by outbox_pending_sku alone.
CREATE VIEW item_quantities AS
SELECT i.sku, i.resource_id, i.name, i.location_id, i.description, i.server_quantity,
       i.server_quantity + COALESCE((SELECT SUM(o.qty_delta) FROM outbox AS o
                                     WHERE o.sku = i.sku AND o.qty_delta <> 0), 0) AS quantity
FROM items AS i;
