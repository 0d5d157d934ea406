/* admin_stock.c - location add and item add (see admin.h). */
#include "admin_internal.h"
#include "ledger.h"
#include "timestamp.h"
#include "bounds.h"
#include "db.h"
#include "midway/log.h"
#include "uuid.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The key (location_id SERIAL) and the quantity (INT) are PostgreSQL integers. */
#define PG_INT_MAX INT32_MAX

int mw_admin_stock_location_add(const struct mw_admin_cmd *c)
{
    struct mw_admin_db db = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    int rc;

    if (!c->name)
        return mw_admin_usage(c, "--name is required (see --help)");
    if (!mw_admin_text_ok(c->name, 1, MW_LOCATION_NAME_MAX, false))
        return mw_admin_usage(c,
                              "--name must be 1..%u bytes of UTF-8 text without control "
                              "characters",
                              MW_LOCATION_NAME_MAX);
    /* An empty --address means "none", stored as NULL like an absent one. */
    const char *address = c->address && c->address[0] ? c->address : NULL;
    if (address && !mw_admin_text_ok(address, 1, MW_FREE_TEXT_MAX, true))
        return mw_admin_usage(c, "--address must be at most %u bytes of UTF-8 text",
                              MW_FREE_TEXT_MAX);

    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    const char *params[2] = {c->name, address};
    res = mw_admin_query(db.conn,
                         "INSERT INTO locations (location_name, address) VALUES ($1, $2)"
                         " RETURNING location_id",
                         2, params, &bad);
    int64_t id = 0;
    if (!res) {
        rc = mw_admin_db_failed(c, db.conn, bad, "insert location");
        goto done;
    }
    if (PQntuples(res) != 1 || !mw_admin_parse_int(PQgetvalue(res, 0, 0), 1, PG_INT_MAX, &id)) {
        rc = mw_admin_failed(c, "insert location: unexpected result");
        goto done;
    }
    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddNumberToObject(out, "location_id", (double)id) ||
                    !cJSON_AddStringToObject(out, "name", c->name) ||
                    !(address ? cJSON_AddStringToObject(out, "address", address)
                              : cJSON_AddNullToObject(out, "address")))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else {
        char shown[64];
        printf("Location %" PRId64 " '%s' added.\n", id,
               mw_admin_printable(c->name, shown, sizeof shown));
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}

/* SKUs are scanned from labels and typed on handhelds: text without control characters,
 * and without leading or trailing spaces, which no one can see on a label or a screen and
 * which would make "A-1" and "A-1 " two items. */
static bool sku_ok(const char *s)
{
    if (!mw_admin_text_ok(s, 1, MW_SKU_MAX, false))
        return false;
    size_t n = strlen(s);
    return s[0] != ' ' && s[n - 1] != ' ';
}

