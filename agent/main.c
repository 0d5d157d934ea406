/* main.c - the midway-agent command line: record ops, sync, show status, items and rejected
 * ops, and run the gateway daemon. Everything lives in one data directory (--data DIR):
 * DIR/agent.db (the data file) and optionally DIR/agent.conf (settings for sync and the
 * daemon; see docs/agent.md).
 * Exit codes: 0 success; 1 refused or failed (the reason is printed); 2 usage error;
 * sync: 3 done but some ops were rejected, 4 server unreachable (nothing lost, everything still
 * queued), 5 the server refused the device's token, 6 local storage error (also for recording:
 * data file full, locked or failing). */
#include "conf.h"
#include "daemon.h"
#include "json.h"
#include "midway/agent.h"
#include "midway/log.h"
#include "timestamp.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_FAIL    1
#define EXIT_USAGE   2
#define EXIT_STORAGE 6

static const char *const usage_text =
    "usage: midway-agent --data DIR COMMAND [FLAGS]\n"
    "\n"
    "Records warehouse operations on this device, online or not, and syncs them with the\n"
    "Midway server. DIR holds the data file (agent.db) and an optional agent.conf.\n"
    "\n"
    "Commands:\n"
    "  init       store the server URL, device id, token file and CA\n"
    "  adjust     record inventory.adjust   (--sku S --delta D --user U [--reason R])\n"
    "  count      record inventory.count    (--sku S --counted N --user U)\n"
    "  relocate   record inventory.relocate (--sku S --to LOCATION --user U)\n"
    "  receive    record inventory.receive  (--sku S --quantity N --location L --user U ...)\n"
    "  interact   record interaction.record (--action A --user U ...)\n"
    "  allocate   record allocation.record  (--sku S --need N --user U ...)\n"
    "  event      record event.record       (--source S --type T --details JSON --user U)\n"
    "  sync       push every pending op, then pull reference data\n"
    "  status     outbox depth, rejected count, last sync, last error, cursor\n"
    "  items      cached items with their local quantity\n"
    "  rejected   list rejected ops; `rejected retry OP_ID`, `rejected drop OP_ID`\n"
    "  run        the gateway daemon: sync when there is work and on an interval\n"
    "\n"
    "Global flags (before the command):\n"
    "  --data DIR        data directory (default: $MIDWAY_AGENT_DATA)\n"
    "  --config FILE     settings file (default: DIR/agent.conf when it exists)\n"
    "  --log-level L     error, warn, info or debug (default: warn; info for run)\n"
    "\n"
    "Exit codes: 0 ok, 1 refused or failed, 2 usage, and for sync: 3 done but some ops were\n"
    "rejected, 4 server unreachable (nothing lost), 5 token refused, 6 local storage error.\n"
    "Run 'midway-agent COMMAND --help' for a command's flags.\n";

/* ---- settings file ------------------------------------------------------------------------ */

struct agent_conf {
    char *durability;
    char *log_level;
    int64_t max_file_size;
    int64_t outbox_limit;
    int64_t busy_timeout;
    int64_t batch_ops;
    int64_t batch_bytes;
    int64_t pull_limit;
    int64_t connect_timeout;
    int64_t request_timeout;
    char *proxy;
    int64_t sync_interval;
    int64_t poll_interval;
    int64_t backoff_min;
    int64_t backoff_max;
};

#define OFF(f) offsetof(struct agent_conf, f)
static const struct mw_conf_entry conf_table[] = {
    {"durability", MW_CONF_STRING, OFF(durability), 4, 6, "full",
     "full (fsync every recorded op) or normal (faster, may lose the last ops on power loss)"},
    {"log-level", MW_CONF_STRING, OFF(log_level), 1, 16, NULL, "error, warn, info or debug"},
    {"max-file-size", MW_CONF_SIZE, OFF(max_file_size), 0, INT64_C(1) << 50, "0",
     "ceiling on the data file (0 = none); recording fails cleanly when reached"},
    {"outbox-limit", MW_CONF_INT, OFF(outbox_limit), 1, INT64_C(1) << 40, "2000000",
     "ops waiting to be sent before recording refuses"},
    {"busy-timeout", MW_CONF_DURATION, OFF(busy_timeout), 1, 600000, "5s",
     "wait for another process's write lock"},
    {"batch-ops", MW_CONF_INT, OFF(batch_ops), 1, 5000, "500", "ops per push request"},
    {"batch-bytes", MW_CONF_SIZE, OFF(batch_bytes), 131072, 8388608, "1MiB",
     "bytes per push request before gzip"},
    {"pull-limit", MW_CONF_INT, OFF(pull_limit), 1, 5000, "250",
     "changes per pull page (a page is held whole in memory)"},
    {"connect-timeout", MW_CONF_DURATION, OFF(connect_timeout), 100, 3600000, "10s",
     "TCP and TLS connect"},
    {"request-timeout", MW_CONF_DURATION, OFF(request_timeout), 100, 3600000, "120s",
     "one whole request"},
    {"proxy", MW_CONF_STRING, OFF(proxy), 1, 2048, NULL,
     "proxy URL for the server (e.g. http://proxy:3128); proxy environment variables are "
     "ignored"},
    {"sync-interval", MW_CONF_DURATION, OFF(sync_interval), 100, 86400000, "60s",
     "run: sync at least this often"},
    {"poll-interval", MW_CONF_DURATION, OFF(poll_interval), 10, 3600000, "1s",
     "run: look for new ops this often"},
    {"backoff-min", MW_CONF_DURATION, OFF(backoff_min), 10, 3600000, "1s",
     "run: first retry delay bound while the server is unreachable"},
    {"backoff-max", MW_CONF_DURATION, OFF(backoff_max), 10, 86400000, "5m",
     "run: largest retry delay bound"},
};
#define CONF_N (sizeof conf_table / sizeof conf_table[0])

