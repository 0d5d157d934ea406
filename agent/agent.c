/* agent.c - the public lifecycle calls of libmidway-agent (see midway/agent.h). */
#include "agent_internal.h"

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
    mw_store_close(a->store);
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