int mw_admin_stock_item_add(const struct mw_admin_cmd *c)
{
    struct mw_admin_db db = {0};
    struct mw_error err = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    bool in_tx = false;
    int64_t location_id = 0;
    int64_t quantity = 0;
    char resource_id[MW_UUID_STR_SIZE];
    int rc;

    if (!c->sku)
        return mw_admin_usage(c, "--sku is required (see --help)");
    if (!sku_ok(c->sku))
        return mw_admin_usage(c,
                              "--sku must be 1..%u bytes of UTF-8 text without control "
                              "characters or surrounding spaces",
                              MW_SKU_MAX);
    if (!c->name)
        return mw_admin_usage(c, "--name is required (see --help)");
    if (!mw_admin_text_ok(c->name, 1, MW_ITEM_NAME_MAX, false))
        return mw_admin_usage(c,
                              "--name must be 1..%u bytes of UTF-8 text without control "
                              "characters",
                              MW_ITEM_NAME_MAX);
    if (!c->location)
        return mw_admin_usage(c, "--location is required (see --help)");
    if (!mw_admin_parse_int(c->location, 1, PG_INT_MAX, &location_id))
        return mw_admin_usage(c, "--location must be a location id: an integer 1..%d", PG_INT_MAX);
    if (!c->quantity)
        return mw_admin_usage(c, "--quantity is required (see --help)");
    if (!mw_admin_parse_int(c->quantity, 0, PG_INT_MAX, &quantity))
        return mw_admin_usage(c, "--quantity must be an integer 0..%d", PG_INT_MAX);

    struct mw_uuid rid;
    if (mw_uuid_v7(&rid, &err) != MW_OK)
        return mw_admin_failed(c, "%s", err.msg);
    mw_uuid_format(&rid, resource_id);

    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    rc = mw_admin_tx(c, db.conn, "BEGIN");
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;
    in_tx = true;

    /* FOR SHARE: the location cannot be retired or removed until the item is in. */
    char lid_text[24];
    snprintf(lid_text, sizeof lid_text, "%" PRId64, location_id);
    const char *lparams[1] = {lid_text};
    res = mw_admin_query(db.conn,
                         "SELECT is_active FROM locations WHERE location_id = $1::int FOR SHARE", 1,
                         lparams, &bad);
    if (!res) {
        rc = mw_admin_db_failed(c, db.conn, bad, "look up location");
        goto done;
    }
    if (PQntuples(res) == 0) {
        rc = mw_admin_usage(c, "no location with id %" PRId64 " (create it with 'location add')",
                            location_id);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        rc = mw_admin_usage(c, "location %" PRId64 " is retired (is_active = false)", location_id);
        goto done;
    }
    PQclear(res);
    res = NULL;

    /* The item and its first ledger row in one statement: the initial quantity is a
     * 'receive' movement of delta Q like any later receipt, so the ledger explains every
     * quantity from the start (no op_id: it came from no device). */
    char qty_text[24], loc_text[24];
    snprintf(qty_text, sizeof qty_text, "%" PRId64, quantity);
    snprintf(loc_text, sizeof loc_text, "%" PRId64, location_id);
    const char *params[5] = {resource_id, c->sku, c->name, qty_text, loc_text};
    res = mw_admin_query(db.conn,
                         "WITH i AS ("
                         "  INSERT INTO inventory (resource_id, item_sku, item_name, quantity,"
                         "                         location_id)"
                         "  VALUES ($1::uuid, $2, $3, $4::int, $5::int)"
                         "  RETURNING resource_id, quantity, location_id"
                         ") INSERT INTO inventory_ledger (resource_id, kind, delta, quantity_after,"
                         "                                location_id, event_at)"
                         " SELECT resource_id, 'receive', quantity, quantity, location_id, now()"
                         "   FROM i",
                         5, params, &bad);
    if (!res) {
        if (strcmp(mw_admin_sqlstate(bad), "23505") == 0 &&
            strcmp(mw_admin_constraint(bad), "inventory_item_sku_key") == 0) {
            char shown[64];
            rc = mw_admin_usage(c, "an item with SKU '%s' already exists",
                                mw_admin_printable(c->sku, shown, sizeof shown));
        } else {
            rc = mw_admin_db_failed(c, db.conn, bad, "insert item");
        }
        goto done;
    }
    rc = mw_admin_tx(c, db.conn, "COMMIT");
    in_tx = false;
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;

    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "resource_id", resource_id) ||
                    !cJSON_AddStringToObject(out, "sku", c->sku) ||
                    !cJSON_AddStringToObject(out, "name", c->name) ||
                    !cJSON_AddNumberToObject(out, "location_id", (double)location_id) ||
                    !cJSON_AddNumberToObject(out, "quantity", (double)quantity))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else {
        char sku[64], name[64];
        printf("Item %s '%s' added at location %" PRId64 " with quantity %" PRId64
               " (resource_id %s).\n",
               mw_admin_printable(c->sku, sku, sizeof sku),
               mw_admin_printable(c->name, name, sizeof name), location_id, quantity, resource_id);
    }

done:
    if (in_tx) {
        /* Closing the connection would roll back too; saying so keeps the server's log clean. */
        struct mw_error ignored = {0};
        if (mw_db_exec(db.conn, "ROLLBACK", &ignored) != MW_OK)
            MW_LOG(MW_LOG_DEBUG, NULL, "rollback: %s", ignored.msg);
    }
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}

/* ---- item history ------------------------------------------------------------------------ */

struct history_out {
    const struct mw_admin_cmd *cmd;
    cJSON *movements; /* --json: collected here; else printed as they come */
    bool oom;
    bool header_done;
};

static void time_text(int64_t ms, char out[MW_TIMESTAMP_LEN])
{
    struct mw_error ignored = {0};
    if (mw_timestamp_format(ms, out, &ignored) != MW_OK)
        snprintf(out, MW_TIMESTAMP_LEN, "?");
}

