/* auth.c - bearer token to device id (see auth.h). */
#include "auth.h"

#include "db.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One round trip: find the device by its token hash, and in the same statement refresh
 * last_seen_at when it is stale. The refresh locks the row with SKIP LOCKED, so a row held by
 * a running batch of this device is simply not refreshed this time (the next request will),
 * and a revoked device is never touched. The outer SELECT sees the row as it was before the
 * refresh, which is all it needs. */
static const char *const AUTH_SQL =
    "WITH d AS ("
    "  SELECT device_id, token_hash, revoked_at IS NULL AS active"
    "    FROM device WHERE token_hash = $1"
    "), touch AS ("
    "  UPDATE device SET last_seen_at = now()"
    "   WHERE device_id IN ("
    "         SELECT x.device_id FROM device x JOIN d ON d.device_id = x.device_id"
    "          WHERE d.active"
    "            AND (x.last_seen_at IS NULL OR x.last_seen_at < now() - interval '1 minute')"
    "            FOR UPDATE OF x SKIP LOCKED)"
    "     AND (last_seen_at IS NULL OR last_seen_at < now() - interval '1 minute')"
    ") "
    "SELECT device_id, token_hash, active FROM d";

static enum mw_err rejected(struct mw_error *err)
{
    return mw_fail(err, MW_EAUTH, "%s", MW_AUTH_REJECTED_MSG);
}

enum mw_err mw_auth_parse_bearer(const char *value, size_t len, char token_out[MW_TOKEN_SIZE],
                                 struct mw_error *err)
{
    static const char scheme[] = "Bearer";
    const size_t scheme_len = sizeof scheme - 1;
    token_out[0] = '\0';
    if (!value || len <= scheme_len || strncasecmp(value, scheme, scheme_len) != 0 ||
        value[scheme_len] != ' ')
        return rejected(err);
    size_t i = scheme_len;
    while (i < len && value[i] == ' ')
        i++;
    size_t start = i;
    while (i < len && value[i] != ' ' && value[i] != '\t')
        i++;
    size_t end = i;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    if (i != len || !mw_token_well_formed(value + start, end - start))
        return rejected(err);
    memcpy(token_out, value + start, end - start);
    token_out[end - start] = '\0';
    return MW_OK;
}

/* The device of a token hash, from the database. */
static enum mw_err device_by_hash(PGconn *conn, const char *hash,
                                  char device_id_out[MW_DEVICE_ID_MAX + 1], struct mw_error *err)
{
    PGresult *res = NULL;
    enum mw_err rc;
    const char *params[1] = {hash};
    rc = mw_db_query(conn, MW_DB_REQUEST, AUTH_SQL, 1, params, &res, err);
    if (rc != MW_OK)
        goto fail;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* The statement is fixed text; the hash is a parameter and never in the message. */
        rc = mw_db_fail(err, conn, res, "authenticate device");
        goto fail;
    }
    if (PQntuples(res) != 1 || PQnfields(res) != 3) {
        rc = rejected(err);
        goto fail;
    }
    const char *id = PQgetvalue(res, 0, 0);
    size_t id_len = (size_t)PQgetlength(res, 0, 0);
    bool match = mw_token_equal(PQgetvalue(res, 0, 1), hash);
    bool active = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    /* The id comes from our own table, whose CHECK has the same rule; checked anyway
     * because it is about to be used as a bounded C string and in log lines. */
    if (!match || !active || !mw_token_device_id_valid(id, id_len)) {
        rc = rejected(err);
        goto fail;
    }
    memcpy(device_id_out, id, id_len);
    device_id_out[id_len] = '\0';
    PQclear(res);
    return MW_OK;

fail:
    PQclear(res);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum mw_err mw_auth_device_cached(struct mw_authcache *cache, PGconn *conn,
                                  const char *bearer_token,
                                  char device_id_out[MW_DEVICE_ID_MAX + 1], struct mw_error *err)
{
    char hash[MW_TOKEN_HASH_SIZE];
    enum mw_err rc;

    device_id_out[0] = '\0';
    /* The shape check costs nothing and keeps junk (and huge headers) away from the
     * database; strnlen bounds the scan of a hostile, unterminated value. */
    if (!bearer_token ||
        !mw_token_well_formed(bearer_token, strnlen(bearer_token, MW_TOKEN_LEN + 1)))
        return rejected(err);
    rc = mw_token_hash(bearer_token, MW_TOKEN_LEN, hash, err);
    if (rc != MW_OK)
        return rc;
    /* The time before the lookup: the entry's life counts from a moment at which the device
     * was certainly still active, so a revocation committed during the lookup is honoured
     * within the ttl as well. */
    int64_t t0 = now_ms();
    if (mw_authcache_get(cache, hash, t0, device_id_out)) {
        rc = MW_OK;
    } else {
        rc = device_by_hash(conn, hash, device_id_out, err);
        if (rc == MW_OK)
            mw_authcache_put(cache, hash, device_id_out, t0);
    }
    mw_token_wipe(hash, sizeof hash);
    return rc;
}

enum mw_err mw_auth_device(PGconn *conn, const char *bearer_token,
                           char device_id_out[MW_DEVICE_ID_MAX + 1], struct mw_error *err)
{
    return mw_auth_device_cached(NULL, conn, bearer_token, device_id_out, err);
}
