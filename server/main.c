/* main.c - the midway-server command line: parses the command and its flags, sets up
 * logging, and hands over to the module that does the work.
 * Exit codes: 0 success, 1 the command failed (the reason is logged), 2 usage error. */
#include "admin.h"
#include "conf.h"
#include "db.h"
#include "dbrole.h"
#include "localdb.h"
#include "midway/log.h"
#include "migrate.h"
#include "runas.h"
#include "secretfile.h"
#include "serve.h"
#include "tlsca.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_USAGE 2

static const char *const usage_text =
    "usage: midway-server COMMAND [FLAGS]\n"
    "\n"
    "Commands:\n"
    "  serve      run the sync endpoint (HTTPS) on a local or existing PostgreSQL\n"
    "  migrate    bring a PostgreSQL database to this version's schema\n"
    "  device     add | list | revoke devices and their tokens\n"
    "  user       add | disable operators\n"
    "  role       grant | revoke roles\n"
    "  location   add locations\n"
    "  item       add items, show an item's history\n"
    "  version    print the version\n"
    "\n"
    "Run 'midway-server COMMAND --help' for a command's flags.\n";

/* Settings of `serve`, from the config file (--config) and then the flags, which win. */
struct serve_conf {
    char *data;
    char *listen;
    char *db;
    char *db_owner;
    char *db_file;
    char *db_owner_file;
    char *user;
    char *tls_cert;
    char *tls_key;
    char *tls_names;
    char *log_level;
    int64_t workers;
    int64_t queue_max;
    int64_t max_connections;
    int64_t body_max;
    int64_t header_timeout;
    int64_t body_timeout;
    int64_t write_timeout;
    int64_t write_total_timeout;
    int64_t idle_timeout;
    int64_t shutdown_grace;
    int64_t pull_limit;
    int64_t db_statement_timeout;
    int64_t db_lock_timeout;
    int64_t max_clock_skew;
    int64_t max_op_age;
    int64_t auth_cache_ttl;
    int64_t unauth_queue_max;
    char *metrics_listen;
    int64_t max_connections_per_address;
    int64_t handshakes_per_second_per_address;
};

