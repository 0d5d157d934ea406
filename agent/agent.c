/* agent.c - the public lifecycle calls of libmidway-agent (see midway/agent.h). */
#include "agent_internal.h"

#include "bounds.h"
#include "client.h"
#include "mem.h"

#include <string.h>

/* The header and the build must agree on the version; bump both together. */
#define AGENT_VERSION MW_AGENT_VERSION

/* Copies the caller's options into *o (zeroed = defaults) whatever size of the struct the
 * caller was compiled with: a shorter struct leaves our newer fields at their defaults, a
 * longer one is accepted only if the fields we do not know are zero, so an option the app
 * relies on is never silently ignored. */
static enum mw_err copy_options(const struct mw_agent_options *opt, struct mw_agent_options *o,
                                struct mw_error *err)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    if (!opt)
        return MW_OK;
    size_t n = opt->struct_size;
    if (n < sizeof(opt->struct_size))
        return mw_fail(err, MW_EINVAL,
                       "agent options: struct_size %zu is too small (start from "
                       "MW_AGENT_OPTIONS_INIT)",
                       n);
    if (n > sizeof(*o)) {
        const unsigned char *extra = (const unsigned char *)opt + sizeof(*o);
        for (size_t i = 0; i < n - sizeof(*o); i++) {
            if (extra[i] != 0)
                return mw_fail(err, MW_EINVAL,
                               "agent options: set fields this library (%s) does not know; "
                               "upgrade libmidway-agent",
                               AGENT_VERSION);
        }
        n = sizeof(*o);
    }
    memcpy(o, opt, n);
    o->struct_size = sizeof(*o);
    return MW_OK;
}

/* Checks the sync options and replaces zeros by their defaults. */
static enum mw_err fill_sync_defaults(struct mw_agent_options *o, struct mw_error *err)
{
    if (o->max_outbox_ops < 0)
        return mw_fail(err, MW_EINVAL, "agent options: negative max_outbox_ops");
    if (o->max_outbox_ops == 0)
        o->max_outbox_ops = MW_AGENT_OUTBOX_DEFAULT;
    if (o->batch_max_ops < 0 || o->batch_max_ops > (int32_t)MW_OPS_PER_BATCH_MAX)
        return mw_fail(err, MW_EINVAL, "agent options: batch_max_ops %d outside 1..%u",
                       (int)o->batch_max_ops, MW_OPS_PER_BATCH_MAX);
    if (o->batch_max_ops == 0)
        o->batch_max_ops = MW_AGENT_BATCH_OPS_DEFAULT;
    if (o->batch_max_bytes == 0)
        o->batch_max_bytes = MW_AGENT_BATCH_BYTES_DEFAULT;
    if (o->batch_max_bytes < MW_AGENT_BATCH_BYTES_MIN ||
        o->batch_max_bytes > (int64_t)MW_PUSH_BODY_MAX)
        return mw_fail(err, MW_EINVAL, "agent options: batch_max_bytes %lld outside %d..%u",
                       (long long)o->batch_max_bytes, MW_AGENT_BATCH_BYTES_MIN, MW_PUSH_BODY_MAX);
    if (o->pull_limit < 0 || o->pull_limit > (int32_t)MW_PULL_LIMIT_MAX)
        return mw_fail(err, MW_EINVAL, "agent options: pull_limit %d outside 1..%u",
                       (int)o->pull_limit, MW_PULL_LIMIT_MAX);
    if (o->pull_limit == 0)
        o->pull_limit = MW_AGENT_PULL_LIMIT_DEFAULT;
    if (o->connect_timeout_ms < 0 || o->connect_timeout_ms > MW_AGENT_TIMEOUT_MAX ||
        o->request_timeout_ms < 0 || o->request_timeout_ms > MW_AGENT_TIMEOUT_MAX)
        return mw_fail(err, MW_EINVAL, "agent options: a timeout outside 0..%d ms",
                       MW_AGENT_TIMEOUT_MAX);
    if (o->connect_timeout_ms == 0)
        o->connect_timeout_ms = MW_AGENT_CONNECT_TIMEOUT_DEFAULT;
    if (o->request_timeout_ms == 0)
        o->request_timeout_ms = MW_AGENT_REQUEST_TIMEOUT_DEFAULT;
    if (o->proxy && !o->proxy[0])
        o->proxy = NULL;
    if (o->proxy) {
        size_t n = strlen(o->proxy);
        if (n > MW_AGENT_URL_MAX)
            return mw_fail(err, MW_EINVAL, "agent options: proxy longer than %d bytes",
                           MW_AGENT_URL_MAX);
        for (size_t i = 0; i < n; i++) {
            if (o->proxy[i] <= ' ' || o->proxy[i] >= 0x7f)
                return mw_fail(err, MW_EINVAL,
                               "agent options: proxy must be a URL in printable ASCII");
        }
    }
    return MW_OK;
}

enum mw_err mw_agent_open(const char *db_path, const struct mw_agent_options *opt,
                          struct mw_agent **out, struct mw_error *err)
{
    struct mw_agent *a = NULL;
    struct mw_agent_options o;
    enum mw_err rc;

    if (out)
        *out = NULL;
    if (!db_path || !db_path[0] || !out)
        return mw_fail(err, MW_EINVAL, "open agent: db_path and out are required");
    rc = copy_options(opt, &o, err);
    if (rc != MW_OK)
        return rc;
    if (o.durability != MW_AGENT_DURABILITY_FULL && o.durability != MW_AGENT_DURABILITY_NORMAL)
        return mw_fail(err, MW_EINVAL, "agent options: unknown durability %d", (int)o.durability);
    if (o.max_file_bytes < 0)
        return mw_fail(err, MW_EINVAL, "agent options: negative max_file_bytes");
    rc = fill_sync_defaults(&o, err);
    if (rc != MW_OK)
        return rc;

    struct mw_store_options so = {0};
    so.synchronous =
        o.durability == MW_AGENT_DURABILITY_NORMAL ? MW_STORE_SYNC_NORMAL : MW_STORE_SYNC_FULL;
    so.busy_timeout_ms = o.busy_timeout_ms;
    so.max_bytes = o.max_file_bytes;

    rc = MW_ENOMEM;
    a = mw_calloc(1, sizeof(*a));
    if (!a)
        goto fail;
    a->opt = o;
    a->db_path = mw_strdup(db_path);
    if (!a->db_path)
        goto fail;
    if (o.proxy) {
        a->proxy = mw_strdup(o.proxy); /* the caller's string is only borrowed */
        if (!a->proxy)
            goto fail;
    }
    a->opt.proxy = a->proxy;
    rc = mw_store_open(db_path, &so, &a->store, err);
    if (rc != MW_OK)
        goto fail;

    *out = a; /* ownership moves to the caller only on success */
    return MW_OK;
fail:
    mw_agent_close(a);
    return mw_fail(err, rc, "open agent");
}

void mw_agent_close(struct mw_agent *a)
{
    if (!a)
        return;
    mw_client_free(a->client);
    mw_store_close(a->store);
    mw_free(a->db_path);
    mw_free(a->proxy);
    mw_free(a);
}

const char *mw_agent_version(void)
{
    return AGENT_VERSION;
}

int mw_agent_schema_version(const struct mw_agent *a)
{
    return a ? mw_store_schema_version(a->store) : 0;
}
