/* agent_internal.h - the fields behind the opaque struct mw_agent, for the agent modules that
 * implement the public calls (recording, sync). Not installed; scanner apps never see it.
 * Thread safety: as struct mw_agent, one per thread. */
#ifndef MIDWAY_AGENT_INTERNAL_H
#define MIDWAY_AGENT_INTERNAL_H
#include "midway/agent.h"
#include "store.h"

/* Defaults of the sync options (zero in struct mw_agent_options means these). */
#define MW_AGENT_BATCH_OPS_DEFAULT       500
#define MW_AGENT_BATCH_BYTES_DEFAULT     (1024 * 1024)
/* The smallest push budget: one op with MW_OP_DATA_MAX bytes of data must always fit in an
 * otherwise empty batch, or it could never be sent. */
#define MW_AGENT_BATCH_BYTES_MIN         (128 * 1024)
/* A pull page is held whole in memory, as text and decoded: 1,000 item changes came to about
 * 1 MiB of the agent's peak RSS, a quarter of that leaves a gateway well inside 16 MiB while
 * it drains a backlog and pulls what the drain changed (docs/performance.md). */
#define MW_AGENT_PULL_LIMIT_DEFAULT      250
#define MW_AGENT_CONNECT_TIMEOUT_DEFAULT 10000
/* A 1 MiB batch on a slow uplink plus the server's reconciliation of 500 ops; two minutes is
 * generous for both and still ends a request that hangs on a half-dead connection. */
#define MW_AGENT_REQUEST_TIMEOUT_DEFAULT 120000
#define MW_AGENT_TIMEOUT_MAX             3600000

struct mw_client; /* client.h: the HTTPS connection, reused across requests and syncs */

struct mw_agent {
    struct mw_store *store;      /* owned; the data file */
    struct mw_agent_options opt; /* the options as opened, defaults filled in */
    char *db_path;               /* owned copy; names the sync lock file beside it */
    struct mw_client *client;    /* owned; made by the first sync and kept for the next */
    char *proxy;                 /* owned copy of opt.proxy (which points here), or NULL */
};

#endif