#define OFF(f) offsetof(struct serve_conf, f)
static const struct mw_conf_entry serve_table[] = {
    {"data", MW_CONF_STRING, OFF(data), 1, 4096, "./midway-data",
     "data directory: local PostgreSQL, TLS files, lock"},
    {"listen", MW_CONF_STRING, OFF(listen), 3, 128, "0.0.0.0:8443",
     "address and port to serve HTTPS on ([::]:8443 for IPv6)"},
    {"db", MW_CONF_STRING, OFF(db), 1, 4096, NULL,
     "runtime-role conninfo of an existing PostgreSQL (default: the local one)"},
    {"db-owner", MW_CONF_STRING, OFF(db_owner), 1, 4096, NULL,
     "owner-role conninfo used to migrate an existing PostgreSQL at start"},
    {"db-file", MW_CONF_STRING, OFF(db_file), 1, 4096, NULL,
     "file holding the db conninfo (mode 0600; or env MIDWAY_DB): keeps passwords off the "
     "command line"},
    {"db-owner-file", MW_CONF_STRING, OFF(db_owner_file), 1, 4096, NULL,
     "file holding the db-owner conninfo (mode 0600; or env MIDWAY_DB_OWNER)"},
    {"user", MW_CONF_STRING, OFF(user), 1, MW_RUNAS_NAME_MAX, NULL,
     "OS user to run as once the port is bound; required when started as root"},
    {"tls-cert", MW_CONF_STRING, OFF(tls_cert), 1, 4096, NULL,
     "server certificate chain (default: DATA/tls/server.pem from the local CA)"},
    {"tls-key", MW_CONF_STRING, OFF(tls_key), 1, 4096, NULL,
     "server private key (default: DATA/tls/server.key)"},
    {"tls-names", MW_CONF_STRING, OFF(tls_names), 1, 4096, NULL,
     "comma-separated names for the local CA's server certificate (default: localhost, hostname)"},
    {"log-level", MW_CONF_STRING, OFF(log_level), 1, 16, "info", "error, warn, info or debug"},
    {"workers", MW_CONF_INT, OFF(workers), 1, 256, "4", "database workers (connections)"},
    {"queue-max", MW_CONF_INT, OFF(queue_max), 1, 100000, "256",
     "requests that may wait for a worker before 503"},
    {"max-connections", MW_CONF_INT, OFF(max_connections), 1, 1000000, "10000",
     "client connections served at once; more get 503"},
    {"body-max", MW_CONF_SIZE, OFF(body_max), 1024, 1073741824, "8MiB",
     "largest request body, also after gzip (413)"},
    {"header-timeout", MW_CONF_DURATION, OFF(header_timeout), 100, 3600000, "10s",
     "time for the TLS handshake and a request's head"},
    {"body-timeout", MW_CONF_DURATION, OFF(body_timeout), 100, 3600000, "60s",
     "time for a request's body, from the end of its head"},
    {"write-timeout", MW_CONF_DURATION, OFF(write_timeout), 100, 3600000, "60s",
     "time a client may take to read more of an answer (each read restarts it)"},
    {"write-total-timeout", MW_CONF_DURATION, OFF(write_total_timeout), 100, 86400000, "10m",
     "time for a whole answer, however steadily it is read"},
    {"idle-timeout", MW_CONF_DURATION, OFF(idle_timeout), 100, 86400000, "120s",
     "keep-alive connection without a request"},
    {"shutdown-grace", MW_CONF_DURATION, OFF(shutdown_grace), 0, 3600000, "10s",
     "time requests in flight get at SIGTERM"},
    {"pull-limit", MW_CONF_INT, OFF(pull_limit), 1, 5000, "500",
     "changes per pull page when the device gives no limit"},
    {"db-statement-timeout", MW_CONF_DURATION, OFF(db_statement_timeout), 0, 86400000, "30s",
     "a request's SQL statement, and the wait for PostgreSQL past it (0s: the database's)"},
    {"db-lock-timeout", MW_CONF_DURATION, OFF(db_lock_timeout), 0, 86400000, "5s",
     "a request's wait for a row lock before 503 (0s: the database's)"},
    {"max-clock-skew", MW_CONF_DURATION, OFF(max_clock_skew), 0, 3650LL * 86400000, "24h",
     "ops dated further ahead of the server's clock are rejected (bad_time)"},
    {"max-op-age", MW_CONF_DURATION, OFF(max_op_age), 60000, 36500LL * 86400000, "400d",
     "ops dated further behind the server's clock are rejected (bad_time)"},
    {"auth-cache-ttl", MW_CONF_DURATION, OFF(auth_cache_ttl), 0, 60000, "5s",
     "how long a checked device token is trusted without a lookup (0: always look up); "
     "a revoked device's pulls stop within this"},
    {"unauth-queue-max", MW_CONF_INT, OFF(unauth_queue_max), 1, 99999, "8",
     "health checks at or waiting for a worker before 503 (at most queue-max - 1)"},
    {"metrics-listen", MW_CONF_STRING, OFF(metrics_listen), 3, 128, NULL,
     "serve /metrics over plain HTTP here (e.g. 127.0.0.1:9464) instead of the public port"},
    {"max-connections-per-address", MW_CONF_INT, OFF(max_connections_per_address), 0, 1000000,
     "1000", "open connections from one client address (IPv6: one /64); 0: no limit"},
    {"handshakes-per-second-per-address", MW_CONF_INT, OFF(handshakes_per_second_per_address), 0,
     1000000, "100", "new TLS connections one client address may open a second; 0: no limit"},
};
#define SERVE_TABLE_N (sizeof serve_table / sizeof serve_table[0])

static void print_table_help(const struct mw_conf_entry *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char flag[48];
        snprintf(flag, sizeof flag, "--%s", t[i].key);
        printf("  %-24s %s", flag, t[i].help);
        if (t[i].def)
            printf(" [%s]", t[i].def);
        printf("\n");
    }
}

static const char *const serve_intro =
    "usage: midway-server serve [--config FILE] [FLAGS]\n"
    "\n"
    "Serves the sync endpoint over HTTPS. With no --db, everything lives under --data:\n"
    "a PostgreSQL cluster it initializes, starts, migrates and stops again (DATA/pg,\n"
    "socket in DATA/run), and a local CA with a server certificate (DATA/tls/ca.pem is\n"
    "what devices verify the server with). SIGTERM or SIGINT stops it cleanly; SIGHUP\n"
    "reloads the TLS certificate and key and the log level.\n"
    "\n"
    "Flags (each also a 'key = value' line in the config file; flags win):\n"
    "  --config FILE            read settings from FILE first\n";