/* ---- flags -------------------------------------------------------------------------------- */

struct flag {
    const char *name; /* without the leading "--" */
    int takes_value;  /* 0: a switch ("1" when given) */
    int required;
    const char *help;
};

struct cmd_ctx {
    const char *cmd;
    const char *data_dir;
    const char *config;
    const char *log_level;
    struct agent_conf conf;
    int conf_loaded;
};

static void print_flags(const struct flag *f, size_t n, int with_conf)
{
    for (size_t i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof name, "--%s%s", f[i].name, f[i].takes_value ? " V" : "");
        printf("  %-22s %s%s\n", name, f[i].help, f[i].required ? " (required)" : "");
    }
    printf("  %-22s %s\n", "--help", "this text");
    if (with_conf) {
        printf("\nSettings (flags, or 'key = value' lines in the settings file):\n");
        for (size_t i = 0; i < CONF_N; i++) {
            char name[48];
            snprintf(name, sizeof name, "--%s V", conf_table[i].key);
            printf("  %-22s %s", name, conf_table[i].help);
            if (conf_table[i].def)
                printf(" [%s]", conf_table[i].def);
            printf("\n");
        }
    }
}

/* Parses argv (after the command) against spec into val (one slot per spec entry) and the
 * positional arguments into pos. Settings keys are accepted as flags when conf_ok.
 * Returns 0, EXIT_USAGE, or -1 for --help (already printed). */
static int parse_flags(struct cmd_ctx *c, int argc, char **argv, const struct flag *spec, size_t n,
                       const char **val, const char **pos, size_t max_pos, size_t *n_pos,
                       int conf_ok, const char *help_intro)
{
    struct mw_error err = {0};
    *n_pos = 0;
    for (size_t i = 0; i < n; i++)
        val[i] = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("%s\nFlags:\n", help_intro);
            print_flags(spec, n, conf_ok);
            return -1;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (*n_pos >= max_pos) {
                fprintf(stderr, "midway-agent %s: unexpected argument '%s' (see --help)\n", c->cmd,
                        a);
                return EXIT_USAGE;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        size_t k = 0;
        for (; k < n; k++) {
            if (strlen(spec[k].name) == klen && strncmp(spec[k].name, a + 2, klen) == 0)
                break;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (k < n) {
            if (!spec[k].takes_value) {
                if (value) {
                    fprintf(stderr, "midway-agent %s: --%s takes no value\n", c->cmd, spec[k].name);
                    return EXIT_USAGE;
                }
                val[k] = "1";
                continue;
            }
            if (!value) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "midway-agent %s: --%s needs a value\n", c->cmd, spec[k].name);
                    return EXIT_USAGE;
                }
                value = argv[++i];
            }
            val[k] = value;
            continue;
        }
        char key[64];
        if (conf_ok && klen > 0 && klen < sizeof key) {
            memcpy(key, a + 2, klen);
            key[klen] = '\0';
            if (mw_conf_find(conf_table, CONF_N, key)) {
                if (!value) {
                    if (i + 1 >= argc) {
                        fprintf(stderr, "midway-agent %s: --%s needs a value\n", c->cmd, key);
                        return EXIT_USAGE;
                    }
                    value = argv[++i];
                }
                if (mw_conf_set(conf_table, CONF_N, &c->conf, key, value, &err) != MW_OK) {
                    fprintf(stderr, "midway-agent %s: --%s: %s\n", c->cmd, key, err.msg);
                    return EXIT_USAGE;
                }
                continue;
            }
        }
        fprintf(stderr, "midway-agent %s: unknown flag '%s' (see --help)\n", c->cmd, a);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (spec[i].required && !val[i]) {
            fprintf(stderr, "midway-agent %s: --%s is required (see --help)\n", c->cmd,
                    spec[i].name);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int parse_i32(struct cmd_ctx *c, const char *flag, const char *s, int32_t min, int32_t max,
                     int32_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "midway-agent %s: --%s: expected a whole number in %d..%d, got '%s'\n",
                c->cmd, flag, (int)min, (int)max, s);
        return EXIT_USAGE;
    }
    *out = (int32_t)v;
    return 0;
}

/* ---- opening the data directory ----------------------------------------------------------- */