static int print_movement(const struct mw_ledger_entry *e, void *arg)
{
    struct history_out *h = arg;
    char event_at[MW_TIMESTAMP_LEN], applied_at[MW_TIMESTAMP_LEN];
    time_text(e->event_at_ms, event_at);
    time_text(e->applied_at_ms, applied_at);
    if (h->movements) {
        cJSON *m = cJSON_CreateObject();
        bool ok = m && cJSON_AddStringToObject(m, "kind", e->kind) &&
                  cJSON_AddNumberToObject(m, "delta", e->delta) &&
                  cJSON_AddNumberToObject(m, "quantity_after", e->quantity_after) &&
                  cJSON_AddNumberToObject(m, "location_id", e->location_id) &&
                  cJSON_AddStringToObject(m, "event_at", event_at) &&
                  cJSON_AddStringToObject(m, "applied_at", applied_at);
        const char *keys[] = {"user_id", "username", "device_id", "op_id", "correlation_id"};
        const char *vals[] = {e->user_id, e->username, e->device_id, e->op_id,
                              e->correlation_id};
        for (size_t i = 0; ok && i < 5; i++)
            ok = vals[i] ? cJSON_AddStringToObject(m, keys[i], vals[i]) != NULL
                         : cJSON_AddNullToObject(m, keys[i]) != NULL;
        if (!ok || !cJSON_AddItemToArray(h->movements, m)) {
            cJSON_Delete(m);
            h->oom = true;
            return 1;
        }
        return 0;
    }
    if (!h->header_done) {
        printf("%-24s  %-8s %7s    %-7s %-16s %-22s %s\n", "event time", "kind", "delta",
               "after", "user", "device", "correlation id");
        h->header_done = true;
    }
    char who[64], dev[80];
    printf("%s  %-8s %+7d -> %-7d %-16s %-22s cid=%s\n", event_at, e->kind, e->delta,
           e->quantity_after, mw_admin_printable(e->username ? e->username : "-", who, sizeof who),
           mw_admin_printable(e->device_id ? e->device_id : "(admin)", dev, sizeof dev),
           e->correlation_id ? e->correlation_id : "-");
    return 0;
}

int mw_admin_stock_item_history(const struct mw_admin_cmd *c)
{
    if (!c->sku)
        return mw_admin_usage(c, "--sku is required (see --help)");
    if (!sku_ok(c->sku))
        return mw_admin_usage(c, "--sku must be 1..%u bytes of UTF-8 text without control "
                                 "characters or surrounding spaces",
                              MW_SKU_MAX);
    struct mw_admin_db db = {0};
    int rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    struct history_out h = {.cmd = c, .movements = c->json ? cJSON_CreateArray() : NULL};
    if (c->json && !h.movements) {
        mw_admin_disconnect(&db);
        return mw_admin_failed(c, "out of memory");
    }
    struct mw_ledger_item item;
    struct mw_error err = {0};
    enum mw_err lrc = mw_ledger_history(db.conn, c->sku, print_movement, &h, &item, &err);
    mw_admin_disconnect(&db);
    if (lrc == MW_ENOTFOUND) {
        cJSON_Delete(h.movements);
        char shown[64];
        return mw_admin_failed(c, "no item with SKU '%s'",
                               mw_admin_printable(c->sku, shown, sizeof shown));
    }
    if (lrc != MW_OK || h.oom) {
        cJSON_Delete(h.movements);
        return mw_admin_failed(c, "%s", h.oom ? "out of memory" : err.msg);
    }
    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "resource_id", item.resource_id) ||
                    !cJSON_AddStringToObject(out, "sku", item.sku) ||
                    !cJSON_AddStringToObject(out, "name", item.name) ||
                    !cJSON_AddNumberToObject(out, "quantity", item.quantity) ||
                    !cJSON_AddNumberToObject(out, "ledger_sum", (double)item.ledger_sum) ||
                    !cJSON_AddItemToObject(out, "movements", h.movements))) {
            cJSON_Delete(out);
            cJSON_Delete(h.movements);
            out = NULL;
        }
        return mw_admin_print_json(c, out);
    }
    char name[128];
    printf("%s (%s): quantity %d, ledger explains %lld over %zu movement(s)%s\n", item.sku,
           mw_admin_printable(item.name, name, sizeof name), item.quantity,
           (long long)item.ledger_sum, item.entries,
           item.ledger_sum == item.quantity ? "" : "  <-- MISMATCH");
    return MW_ADMIN_EXIT_OK;
}
