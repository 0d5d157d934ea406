/* admin_device.c - device add, list and revoke (see admin.h). */
#include "admin_internal.h"
#include "token.h"

#include <stdio.h>
#include <string.h>

/* device.name: CHECK (char_length(name) <= 200), counted in characters like the CHECK. */
#define DEVICE_NAME_MAX_CHARS 200u
/* ... and at most 4 bytes per character in UTF-8. */
#define DEVICE_NAME_MAX_BYTES (4u * DEVICE_NAME_MAX_CHARS)

/* Epoch milliseconds of a timestamptz column: the session's time zone never enters. */
#define MS(col) "floor(extract(epoch FROM " col ") * 1000)::int8"

int mw_admin_device_add(const struct mw_admin_cmd *c)
{
    char id[MW_DEVICE_ID_MAX + 1];
    char token[MW_TOKEN_SIZE] = "";
    char hash[MW_TOKEN_HASH_SIZE] = "";
    struct mw_admin_db db = {0};
    struct mw_error err = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    cJSON *out = NULL;
    int rc;

    if (!c->name)
        return mw_admin_usage(c, "--name is required (see --help)");
    if (!mw_admin_text_ok(c->name, 1, DEVICE_NAME_MAX_BYTES, false) ||
        mw_admin_chars(c->name) > DEVICE_NAME_MAX_CHARS)
        return mw_admin_usage(c,
                              "--name must be 1..%u characters of UTF-8 text without control "
                              "characters",
                              DEVICE_NAME_MAX_CHARS);
    if (!c->kind)
        return mw_admin_usage(c, "--kind is required: scanner or gateway");
    if (strcmp(c->kind, "scanner") != 0 && strcmp(c->kind, "gateway") != 0)
        return mw_admin_usage(c, "--kind must be scanner or gateway");
    if (c->id) {
        if (!mw_token_device_id_valid(c->id, strnlen(c->id, MW_DEVICE_ID_MAX + 1)))
            return mw_admin_usage(c, "--id must be 1..%u of A-Z, a-z, 0-9, '.', '_' and '-'",
                                  MW_DEVICE_ID_MAX);
        memcpy(id, c->id, strlen(c->id) + 1);
    } else if (mw_token_device_id(id, &err) != MW_OK) {
        return mw_admin_failed(c, "%s", err.msg);
    }
    if (mw_token_generate(token, &err) != MW_OK ||
        mw_token_hash(token, MW_TOKEN_LEN, hash, &err) != MW_OK)
        return mw_admin_failed(c, "%s", err.msg);

    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;
    const char *params[4] = {id, c->name, c->kind, hash};
    res = mw_admin_query(db.conn,
                         "INSERT INTO device (device_id, name, kind, token_hash)"
                         " VALUES ($1, $2, $3, $4) RETURNING " MS("created_at"),
                         4, params, &bad);
    if (!res) {
        if (strcmp(mw_admin_sqlstate(bad), "23505") == 0 &&
            strcmp(mw_admin_constraint(bad), "device_pkey") == 0)
            rc = c->id ? mw_admin_usage(c, "a device with id '%s' already exists", id)
                       : mw_admin_failed(c, "generated device id '%s' is taken; run again", id);
        else
            rc = mw_admin_db_failed(c, db.conn, bad, "insert device");
        goto done;
    }
    char created[32];
    if (PQntuples(res) != 1 || !mw_admin_time_text(res, 0, 0, created)) {
        rc = mw_admin_failed(c, "insert device: unexpected result");
        goto done;
    }

    if (c->json) {
        out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "device_id", id) ||
                    !cJSON_AddStringToObject(out, "name", c->name) ||
                    !cJSON_AddStringToObject(out, "kind", c->kind) ||
                    !cJSON_AddStringToObject(out, "token", token) ||
                    !cJSON_AddStringToObject(out, "created_at", created))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
        out = NULL;
        if (rc != MW_ADMIN_EXIT_OK)
            rc = mw_admin_failed(c,
                                 "device '%s' was registered but its token could not be "
                                 "shown: revoke it and add it again",
                                 id);
    } else {
        char shown[80];
        printf("Registered %s '%s' as device %s.\n", c->kind,
               mw_admin_printable(c->name, shown, sizeof shown), id);
        printf("device_id: %s\n", id);
        printf("token:     %s\n", token);
        printf("The token is shown only now: put it into the device's configuration. A lost "
               "token cannot be recovered; revoke the device and add it again.\n");
        rc = MW_ADMIN_EXIT_OK;
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    mw_token_wipe(token, sizeof token);
    mw_token_wipe(hash, sizeof hash);
    return rc;
}