static int setup_logging(const char *level_name)
{
    mw_log_to_stderr();
    if (!level_name)
        return 0;
    enum mw_log_level level;
    if (mw_log_level_parse(level_name, &level) != MW_OK) {
        fprintf(stderr, "midway-server: log level must be error, warn, info or debug\n");
        return EXIT_USAGE;
    }
    mw_log_threshold = level;
    return 0;
}

/* Applies --config FILE, then every --key value / --key=value flag, through the table. */
static int parse_serve_flags(int argc, char **argv, struct serve_conf *c, int *help)
{
    struct mw_error err = {0};
    if (mw_conf_init(serve_table, SERVE_TABLE_N, c, &err) != MW_OK) {
        fprintf(stderr, "midway-server: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
            const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!path) {
                fprintf(stderr, "midway-server serve: --config needs a file\n");
                return EXIT_USAGE;
            }
            if (mw_conf_load_file(serve_table, SERVE_TABLE_N, c, path, &err) != MW_OK) {
                fprintf(stderr, "midway-server serve: %s\n", err.msg);
                return EXIT_USAGE;
            }
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "midway-server serve: unexpected argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        char key[64];
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen == 0 || klen >= sizeof key) {
            fprintf(stderr, "midway-server serve: unknown flag '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        const char *value = eq ? eq + 1 : NULL;
        if (strcmp(key, "config") == 0) {
            if (!value)
                i++;
            continue;
        }
        if (!mw_conf_find(serve_table, SERVE_TABLE_N, key)) {
            fprintf(stderr, "midway-server serve: unknown flag '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "midway-server serve: --%s needs a value\n", key);
                return EXIT_USAGE;
            }
            value = argv[++i];
        }
        if (mw_conf_set(serve_table, SERVE_TABLE_N, c, key, value, &err) != MW_OK) {
            fprintf(stderr, "midway-server serve: --%s: %s\n", key, err.msg);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* One serve per data directory: an exclusive lock on DATA/serve.lock, held until exit. */
static int lock_data_dir(const char *dir, int *fd_out)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        MW_LOG(MW_LOG_ERROR, NULL, "create data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/serve.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        MW_LOG(MW_LOG_ERROR, NULL, "open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        MW_LOG(MW_LOG_ERROR, NULL,
               "another midway-server serve (pid %s) is already running on %s; stop it first",
               pid[0] ? pid : "?", dir);
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        MW_LOG(MW_LOG_WARN, NULL, "could not write the pid to %s", path);
    *fd_out = fd;
    return 0;
}

/* Splits "a,b,c" into a NULL-terminated list pointing into buf (modified). */
static void split_names(char *buf, const char **names, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n + 1 < max;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok)
            names[n++] = tok;
    }
    names[n] = NULL;
}

static enum mw_err migrate_existing(const char *owner_conninfo, struct mw_error *err)
{
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(owner_conninfo, &conn, err);
    if (rc != MW_OK)
        return rc;
    struct mw_migrate_report rep;
    rc = mw_migrate_run(conn, &rep, err);
    PQfinish(conn);
    return rc;
}

/* Without --db-owner, an existing database must already carry this version's schema. */
static enum mw_err check_schema(const char *conninfo, struct mw_error *err)
{
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(conninfo, &conn, err);
    if (rc != MW_OK)
        return rc;
    int current = 0;
    rc = mw_migrate_current(conn, &current, err);
    PQfinish(conn);
    if (rc == MW_OK && current != mw_migrate_known())
        rc = mw_fail(err, MW_EVERSION,
                     "the database is at schema version %d and this server needs %d: run "
                     "'midway-server migrate --db OWNER-CONNINFO' or pass --db-owner",
                     current, mw_migrate_known());
    return rc;
}

/* The login serve works as must be subject to row-level security (dbrole.h). */
static enum mw_err check_runtime_role(const char *conninfo, struct mw_error *err)
{
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(conninfo, &conn, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_dbrole_check_runtime(conn, err);
    PQfinish(conn);
    return rc;
}

/* A conninfo from its flag, else its file, else the environment (NULL when none): a password
 * need never be on the command line. *owned gets what the caller frees (mw_secretfile_free). */
static int pick_conninfo(const char *key, const char *value, const char *file, const char *env,
                         const char **out, char **owned)
{
    *out = NULL;
    *owned = NULL;
    if (value && file) {
        MW_LOG(MW_LOG_ERROR, NULL, "give --%s or --%s-file, not both", key, key);
        return EXIT_USAGE;
    }
    if (value) {
        *out = value;
        return 0;
    }
    if (file) {
        struct mw_error err = {0};
        if (mw_secretfile_read(file, owned, &err) != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "--%s-file: %s", key, err.msg);
            return EXIT_USAGE;
        }
        *out = *owned;
        return 0;
    }
    const char *e = getenv(env);
    if (e && *e)
        *out = e;
    return 0;
}

/* serve's after_bind: the listener is bound and the TLS key loaded; root goes now. */
static enum mw_err drop_root(void *arg, struct mw_error *err)
{
    const struct mw_runas *ra = arg;
    enum mw_err rc = mw_runas_drop(ra, err);
    if (rc == MW_OK && ra->drop)
        MW_LOG(MW_LOG_INFO, NULL, "running as %s (uid %u)", ra->name, (unsigned)ra->uid);
    return rc;
}

/* SIGHUP: the command line is read again (so is the config file it names, which may have
 * changed); of its settings only the log level applies while serving. The others (listen,
 * workers, timeouts, paths) need a restart; the TLS files are re-read by serve itself. */
struct reload_args {
    int argc;
    char **argv;
};

static void on_reload(void *arg)
{
    const struct reload_args *ra = arg;
    struct serve_conf c;
    memset(&c, 0, sizeof c);
    int help = 0;
    enum mw_log_level level = MW_LOG_INFO;
    if (parse_serve_flags(ra->argc, ra->argv, &c, &help) != 0) {
        MW_LOG(MW_LOG_ERROR, NULL,
               "SIGHUP: settings not re-read (the reason is above); log level stays %s",
               mw_log_level_name(mw_log_threshold));
    } else if (!c.log_level || mw_log_level_parse(c.log_level, &level) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL,
               "SIGHUP: log-level must be error, warn, info or debug; it stays %s",
               mw_log_level_name(mw_log_threshold));
    } else {
        enum mw_log_level was = mw_log_threshold;
        /* Workers read the threshold as they log; the macros load it atomically. */
        __atomic_store_n(&mw_log_threshold, level, __ATOMIC_RELAXED);
        if (level == was)
            MW_LOG(level < MW_LOG_INFO ? level : MW_LOG_INFO, NULL,
                   "SIGHUP: log level %s (unchanged)", mw_log_level_name(level));
        else
            MW_LOG(level < MW_LOG_INFO ? level : MW_LOG_INFO, NULL, "SIGHUP: log level %s (was %s)",
                   mw_log_level_name(level), mw_log_level_name(was));
    }
    mw_conf_free(serve_table, SERVE_TABLE_N, &c);
}

static void on_ready(void *arg, int port)
{
    (void)arg;
    MW_LOG(MW_LOG_INFO, NULL, "ready on port %d", port);
}

static int cmd_serve(int argc, char **argv)
{
    /* Nothing serve creates (TLS keys, the database's password file, logs) is for others. */
    umask(077);
    struct serve_conf c;
    memset(&c, 0, sizeof c);
    int help = 0;
    int rc = parse_serve_flags(argc, argv, &c, &help);
    if (rc == 0 && help) {
        fputs(serve_intro, stdout);
        print_table_help(serve_table, SERVE_TABLE_N);
        printf("\nExit: 0 after a clean shutdown, 1 failed to start or serve (logged), 2 usage "
               "error.\n");
    }
    if (rc != 0 || help) {
        mw_conf_free(serve_table, SERVE_TABLE_N, &c);
        return rc;
    }
    rc = setup_logging(c.log_level);
    if (rc != 0) {
        mw_conf_free(serve_table, SERVE_TABLE_N, &c);
        return rc;
    }

    /* SIGHUP's default action kills the process, which would leave the local PostgreSQL
     * started below running with nobody to stop it. Until serve takes the signal over (and
     * again after it returns, while the cluster is stopped), a SIGHUP is ignored. */
    struct sigaction sa_ign, old_hup;
    memset(&sa_ign, 0, sizeof sa_ign);
    sa_ign.sa_handler = SIG_IGN;
    sigemptyset(&sa_ign.sa_mask);
    sigaction(SIGHUP, &sa_ign, &old_hup);

    int lock_fd = -1;
    struct mw_localdb *local = NULL;
    struct mw_error err = {0};
    char cert[4200], key[4200];
    const char *db = NULL, *db_owner = NULL;
    char *db_owned = NULL, *db_owner_owned = NULL;
    struct mw_runas ra;
    if (mw_runas_resolve(c.user, &ra, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "%s", err.msg);
        rc = EXIT_USAGE;
        goto out;
    }
    rc = pick_conninfo("db", c.db, c.db_file, "MIDWAY_DB", &db, &db_owned);
    if (rc == 0)
        rc = pick_conninfo("db-owner", c.db_owner, c.db_owner_file, "MIDWAY_DB_OWNER", &db_owner,
                           &db_owner_owned);
    if (rc != 0)
        goto out;
    struct reload_args rl = {argc, argv};
    rc = 1;
    if (lock_data_dir(c.data, &lock_fd) != 0)
        goto out;

    /* TLS: given files, or the local CA's. */
    if (c.tls_cert || c.tls_key) {
        if (!c.tls_cert || !c.tls_key) {
            MW_LOG(MW_LOG_ERROR, NULL, "--tls-cert and --tls-key go together");
            rc = EXIT_USAGE;
            goto out;
        }
        snprintf(cert, sizeof cert, "%s", c.tls_cert);
        snprintf(key, sizeof key, "%s", c.tls_key);
    } else {
        char tls_dir[4200];
        snprintf(tls_dir, sizeof tls_dir, "%s/tls", c.data);
        const char *names[MW_TLSCA_NAMES_MAX + 1];
        char names_buf[4096] = "";
        if (c.tls_names) {
            snprintf(names_buf, sizeof names_buf, "%s", c.tls_names);
            split_names(names_buf, names, MW_TLSCA_NAMES_MAX + 1);
        }
        enum mw_tlsca_outcome outcome;
        if (mw_tlsca_ensure_ex(tls_dir, c.tls_names ? names : NULL, &outcome, &err) != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "TLS files in %s: %s", tls_dir, err.msg);
            goto out;
        }
        if (outcome != MW_TLSCA_KEPT)
            MW_LOG(MW_LOG_INFO, NULL, "TLS: %s in %s (devices verify with %s/ca.pem)",
                   mw_tlsca_outcome_name(outcome), tls_dir, tls_dir);
        int nc = snprintf(cert, sizeof cert, "%s/server.pem", tls_dir);
        int nk = snprintf(key, sizeof key, "%s/server.key", tls_dir);
        if (nc < 0 || (size_t)nc >= sizeof cert || nk < 0 || (size_t)nk >= sizeof key) {
            MW_LOG(MW_LOG_ERROR, NULL, "data directory path too long");
            goto out;
        }
    }

    /* Database: the local default, or an existing one. */
    const char *runtime = db;
    if (!db) {
        if (mw_localdb_open(c.data, &local, &err) != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "local database in %s: %s", c.data, err.msg);
            goto out;
        }
        local->serving = true; /* serve owns DATA: it stops the cluster at exit */
        runtime = local->runtime_conninfo;
        if (ra.drop && mw_localdb_prepare_drop(local, ra.uid, ra.gid, &err) != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "local database in %s: %s", c.data, err.msg);
            goto out;
        }
    } else if (db_owner) {
        if (migrate_existing(db_owner, &err) != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "migrate: %s", err.msg);
            goto out;
        }
    } else if (check_schema(db, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "%s", err.msg);
        goto out;
    }
    if (check_runtime_role(runtime, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "%s", err.msg);
        goto out;
    }

    struct mw_serve_config sc = {
        .listen = c.listen,
        .tls_cert = cert,
        .tls_key = key,
        .db_conninfo = runtime,
        .workers = (int)c.workers,
        .queue_max = (int)c.queue_max,
        .max_connections = (int)c.max_connections,
        .body_max = (size_t)c.body_max,
        .header_timeout_ms = c.header_timeout,
        .body_timeout_ms = c.body_timeout,
        .write_timeout_ms = c.write_timeout,
        .write_total_timeout_ms = c.write_total_timeout,
        .idle_timeout_ms = c.idle_timeout,
        .shutdown_grace_ms = c.shutdown_grace,
        .pull_limit_default = (int)c.pull_limit,
        .db_statement_timeout_ms = (int)c.db_statement_timeout,
        .db_lock_timeout_ms = (int)c.db_lock_timeout,
        .max_clock_skew_ms = c.max_clock_skew,
        .max_op_age_ms = c.max_op_age,
        .after_bind = drop_root,
        .after_bind_arg = &ra,
        .auth_cache_ttl_ms = c.auth_cache_ttl,
        .unauth_queue_max = (int)c.unauth_queue_max,
        .metrics_listen = c.metrics_listen,
        .max_connections_per_address = (int)c.max_connections_per_address,
        .handshakes_per_second_per_address = (int)c.handshakes_per_second_per_address,
        .reload = on_reload,
        .reload_arg = &rl,
    };
    if (mw_serve_run(&sc, on_ready, NULL, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "serve: %s", err.msg);
        goto out;
    }
    rc = 0;