static int exit_for(enum mw_err e)
{
    switch (e) {
    case MW_OK:
        return 0;
    case MW_EIO:
    case MW_EFULL:
    case MW_EBUSY:
    case MW_ENOMEM:
    case MW_EVERSION:
        return EXIT_STORAGE;
    default:
        return EXIT_FAIL;
    }
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Loads the settings file: --config, else DIR/agent.conf when it exists. */
static int load_conf(struct cmd_ctx *c)
{
    struct mw_error err = {0};
    if (mw_conf_init(conf_table, CONF_N, &c->conf, &err) != MW_OK) {
        fprintf(stderr, "midway-agent: %s\n", err.msg);
        return EXIT_FAIL;
    }
    c->conf_loaded = 1;
    char *path = c->config ? strdup(c->config) : join(c->data_dir, "agent.conf");
    if (!path) {
        fprintf(stderr, "midway-agent: out of memory\n");
        return EXIT_FAIL;
    }
    enum mw_err rc = mw_conf_load_file(conf_table, CONF_N, &c->conf, path, &err);
    int status = 0;
    if (rc == MW_ENOTFOUND && !c->config)
        status = 0; /* no settings file: the defaults */
    else if (rc != MW_OK) {
        fprintf(stderr, "midway-agent: %s\n", err.msg);
        status = EXIT_USAGE;
    }
    free(path);
    return status;
}

static int setup_logging(struct cmd_ctx *c, const char *def)
{
    const char *name = c->log_level ? c->log_level : (c->conf.log_level ? c->conf.log_level : def);
    enum mw_log_level level;
    mw_log_to_stderr();
    if (mw_log_level_parse(name, &level) != MW_OK) {
        fprintf(stderr, "midway-agent: log level must be error, warn, info or debug\n");
        return EXIT_USAGE;
    }
    mw_log_threshold = level;
    return 0;
}

static int open_agent(struct cmd_ctx *c, struct mw_agent **out)
{
    struct mw_error err = {0};
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    struct stat st;
    *out = NULL;
    if (stat(c->data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "midway-agent %s: data directory %s does not exist; run `midway-agent --data "
                "%s init ...` first\n",
                c->cmd, c->data_dir, c->data_dir);
        return EXIT_FAIL;
    }
    if (strcmp(c->conf.durability, "full") == 0)
        opt.durability = MW_AGENT_DURABILITY_FULL;
    else if (strcmp(c->conf.durability, "normal") == 0)
        opt.durability = MW_AGENT_DURABILITY_NORMAL;
    else {
        fprintf(stderr, "midway-agent: durability must be full or normal\n");
        return EXIT_USAGE;
    }
    opt.max_file_bytes = c->conf.max_file_size;
    opt.busy_timeout_ms = (int32_t)c->conf.busy_timeout;
    opt.max_outbox_ops = c->conf.outbox_limit;
    opt.batch_max_ops = (int32_t)c->conf.batch_ops;
    opt.batch_max_bytes = c->conf.batch_bytes;
    opt.pull_limit = (int32_t)c->conf.pull_limit;
    opt.connect_timeout_ms = (int32_t)c->conf.connect_timeout;
    opt.request_timeout_ms = (int32_t)c->conf.request_timeout;
    opt.proxy = c->conf.proxy;
    char *db = join(c->data_dir, "agent.db");
    if (!db) {
        fprintf(stderr, "midway-agent: out of memory\n");
        return EXIT_FAIL;
    }
    enum mw_err rc = mw_agent_open(db, &opt, out, &err);
    free(db);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent %s: %s\n", c->cmd, err.msg);
        return exit_for(rc);
    }
    return 0;
}

/* ---- JSON output -------------------------------------------------------------------------- */

static void print_json(cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    if (!s) {
        fprintf(stderr, "midway-agent: out of memory\n");
        cJSON_Delete(j);
        return;
    }
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(j);
}

static void add_str(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    char ts[MW_TIMESTAMP_LEN];
    struct mw_error err = {0};
    if (ms > 0 && mw_timestamp_format(ms, ts, &err) == MW_OK)
        cJSON_AddStringToObject(o, key, ts);
    else
        cJSON_AddNullToObject(o, key);
}

static const char *time_text(int64_t ms, char *buf)
{
    struct mw_error err = {0};
    if (ms <= 0 || mw_timestamp_format(ms, buf, &err) != MW_OK)
        return "never";
    return buf;
}

/* ---- init --------------------------------------------------------------------------------- */

static int cmd_init(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag spec[] = {
        {"server", 1, 1, "server URL, https://HOST[:PORT]"},
        {"device-id", 1, 1, "this device's id (from `midway-server device add`)"},
        {"token-file", 1, 1, "file holding the device token; must not be world-readable"},
        {"ca", 1, 1, "CA certificate (PEM) the server's certificate is checked against"},
    };
    const char *v[4];
    const char *pos[1];
    size_t np = 0;
    int st = parse_flags(c, argc, argv, spec, 4, v, pos, 0, &np, 0,
                         "usage: midway-agent --data DIR init --server URL --device-id ID "
                         "--token-file F --ca CA.pem\n\nCreates DIR if needed and stores the "
                         "sync settings in DIR/agent.db. The token is\nnot copied: it is read "
                         "from the token file at every sync.");
    if (st != 0)
        return st < 0 ? 0 : st;
    if (mkdir(c->data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "midway-agent init: create %s: %s\n", c->data_dir, strerror(errno));
        return EXIT_FAIL;
    }
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct mw_error err = {0};
    enum mw_err rc = mw_agent_settings_set(a, v[0], v[1], v[2], v[3], &err);
    mw_agent_close(a);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent init: %s\n", err.msg);
        return exit_for(rc);
    }
    printf("initialised %s: server %s, device %s\n", c->data_dir, v[0], v[1]);
    return 0;
}

