/* scanner_app.c - how a handheld scanner app uses libmidway-agent (docs/agent.md shows it).
 * Each scan records an op at once, online or not; when the device is set up for sync (by
 * `midway-agent init` on the same data file) it also tries to sync, and being offline is not
 * an error: the op waits in the outbox.
 *
 *   usage: scanner_app DATA_FILE USERNAME SKU DELTA
 *   exit:  0 recorded, 1 refused (unknown user or SKU, bad input), 2 storage or usage error */
#include <midway/agent.h>

#include <stdio.h>
#include <stdlib.h>

static int show(void *ctx, const struct mw_agent_item *it)
{
    (void)ctx;
    printf("%s: %lld on the shelf (%s)\n", it->sku, (long long)it->quantity,
           it->location_name ? it->location_name : "location not cached");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: scanner_app DATA_FILE USERNAME SKU DELTA\n");
        return 2;
    }
    struct mw_agent *agent = NULL;
    struct mw_error err = {0};

    /* One agent per thread; the data file may be shared with other processes. */
    if (mw_agent_open(argv[1], NULL, &agent, &err) != MW_OK) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], err.msg);
        return 2;
    }

    /* The scan: who, and what. The correlation id and the time are made for us. */
    struct mw_agent_meta who = {argv[2], NULL, 0};
    struct mw_agent_receipt saved;
    int delta = (int)strtol(argv[4], NULL, 10);
    enum mw_err rc = mw_agent_record_adjust(agent, &who, argv[3], delta, "scan", &saved, &err);
    if (rc == MW_ENOTFOUND || rc == MW_EMALFORMED) {
        /* Refused before anything was written: tell the operator why. */
        printf("not recorded: %s\n", err.msg);
        mw_agent_close(agent);
        return 1;
    }
    if (rc != MW_OK) {
        /* MW_EFULL: the device must sync (or be emptied) before it records more. */
        fprintf(stderr, "not recorded (%s): %s\n", mw_err_name(rc), err.msg);
        mw_agent_close(agent);
        return 2;
    }
    printf("saved op %s\n", saved.op_id);

    /* Sync now if this device was set up for it; offline is fine, the op stays queued. */
    struct mw_agent_settings *settings = malloc(sizeof *settings);
    if (settings && mw_agent_settings_get(agent, settings, &err) == MW_OK &&
        settings->server_url[0]) {
        struct mw_agent_sync_result res;
        rc = mw_agent_sync(agent, NULL, NULL, &res, &err);
        if (res.outcome == MW_AGENT_SYNC_UNREACHABLE)
            printf("offline: %s stays queued\n", saved.op_id);
        else if (rc != MW_OK)
            fprintf(stderr, "sync: %s\n", err.msg);
        else
            printf("synced: %lld applied, %lld rejected\n", (long long)res.applied,
                   (long long)res.rejected);
    }
    free(settings);

    /* What the screen shows: the local view, right whether or not the op was sent yet. */
    if (mw_agent_items(agent, argv[3], show, NULL, &err) != MW_OK)
        fprintf(stderr, "items: %s\n", err.msg);
    mw_agent_close(agent);
    return 0;
}
