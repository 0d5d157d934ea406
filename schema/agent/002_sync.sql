-- 002_sync.sql - what syncing needs on top of 001: the server's item ids are UUIDs, a pulled
-- snapshot replaces the cache, and a pending relocate shows in the local view.
--
-- Applied like 001: inside the open transaction, without BEGIN/COMMIT or PRAGMA.

-- items.resource_id holds the server's Inventory.resource_id, which is a UUID (text on the
-- wire), not an integer. A STRICT table cannot change a column's type, so items is rebuilt.
-- gen: see sync_state.snapshot_gen.
DROP VIEW item_quantities;
CREATE TABLE items_v2 (
    sku             TEXT    PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 100),
    -- NULL for an item received on this device and not pulled yet.
    resource_id     TEXT    CHECK (resource_id IS NULL OR length(resource_id) = 36),
    name            TEXT    CHECK (name IS NULL OR length(name) <= 255),
    location_id     INTEGER,
    -- No ">= 0" CHECK, for the reason given in 001.
    server_quantity INTEGER NOT NULL DEFAULT 0,
    description     TEXT    CHECK (description IS NULL OR length(description) <= 4096),
    updated_at_ms   INTEGER,
    gen             INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO items_v2 (sku, name, location_id, server_quantity, description, updated_at_ms)
SELECT sku, name, location_id, server_quantity, description, updated_at_ms FROM items;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;
CREATE INDEX items_location ON items (location_id);

-- A pull without a cursor is a full snapshot that replaces the cache, possibly over several
-- pages. Deleting the cache before the first page would leave scanners without items until
-- the last page arrives (or for good, if the sync is killed in between). Instead each
-- snapshot gets a new generation: every row a page writes takes it, and when the last page
-- has arrived the rows of older generations, which the server no longer has, are deleted.
ALTER TABLE locations ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE permissions ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN snapshot_gen INTEGER NOT NULL DEFAULT 0;
-- 1 from the first page of a snapshot until its last page is applied.
ALTER TABLE sync_state ADD COLUMN snapshot_open INTEGER NOT NULL DEFAULT 0
    CHECK (snapshot_open IN (0, 1));
-- The X-Correlation-ID of the last sync, so `status` points at the server's log lines.
ALTER TABLE sync_state ADD COLUMN last_sync_cid TEXT
    CHECK (last_sync_cid IS NULL OR length(last_sync_cid) = 36);

-- The latest pending relocate of a SKU decides where the local view shows it.
CREATE INDEX outbox_pending_relocate ON outbox (sku, seq) WHERE type = 'inventory.relocate';
-- A rejected op hands its delta to the SKU's next pending count (agent/outbox.c); without
-- this index that lookup would scan the whole backlog.
CREATE INDEX outbox_pending_count ON outbox (sku, seq) WHERE type = 'inventory.count';

-- What scanner screens show: the cached item with its local quantity and location. The same
-- columns as 001's view, plus the server's location at the end.
CREATE VIEW item_quantities AS
SELECT i.sku, i.resource_id, i.name,
       COALESCE((SELECT json_extract(o.data, '$.to_location_id') FROM outbox AS o
                 WHERE o.sku = i.sku AND o.type = 'inventory.relocate'
                 ORDER BY o.seq DESC LIMIT 1), i.location_id) AS location_id,
       i.description, i.server_quantity,
       i.server_quantity + COALESCE((SELECT SUM(o.qty_delta) FROM outbox AS o
                                     WHERE o.sku = i.sku AND o.qty_delta <> 0), 0) AS quantity,
       i.location_id AS server_location_id
FROM items AS i;
