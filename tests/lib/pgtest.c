/* pgtest.c - throwaway PostgreSQL clusters for the test programs, on server/pgcluster. */
#include "pgtest.h"

#include "mem.h"
#include "pgcluster.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MIDWAY_SOURCE_DIR
#define MIDWAY_SOURCE_DIR "."
#endif

#define START_ATTEMPTS 3 /* a free port can be taken between probing and binding */

struct pgtest {
    char *root;
    char *data_dir;
    char *socket_dir;
    char *log_file;
    struct mw_pgcluster_config cfg;
    int running;
};

static struct pgtest *live_cluster; /* stopped at exit if the program did not */

static void die(const char *what, const struct mw_error *err)
{
    fprintf(stderr, "test environment: %s: %s\n", what, err ? err->msg : "");
    exit(2);
}

static void stop_at_exit(void)
{
    if (live_cluster)
        pgtest_stop(live_cluster);
}

const char *pgtest_schema_dir(void)
{
    const char *d = getenv("MIDWAY_SCHEMA_DIR");
    return d && *d ? d : MIDWAY_SOURCE_DIR "/schema";
}

struct pgtest *pgtest_start(void)
{
    struct pgtest *pg = calloc(1, sizeof *pg);
    if (!pg)
        die("calloc", NULL);
    pg->root = tu_mkdtemp("pg");
    /* The postgres OS user (when we are root) must reach its directories inside. */
    if (chmod(pg->root, 0755) != 0)
        die("chmod scratch directory", NULL);
    pg->data_dir = tu_path(pg->root, "data");
    pg->socket_dir = tu_path(pg->root, "sock");
    pg->log_file = tu_path(pg->root, "postgres.log");
    pg->cfg = (struct mw_pgcluster_config){
        .data_dir = pg->data_dir,
        .socket_dir = pg->socket_dir,
        .log_file = pg->log_file,
        .listen_loopback = true,
        .no_fsync = true,
    };
    struct mw_error err = {0};
    if (mw_pgcluster_free_port(&pg->cfg.port, &err) != MW_OK)
        die("free port", &err);
    if (mw_pgcluster_init(&pg->cfg, &err) != MW_OK)
        die("initdb", &err);
    for (int attempt = 1;; attempt++) {
        mw_error_clear(&err);
        if (mw_pgcluster_start(&pg->cfg, &err) == MW_OK)
            break;
        if (attempt == START_ATTEMPTS)
            die("starting PostgreSQL", &err);
        mw_error_clear(&err);
        if (mw_pgcluster_free_port(&pg->cfg.port, &err) != MW_OK)
            die("free port", &err);
    }
    pg->running = 1;
    if (!live_cluster) {
        live_cluster = pg;
        atexit(stop_at_exit);
    }
    return pg;
}

char *pgtest_conninfo(struct pgtest *pg, const char *dbname, const char *user)
{
    size_t n = strlen(dbname) + strlen(user) + 96;
    char *s = malloc(n);
    if (!s)
        die("malloc", NULL);
    snprintf(s, n, "host=127.0.0.1 port=%d dbname=%s user=%s connect_timeout=10",
             pg->cfg.port, dbname, user);
    return s;
}

char *pgtest_create_db(struct pgtest *pg, const char *dbname)
{
    char port[16];
    snprintf(port, sizeof port, "%d", pg->cfg.port);
    const char *args[] = {"-h", "127.0.0.1", "-p", port, "-U", "postgres", dbname, NULL};
    struct mw_error err = {0};
    int status = -1;
    if (mw_pgcluster_run("createdb", args, NULL, NULL, &status, &err) != MW_OK)
        die("createdb", &err);
    if (status != 0) {
        fprintf(stderr, "test environment: createdb %s exited with %d\n", dbname, status);
        exit(2);
    }
    return pgtest_conninfo(pg, dbname, "postgres");
}

int pgtest_psql_file(struct pgtest *pg, const char *dbname, const char *file)
{
    char port[16];
    snprintf(port, sizeof port, "%d", pg->cfg.port);
    const char *args[] = {"-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                          "-d", dbname, "-v", "ON_ERROR_STOP=1", "-1", "-f", "-", NULL};
    struct mw_error err = {0};
    int status = -1;
    if (mw_pgcluster_run("psql", args, file, NULL, &status, &err) != MW_OK)
        die("psql", &err);
    return status;
}

static int sql_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] >= '0' && d->d_name[0] <= '9' && n > 4 &&
           strcmp(d->d_name + n - 4, ".sql") == 0;
}

int pgtest_apply_schema(struct pgtest *pg, const char *dbname)
{
    char *dir = tu_path(pgtest_schema_dir(), "postgres");
    struct dirent **names = NULL;
    int n = scandir(dir, &names, sql_name, alphasort);
    if (n < 0)
        die("scandir schema/postgres", NULL);
    for (int i = 0; i < n; i++) {
        char *file = tu_path(dir, names[i]->d_name);
        int status = pgtest_psql_file(pg, dbname, file);
        if (status != 0) {
            fprintf(stderr, "test environment: psql %s exited with %d\n", file, status);
            exit(2);
        }
        free(file);
        free(names[i]);
    }
    free(names);
    free(dir);
    return n;
}

int pgtest_port(const struct pgtest *pg)
{
    return pg->cfg.port;
}

const char *pgtest_data_dir(const struct pgtest *pg)
{
    return pg->data_dir;
}

int pgtest_stop_server(struct pgtest *pg, const char *mode)
{
    struct mw_error err = {0};
    if (mw_pgcluster_stop(&pg->cfg, mode, &err) != MW_OK) {
        fprintf(stderr, "pgtest: stop: %s\n", err.msg);
        return -1;
    }
    pg->running = 0;
    return 0;
}

int pgtest_start_server(struct pgtest *pg)
{
    struct mw_error err = {0};
    if (mw_pgcluster_start(&pg->cfg, &err) != MW_OK) {
        fprintf(stderr, "pgtest: start: %s\n", err.msg);
        return -1;
    }
    pg->running = 1;
    return 0;
}

void pgtest_stop(struct pgtest *pg)
{
    if (!pg)
        return;
    if (pg->running) {
        struct mw_error err = {0};
        if (mw_pgcluster_stop(&pg->cfg, "immediate", &err) != MW_OK)
            fprintf(stderr, "pgtest: stop: %s\n", err.msg);
    }
    if (tu_keep())
        fprintf(stderr, "pgtest: kept %s (port %d)\n", pg->root, pg->cfg.port);
    tu_rmrf(pg->root);
    if (live_cluster == pg)
        live_cluster = NULL;
    free(pg->root);
    free(pg->data_dir);
    free(pg->socket_dir);
    free(pg->log_file);
    free(pg);
}