out:
    if (local) {
        struct mw_error stop_err = {0};
        mw_localdb_close(local, true, &stop_err);
        if (stop_err.code != MW_OK) {
            MW_LOG(MW_LOG_ERROR, NULL, "stopping the local database: %s", stop_err.msg);
            rc = 1;
        } else {
            MW_LOG(MW_LOG_INFO, NULL, "local database stopped");
        }
    }
    if (lock_fd >= 0)
        close(lock_fd);
    mw_secretfile_free(db_owned);
    mw_secretfile_free(db_owner_owned);
    mw_conf_free(serve_table, SERVE_TABLE_N, &c);
    if (rc == 0)
        MW_LOG(MW_LOG_INFO, NULL, "stopped");
    sigaction(SIGHUP, &old_hup, NULL);
    return rc;
}

static const char *const migrate_help =
    "usage: midway-server migrate --db CONNINFO [--log-level LEVEL]\n"
    "\n"
    "Applies the schema migrations compiled into this binary that the database has not\n"
    "recorded yet, each in its own transaction, under an advisory lock (several servers\n"
    "may run this at once). Connect as the schema owner, directly (not through PgBouncer:\n"
    "the lock is held by the session).\n"
    "\n"
    "  --db CONNINFO      libpq connection string or URI of the owner role\n"
    "                     (e.g. 'host=/run/postgresql dbname=midway user=midway_owner')\n"
    "  --log-level LEVEL  error, warn, info (default) or debug\n"
    "  --help             this text\n"
    "\n"
    "Exit: 0 up to date, 1 failed (logged), 2 usage error.\n";