/* ---- recording ---------------------------------------------------------------------------- */

/* Flags every recording command takes, after its own. */
#define COMMON_FLAGS                                                                      \
    {"user", 1, 1, "operator's username (from the pulled reference data)"},               \
        {"correlation-id", 1, 0, "UUID tying the op to other logs (default: a new one)"}, \
        {"at", 1, 0, "when it happened, RFC 3339 (default: now)"},                        \
    {                                                                                     \
        "json", 0, 0, "print the op id as JSON"                                           \
    }
#define N_COMMON 4

static int record_meta(struct cmd_ctx *c, const char **common, struct mw_agent_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->user = common[0];
    m->correlation_id = common[1];
    if (common[2]) {
        struct mw_error err = {0};
        if (mw_timestamp_parse(common[2], strlen(common[2]), &m->at_ms, &err) != MW_OK) {
            fprintf(stderr, "midway-agent %s: --at: %s\n", c->cmd, err.msg);
            return EXIT_USAGE;
        }
        if (m->at_ms <= 0) {
            fprintf(stderr, "midway-agent %s: --at: before 1970\n", c->cmd);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int report_record(struct cmd_ctx *c, const char *type, enum mw_err rc,
                         const struct mw_agent_receipt *r, const struct mw_error *err, int json)
{
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent %s: %s (nothing recorded)\n", c->cmd, err->msg);
        return exit_for(rc);
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "op_id", r->op_id);
        cJSON_AddStringToObject(o, "correlation_id", r->correlation_id);
        cJSON_AddNumberToObject(o, "seq", (double)r->seq);
        print_json(o);
    } else {
        printf("recorded %s op_id=%s correlation_id=%s\n", type, r->op_id, r->correlation_id);
    }
    return 0;
}

static int find_location(struct cmd_ctx *c, struct mw_agent *a, const char *flag, const char *s,
                         int32_t *id)
{
    struct mw_error err = {0};
    enum mw_err rc = mw_agent_location_find(a, s, id, &err);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent %s: --%s: %s (nothing recorded)\n", c->cmd, flag, err.msg);
        return exit_for(rc);
    }
    return 0;
}