static const char *const LIST_SQL = "SELECT device_id, name, kind,"
                                    "       floor(extract(epoch FROM created_at) * 1000)::int8,"
                                    "       floor(extract(epoch FROM last_seen_at) * 1000)::int8,"
                                    "       floor(extract(epoch FROM revoked_at) * 1000)::int8"
                                    "  FROM device ORDER BY created_at, device_id";

int mw_admin_device_list(const struct mw_admin_cmd *c)
{
    struct mw_admin_db db = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    cJSON *out = NULL;
    int rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    res = mw_admin_query(db.conn, LIST_SQL, 0, NULL, &bad);
    if (!res) {
        rc = mw_admin_db_failed(c, db.conn, bad, "list devices");
        goto done;
    }
    int n = PQntuples(res);
    if (c->json) {
        out = cJSON_CreateObject();
        cJSON *arr = out ? cJSON_AddArrayToObject(out, "devices") : NULL;
        for (int i = 0; arr && i < n; i++) {
            cJSON *d = cJSON_CreateObject();
            if (!d || !cJSON_AddItemToArray(arr, d)) {
                cJSON_Delete(d);
                arr = NULL;
                break;
            }
            if (!cJSON_AddStringToObject(d, "device_id", PQgetvalue(res, i, 0)) ||
                !cJSON_AddStringToObject(d, "name", PQgetvalue(res, i, 1)) ||
                !cJSON_AddStringToObject(d, "kind", PQgetvalue(res, i, 2)) ||
                !mw_admin_json_time(d, "created_at", res, i, 3) ||
                !mw_admin_json_time(d, "last_seen_at", res, i, 4) ||
                !mw_admin_json_time(d, "revoked_at", res, i, 5))
                arr = NULL;
        }
        if (!arr) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
        out = NULL;
        goto done;
    }

    if (n == 0) {
        printf("No devices. Register one with 'midway-server device add'.\n");
        goto done;
    }
    printf("%-24s %-8s %-24s %-24s %-24s %s\n", "DEVICE_ID", "KIND", "CREATED", "LAST_SEEN",
           "REVOKED", "NAME");
    for (int i = 0; i < n; i++) {
        char created[32], seen[32], revoked[32], name[64];
        if (!mw_admin_time_text(res, i, 3, created) || !mw_admin_time_text(res, i, 4, seen) ||
            !mw_admin_time_text(res, i, 5, revoked)) {
            rc = mw_admin_failed(c, "list devices: unexpected time value");
            goto done;
        }
        printf("%-24s %-8s %-24s %-24s %-24s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 2),
               created, seen[0] ? seen : "-", revoked[0] ? revoked : "-",
               mw_admin_printable(PQgetvalue(res, i, 1), name, sizeof name));
    }
    printf("%d device%s.\n", n, n == 1 ? "" : "s");

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}

int mw_admin_device_revoke(const struct mw_admin_cmd *c)
{
    struct mw_admin_db db = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    const char *id = c->arg;
    bool already = false;
    int rc;

    if (!id || !mw_token_device_id_valid(id, strnlen(id, MW_DEVICE_ID_MAX + 1)))
        return mw_admin_usage(c, "DEVICE_ID must be 1..%u of A-Z, a-z, 0-9, '.', '_' and '-'",
                              MW_DEVICE_ID_MAX);
    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    const char *params[1] = {id};
    /* Only an unrevoked row is written, so the first revocation time is the one kept. */
    res = mw_admin_query(db.conn,
                         "UPDATE device SET revoked_at = now()"
                         " WHERE device_id = $1 AND revoked_at IS NULL"
                         " RETURNING " MS("revoked_at"),
                         1, params, &bad);
    if (!res) {
        rc = mw_admin_db_failed(c, db.conn, bad, "revoke device");
        goto done;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        res =
            mw_admin_query(db.conn, "SELECT " MS("revoked_at") " FROM device WHERE device_id = $1",
                           1, params, &bad);
        if (!res) {
            rc = mw_admin_db_failed(c, db.conn, bad, "revoke device");
            goto done;
        }
        if (PQntuples(res) == 0) {
            rc = mw_admin_failed(c, "no device with id '%s' (see 'device list')", id);
            goto done;
        }
        already = true;
    }
    char when[32];
    if (PQntuples(res) != 1 || !mw_admin_time_text(res, 0, 0, when) || when[0] == '\0') {
        rc = mw_admin_failed(c, "revoke device: unexpected result");
        goto done;
    }
    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "device_id", id) ||
                    !cJSON_AddStringToObject(out, "revoked_at", when) ||
                    !cJSON_AddBoolToObject(out, "already_revoked", already))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else if (already) {
        printf("Device %s was already revoked at %s.\n", id, when);
    } else {
        printf("Device %s revoked at %s: its token is refused from now on.\n", id, when);
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}