static int cmd_migrate(int argc, char **argv)
{
    const char *db = NULL, *level = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(migrate_help, stdout);
            return 0;
        }
        const char **slot = NULL;
        size_t n = 0;
        if (strncmp(a, "--db", 4) == 0 && (a[4] == '\0' || a[4] == '=')) {
            slot = &db;
            n = 4;
        } else if (strncmp(a, "--log-level", 11) == 0 && (a[11] == '\0' || a[11] == '=')) {
            slot = &level;
            n = 11;
        }
        if (!slot) {
            fprintf(stderr, "midway-server migrate: unknown flag '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        if (a[n] == '=') {
            *slot = a + n + 1;
        } else if (i + 1 < argc) {
            *slot = argv[++i];
        } else {
            fprintf(stderr, "midway-server migrate: %s needs a value\n", a);
            return EXIT_USAGE;
        }
    }
    if (!db) {
        fprintf(stderr, "midway-server migrate: --db CONNINFO is required (see --help)\n");
        return EXIT_USAGE;
    }
    int rc = setup_logging(level);
    if (rc != 0)
        return rc;
    struct mw_error err = {0};
    PGconn *conn = NULL;
    if (mw_db_connect(db, &conn, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "migrate: %s", err.msg);
        return 1;
    }
    struct mw_migrate_report rep;
    enum mw_err mrc = mw_migrate_run(conn, &rep, &err);
    PQfinish(conn);
    if (mrc != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "migrate: %s", err.msg);
        return 1;
    }
    MW_LOG(MW_LOG_INFO, NULL, "migrate: schema version %d (%d applied now, %d already)",
           rep.latest, rep.applied, rep.already);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("midway-server %s (schema %d)\n", MIDWAY_VERSION, mw_migrate_known());
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(argc - 2, argv + 2);
    static const char *const admin_groups[] = {"device", "user", "role", "location", "item"};
    for (size_t i = 0; i < sizeof admin_groups / sizeof admin_groups[0]; i++) {
        if (strcmp(cmd, admin_groups[i]) == 0) {
            mw_log_to_stderr();
            return mw_admin_main(cmd, argc - 2, argv + 2);
        }
    }
    fprintf(stderr, "midway-server: unknown command '%s'\n\n%s", cmd, usage_text);
    return EXIT_USAGE;
}