static int cmd_record(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag adjust[] = {
        {"sku", 1, 1, "item SKU"},
        {"delta", 1, 1, "quantity change, e.g. -2 or 5 (not 0)"},
        {"reason", 1, 0, "why"},
        COMMON_FLAGS,
    };
    static const struct flag count[] = {
        {"sku", 1, 1, "item SKU"},
        {"counted", 1, 1, "what is on the shelf"},
        COMMON_FLAGS,
    };
    static const struct flag relocate[] = {
        {"sku", 1, 1, "item SKU"},
        {"to", 1, 1, "new location: id or name"},
        COMMON_FLAGS,
    };
    static const struct flag receive[] = {
        {"sku", 1, 1, "item SKU (a new one creates the item)"},
        {"quantity", 1, 1, "units received (> 0)"},
        {"location", 1, 1, "location: id or name"},
        {"name", 1, 0, "item name (required for a new SKU)"},
        {"description", 1, 0, "item description"},
        COMMON_FLAGS,
    };
    static const struct flag interact[] = {
        {"action", 1, 1, "what the operator did"},
        {"target-id", 1, 0, "id of what it was done to"},
        {"target-type", 1, 0, "kind of what it was done to"},
        {"metadata", 1, 0, "JSON object with more detail"},
        COMMON_FLAGS,
    };
    static const struct flag allocate[] = {
        {"sku", 1, 1, "item SKU"},
        {"need", 1, 1, "predicted need (>= 0)"},
        {"override", 0, 0, "a manual override (needs --reason)"},
        {"reason", 1, 0, "why the override"},
        COMMON_FLAGS,
    };
    static const struct flag event[] = {
        {"source", 1, 1, "source system"},
        {"type", 1, 1, "sync, update, error, create or delete"},
        {"details", 1, 1, "JSON object"},
        COMMON_FLAGS,
    };
    const struct flag *spec = NULL;
    size_t n = 0;
    const char *type = NULL;
#define PICK(name, arr, t)                \
    if (strcmp(c->cmd, name) == 0) {      \
        spec = arr;                       \
        n = sizeof(arr) / sizeof(arr[0]); \
        type = t;                         \
    }
    PICK("adjust", adjust, "inventory.adjust")
    PICK("count", count, "inventory.count")
    PICK("relocate", relocate, "inventory.relocate")
    PICK("receive", receive, "inventory.receive")
    PICK("interact", interact, "interaction.record")
    PICK("allocate", allocate, "allocation.record")
    PICK("event", event, "event.record")
#undef PICK
    if (!spec)
        return EXIT_USAGE;
    const char *v[16];
    const char *pos[1];
    size_t np = 0;
    char intro[256];
    snprintf(intro, sizeof intro,
             "usage: midway-agent --data DIR %s FLAGS\n\nRecords one %s op in the outbox, "
             "instantly, online or not.",
             c->cmd, type);
    int st = parse_flags(c, argc, argv, spec, n, v, pos, 0, &np, 0, intro);
    if (st != 0)
        return st < 0 ? 0 : st;
    const char **common = v + (n - N_COMMON);
    int json = common[3] != NULL;
    struct mw_agent_meta meta;
    st = record_meta(c, common, &meta);
    if (st != 0)
        return st;

    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct mw_agent_receipt r;
    struct mw_error err = {0};
    enum mw_err rc = MW_OK;
    int32_t x = 0, y = 0;
    if (spec == adjust) {
        st = parse_i32(c, "delta", v[1], INT32_MIN, INT32_MAX, &x);
        if (st == 0)
            rc = mw_agent_record_adjust(a, &meta, v[0], x, v[2], &r, &err);
    } else if (spec == count) {
        st = parse_i32(c, "counted", v[1], 0, INT32_MAX, &x);
        if (st == 0)
            rc = mw_agent_record_count(a, &meta, v[0], x, &r, &err);
    } else if (spec == relocate) {
        st = find_location(c, a, "to", v[1], &x);
        if (st == 0)
            rc = mw_agent_record_relocate(a, &meta, v[0], x, &r, &err);
    } else if (spec == receive) {
        st = parse_i32(c, "quantity", v[1], 1, INT32_MAX, &x);
        if (st == 0)
            st = find_location(c, a, "location", v[2], &y);
        if (st == 0)
            rc = mw_agent_record_receive(a, &meta, v[0], v[3], y, x, v[4], &r, &err);
    } else if (spec == interact) {
        rc = mw_agent_record_interact(a, &meta, v[0], v[1], v[2], v[3], &r, &err);
    } else if (spec == allocate) {
        st = parse_i32(c, "need", v[1], 0, INT32_MAX, &x);
        if (st == 0)
            rc = mw_agent_record_allocate(a, &meta, v[0], x, v[2] != NULL, v[3], &r, &err);
    } else {
        rc = mw_agent_record_event(a, &meta, v[0], v[1], v[2], &r, &err);
    }
    mw_agent_close(a);
    if (st != 0)
        return st;
    return report_record(c, type, rc, &r, &err, json);
}

/* ---- sync --------------------------------------------------------------------------------- */

static const char *outcome_word(enum mw_agent_sync_outcome o)
{
    switch (o) {
    case MW_AGENT_SYNC_DONE:
        return "done";
    case MW_AGENT_SYNC_REJECTED:
        return "rejected";
    case MW_AGENT_SYNC_UNREACHABLE:
        return "unreachable";
    case MW_AGENT_SYNC_UNAUTHORIZED:
        return "unauthorized";
    case MW_AGENT_SYNC_STORAGE:
        return "storage";
    case MW_AGENT_SYNC_FAILED:
        break;
    }
    return "failed";
}

static int cmd_sync(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag spec[] = {{"json", 0, 0, "print the result as JSON"}};
    const char *v[1];
    const char *pos[1];
    size_t np = 0;
    int st = parse_flags(
        c, argc, argv, spec, 1, v, pos, 0, &np, 1,
        "usage: midway-agent --data DIR sync [--json]\n\nPushes every pending op (in order, "
        "in batches), then pulls reference data.\nExit codes: 0 done; 3 done but some ops "
        "were rejected (see `rejected`);\n4 server unreachable (nothing lost, everything "
        "still queued); 5 the server\nrefused the device's token; 6 local storage error; "
        "1 other failure.");
    if (st != 0)
        return st < 0 ? 0 : st;
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct mw_agent_sync_result res;
    struct mw_error err = {0};
    enum mw_err rc = mw_agent_sync(a, NULL, NULL, &res, &err);
    mw_agent_close(a);
    if (v[0]) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "outcome", outcome_word(res.outcome));
        cJSON_AddNumberToObject(o, "exit_code", (double)res.outcome);
        cJSON_AddNumberToObject(o, "pushed", (double)res.pushed);
        cJSON_AddNumberToObject(o, "applied", (double)res.applied);
        cJSON_AddNumberToObject(o, "duplicate", (double)res.duplicate);
        cJSON_AddNumberToObject(o, "rejected", (double)res.rejected);
        cJSON_AddNumberToObject(o, "pulled", (double)res.pulled);
        cJSON_AddNumberToObject(o, "batches", (double)res.batches);
        cJSON_AddNumberToObject(o, "http_status", res.http_status);
        cJSON_AddNumberToObject(o, "retry_after_ms", (double)res.retry_after_ms);
        cJSON_AddNumberToObject(o, "duration_ms", (double)res.duration_ms);
        cJSON_AddStringToObject(o, "correlation_id", res.correlation_id);
        add_str(o, "error", rc != MW_OK ? err.msg : NULL);
        print_json(o);
    } else {
        printf("sync %s: pushed %lld (applied %lld, duplicate %lld, rejected %lld), pulled "
               "%lld, %lld ms, correlation id %s\n",
               outcome_word(res.outcome), (long long)res.pushed, (long long)res.applied,
               (long long)res.duplicate, (long long)res.rejected, (long long)res.pulled,
               (long long)res.duration_ms, res.correlation_id);
    }
    if (rc != MW_OK)
        fprintf(stderr, "midway-agent sync: %s\n", err.msg);
    return (int)res.outcome;
}

