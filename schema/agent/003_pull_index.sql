-- 003_pull_index.sql - an index for applying pulled items.
--
-- Applied like 001: inside the open transaction, without BEGIN/COMMIT or PRAGMA.

-- Every pulled item first removes a row that holds its resource under another SKU (a SKU
-- renamed on the server; agent/cache.c). Without an index that lookup read the whole items
-- table once per pulled item: a 15,000-item snapshot cost about 90 ms per page of 250 on a
-- gateway, 5 s in all, where the page's own writes take a few milliseconds.
CREATE INDEX items_resource ON items (resource_id) WHERE resource_id IS NOT NULL;