/* ---- status ------------------------------------------------------------------------------- */

static int cmd_status(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag spec[] = {{"json", 0, 0, "print as JSON"}};
    const char *v[1];
    const char *pos[1];
    size_t np = 0;
    int st = parse_flags(c, argc, argv, spec, 1, v, pos, 0, &np, 0,
                         "usage: midway-agent --data DIR status [--json]\n\nOutbox depth, "
                         "rejected ops, last successful sync, last error, pull cursor.");
    if (st != 0)
        return st < 0 ? 0 : st;
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct mw_agent_status s;
    struct mw_agent_settings *set = calloc(1, sizeof(*set));
    struct mw_error err = {0};
    enum mw_err rc = set ? mw_agent_status(a, &s, &err) : MW_ENOMEM;
    if (rc == MW_OK)
        rc = mw_agent_settings_get(a, set, &err);
    mw_agent_close(a);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent status: %s\n", err.msg);
        free(set);
        return exit_for(rc);
    }
    if (v[0]) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "outbox", (double)s.outbox);
        cJSON_AddNumberToObject(o, "in_flight", (double)s.in_flight);
        cJSON_AddNumberToObject(o, "rejected", (double)s.rejected);
        cJSON_AddNumberToObject(o, "items", (double)s.items);
        add_time(o, "last_success", s.last_success_ms);
        add_time(o, "last_attempt", s.last_attempt_ms);
        add_str(o, "last_error", s.last_error[0] ? s.last_error : NULL);
        add_time(o, "last_error_at", s.last_error_ms);
        add_str(o, "cursor", s.cursor[0] ? s.cursor : NULL);
        add_str(o, "last_sync_correlation_id", s.last_sync_cid[0] ? s.last_sync_cid : NULL);
        add_str(o, "server", set->server_url[0] ? set->server_url : NULL);
        add_str(o, "device_id", set->device_id[0] ? set->device_id : NULL);
        print_json(o);
    } else {
        char t1[MW_TIMESTAMP_LEN], t2[MW_TIMESTAMP_LEN];
        printf("server        %s\n", set->server_url[0] ? set->server_url : "(not set: init)");
        printf("device        %s\n", set->device_id[0] ? set->device_id : "(not set: init)");
        printf("outbox        %lld (%lld in flight)\n", (long long)s.outbox,
               (long long)s.in_flight);
        printf("rejected      %lld\n", (long long)s.rejected);
        printf("items         %lld\n", (long long)s.items);
        printf("last success  %s\n", time_text(s.last_success_ms, t1));
        printf("last attempt  %s%s%s\n", time_text(s.last_attempt_ms, t2),
               s.last_sync_cid[0] ? " correlation id " : "", s.last_sync_cid);
        if (s.last_error[0])
            printf("last error    %s: %s\n", time_text(s.last_error_ms, t1), s.last_error);
        else
            printf("last error    none\n");
        printf("cursor        %s\n", s.cursor[0] ? s.cursor : "none (next pull is a snapshot)");
    }
    free(set);
    return 0;
}

/* ---- items -------------------------------------------------------------------------------- */

struct list_ctx {
    int json;
    size_t n;
};

static int print_item(void *ctx, const struct mw_agent_item *it)
{
    struct list_ctx *l = ctx;
    if (l->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "sku", it->sku);
        add_str(o, "name", it->name);
        cJSON_AddNumberToObject(o, "quantity", (double)it->quantity);
        cJSON_AddNumberToObject(o, "server_quantity", (double)it->server_quantity);
        cJSON_AddNumberToObject(o, "pending", (double)(it->quantity - it->server_quantity));
        if (it->location_id > 0)
            cJSON_AddNumberToObject(o, "location_id", it->location_id);
        else
            cJSON_AddNullToObject(o, "location_id");
        add_str(o, "location", it->location_name);
        add_str(o, "resource_id", it->resource_id);
        add_str(o, "description", it->description);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s)
            return 1;
        printf("%s%s", l->n ? ",\n" : "", s);
        cJSON_free(s);
    } else {
        if (l->n == 0)
            printf("%-24s %10s %10s  %-20s %s\n", "SKU", "QUANTITY", "SERVER", "LOCATION", "NAME");
        char loc[32];
        snprintf(loc, sizeof loc, "%d", (int)it->location_id);
        printf("%-24s %10lld %10lld  %-20s %s\n", it->sku, (long long)it->quantity,
               (long long)it->server_quantity, it->location_name ? it->location_name : loc,
               it->name ? it->name : "");
    }
    l->n++;
    return 0;
}

static int cmd_items(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag spec[] = {
        {"json", 0, 0, "print a JSON array"},
        {"sku", 1, 0, "only this SKU"},
    };
    const char *v[2];
    const char *pos[1];
    size_t np = 0;
    int st = parse_flags(c, argc, argv, spec, 2, v, pos, 0, &np, 0,
                         "usage: midway-agent --data DIR items [--json] [--sku S]\n\nCached "
                         "items with the local view: the server's quantity from the last\npull "
                         "plus the effect of the ops still pending.");
    if (st != 0)
        return st < 0 ? 0 : st;
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct list_ctx l = {v[0] != NULL, 0};
    struct mw_error err = {0};
    if (l.json)
        printf("[");
    enum mw_err rc = mw_agent_items(a, v[1], print_item, &l, &err);
    if (l.json)
        printf("]\n");
    mw_agent_close(a);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent items: %s\n", err.msg);
        return exit_for(rc);
    }
    return 0;
}

/* ---- rejected ----------------------------------------------------------------------------- */

static int print_rejected(void *ctx, const struct mw_agent_rejected_op *op)
{
    struct list_ctx *l = ctx;
    if (l->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "op_id", op->op_id);
        add_str(o, "orig_op_id", op->orig_op_id);
        cJSON_AddNumberToObject(o, "seq", (double)op->seq);
        add_str(o, "type", op->type);
        add_time(o, "at", op->at_ms);
        add_str(o, "user_id", op->user_id);
        add_str(o, "username", op->username);
        add_str(o, "correlation_id", op->correlation_id);
        add_str(o, "sku", op->sku);
        cJSON_AddNumberToObject(o, "qty_delta", (double)op->qty_delta);
        if (op->data)
            cJSON_AddRawToObject(o, "data", op->data);
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        add_str(e, "code", op->error_code);
        add_str(e, "message", op->error_message);
        add_time(o, "rejected_at", op->rejected_at_ms);
        cJSON_AddNumberToObject(o, "attempts", (double)op->attempts);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s)
            return 1;
        printf("%s%s", l->n ? ",\n" : "", s);
        cJSON_free(s);
    } else {
        char t[MW_TIMESTAMP_LEN];
        printf("%s %s sku=%s user=%s at=%s\n  %s: %s\n  data %s\n", op->op_id,
               op->type ? op->type : "?", op->sku ? op->sku : "-",
               op->username ? op->username : (op->user_id ? op->user_id : "-"),
               time_text(op->at_ms, t), op->error_code ? op->error_code : "?",
               op->error_message ? op->error_message : "", op->data ? op->data : "");
    }
    l->n++;
    return 0;
}

static int cmd_rejected(struct cmd_ctx *c, int argc, char **argv)
{
    static const struct flag spec[] = {{"json", 0, 0, "print as JSON"}};
    const char *v[1];
    const char *pos[2];
    size_t np = 0;
    int st = parse_flags(
        c, argc, argv, spec, 1, v, pos, 2, &np, 0,
        "usage: midway-agent --data DIR rejected [--json]\n"
        "       midway-agent --data DIR rejected retry OP_ID [--json]\n"
        "       midway-agent --data DIR rejected drop OP_ID\n\n"
        "Ops the server rejected stay here, with the reason, until someone acts:\n"
        "retry sends the op again as a new op (after the cause was fixed); drop removes it.");
    if (st != 0)
        return st < 0 ? 0 : st;
    int retry = np >= 1 && strcmp(pos[0], "retry") == 0;
    int drop = np >= 1 && strcmp(pos[0], "drop") == 0;
    if ((np >= 1 && !retry && !drop) || ((retry || drop) && np != 2)) {
        fprintf(stderr, "midway-agent rejected: expected `rejected`, `rejected retry OP_ID` or "
                        "`rejected drop OP_ID`\n");
        return EXIT_USAGE;
    }
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct mw_error err = {0};
    enum mw_err rc;
    if (retry) {
        struct mw_agent_receipt r;
        rc = mw_agent_rejected_retry(a, pos[1], &r, &err);
        mw_agent_close(a);
        if (rc != MW_OK) {
            fprintf(stderr, "midway-agent rejected retry: %s\n", err.msg);
            return exit_for(rc);
        }
        if (v[0]) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "retried", pos[1]);
            cJSON_AddStringToObject(o, "op_id", r.op_id);
            cJSON_AddStringToObject(o, "correlation_id", r.correlation_id);
            print_json(o);
        } else {
            printf("retrying %s as op_id=%s (queued; it goes with the next sync)\n", pos[1],
                   r.op_id);
        }
        return 0;
    }
    if (drop) {
        rc = mw_agent_rejected_drop(a, pos[1], &err);
        mw_agent_close(a);
        if (rc != MW_OK) {
            fprintf(stderr, "midway-agent rejected drop: %s\n", err.msg);
            return exit_for(rc);
        }
        printf("dropped %s\n", pos[1]);
        return 0;
    }
    struct list_ctx l = {v[0] != NULL, 0};
    if (l.json)
        printf("[");
    rc = mw_agent_rejected(a, print_rejected, &l, &err);
    if (l.json)
        printf("]\n");
    else if (l.n == 0 && rc == MW_OK)
        printf("no rejected ops\n");
    mw_agent_close(a);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent rejected: %s\n", err.msg);
        return exit_for(rc);
    }
    return 0;
}

/* ---- run ---------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t reload_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    reload_flag = 1;
}

static int cmd_run(struct cmd_ctx *c, int argc, char **argv)
{
    const char *pos[1];
    size_t np = 0;
    int st = parse_flags(c, argc, argv, NULL, 0, NULL, pos, 0, &np, 1,
                         "usage: midway-agent --data DIR run [SETTINGS]\n\nThe gateway daemon: "
                         "syncs when ops are waiting and every sync-interval;\nbacks off "
                         "exponentially with full jitter while the server is unreachable,\n"
                         "honours Retry-After, stops retrying on a refused token until the "
                         "token\nfile changes or SIGHUP. SIGTERM or SIGINT stops it cleanly. "
                         "Logs one line\nper sync to stderr.");
    if (st != 0)
        return st < 0 ? 0 : st;
    st = setup_logging(c, "info");
    if (st != 0)
        return st;
    struct mw_agent *a = NULL;
    st = open_agent(c, &a);
    if (st != 0)
        return st;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop; /* no SA_RESTART: a signal ends the sleep at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    struct mw_daemon_conf dc = {c->conf.sync_interval, c->conf.poll_interval, c->conf.backoff_min,
                                c->conf.backoff_max};
    struct mw_error err = {0};
    enum mw_err rc = mw_daemon_run(a, &dc, &stop_flag, &reload_flag, &err);
    mw_agent_close(a);
    if (rc != MW_OK) {
        fprintf(stderr, "midway-agent run: %s\n", err.msg);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct cmd_ctx c;
    memset(&c, 0, sizeof c);
    mw_json_init();
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("midway-agent %s\n", mw_agent_version());
            return 0;
        }
        if (strncmp(a, "--", 2) != 0)
            break;
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        if (klen == 6 && strncmp(a, "--data", 6) == 0)
            dst = &c.data_dir;
        else if (klen == 8 && strncmp(a, "--config", 8) == 0)
            dst = &c.config;
        else if (klen == 11 && strncmp(a, "--log-level", 11) == 0)
            dst = &c.log_level;
        if (!dst) {
            fprintf(stderr, "midway-agent: unknown flag '%s' before the command (see --help)\n", a);
            return EXIT_USAGE;
        }
        if (eq) {
            *dst = eq + 1;
        } else if (i + 1 < argc) {
            *dst = argv[++i];
        } else {
            fprintf(stderr, "midway-agent: %s needs a value\n", a);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    c.cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    static const char *const commands[] = {"init",     "adjust",   "count", "relocate", "receive",
                                           "interact", "allocate", "event", "sync",     "status",
                                           "items",    "rejected", "run"};
    int known = 0;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        known = known || strcmp(commands[k], c.cmd) == 0;
    if (!known) {
        fprintf(stderr, "midway-agent: unknown command '%s' (see --help)\n", c.cmd);
        return EXIT_USAGE;
    }
    int asks_help = 0;
    for (int k = 0; k < sub_argc; k++)
        asks_help =
            asks_help || strcmp(sub_argv[k], "--help") == 0 || strcmp(sub_argv[k], "-h") == 0;
    if (!c.data_dir)
        c.data_dir = getenv("MIDWAY_AGENT_DATA");
    if (!c.data_dir && !asks_help) {
        fprintf(stderr, "midway-agent: --data DIR is required (or set MIDWAY_AGENT_DATA)\n");
        return EXIT_USAGE;
    }
    if (!c.data_dir)
        c.data_dir = ".";
    int st = load_conf(&c);
    if (st == 0 && strcmp(c.cmd, "run") != 0)
        st = setup_logging(&c, "warn");
    if (st == 0) {
        if (strcmp(c.cmd, "init") == 0)
            st = cmd_init(&c, sub_argc, sub_argv);
        else if (strcmp(c.cmd, "sync") == 0)
            st = cmd_sync(&c, sub_argc, sub_argv);
        else if (strcmp(c.cmd, "status") == 0)
            st = cmd_status(&c, sub_argc, sub_argv);
        else if (strcmp(c.cmd, "items") == 0)
            st = cmd_items(&c, sub_argc, sub_argv);
        else if (strcmp(c.cmd, "rejected") == 0)
            st = cmd_rejected(&c, sub_argc, sub_argv);
        else if (strcmp(c.cmd, "run") == 0)
            st = cmd_run(&c, sub_argc, sub_argv);
        else
            st = cmd_record(&c, sub_argc, sub_argv);
    }
    if (c.conf_loaded)
        mw_conf_free(conf_table, CONF_N, &c.conf);
    fflush(stdout);
    return st;
}
