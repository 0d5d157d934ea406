/* main.c - the midway-server command line: parses the command and its flags, sets up
 * logging, and hands over to the module that does the work. Exit codes: 0 success,
 * 1 the command failed (the reason is logged), 2 usage error. */
#include "db.h"
#include "midway/log.h"
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

static const char *const usage_text =
    "usage: midway-server COMMAND [FLAGS]\n"
    "\n"
    "Commands:\n"
    "  migrate   bring a PostgreSQL database to this version's schema\n"
    "  version   print the version\n"
    "\n"
    "Run 'midway-server COMMAND --help' for a command's flags.\n";

static const char *const migrate_help =
    "usage: midway-server migrate --db CONNINFO [--log-level LEVEL]\n"
    "\n"
    "Applies the schema migrations compiled into this binary that the database has not\n"
    "recorded yet, each in its own transaction, under an advisory lock (several servers\n"
    "may run this at once). Connect as the schema owner.\n"
    "\n"
    "  --db CONNINFO      libpq connection string or URI of the owner role\n"
    "                     (e.g. 'host=/run/postgresql dbname=midway user=midway_owner')\n"
    "  --log-level LEVEL  error, warn, info (default) or debug\n"
    "  --help             this text\n"
    "\n"
    "Exit: 0 up to date, 1 failed (logged), 2 usage error.\n";

/* Flags shared by the commands; a command reads the ones it knows. */
struct flags {
    const char *db;
    const char *log_level;
    int help;
};

/* Accepts "--name value" and "--name=value". Returns 0, or EXIT_USAGE after printing why. */
static int parse_flags(int argc, char **argv, struct flags *f)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            f->help = 1;
            continue;
        }
        const char *names[] = {"--db", "--log-level"};
        const char **slots[] = {&f->db, &f->log_level};
        int matched = 0;
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            size_t n = strlen(names[k]);
            if (strncmp(a, names[k], n) != 0)
                continue;
            if (a[n] == '=') {
                *slots[k] = a + n + 1;
            } else if (a[n] == '\0') {
                if (i + 1 >= argc) {
                    fprintf(stderr, "midway-server: %s needs a value\n", names[k]);
                    return EXIT_USAGE;
                }
                *slots[k] = argv[++i];
            } else {
                continue;
            }
            matched = 1;
            break;
        }
        if (!matched) {
            fprintf(stderr, "midway-server: unknown flag '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int setup_logging(const struct flags *f)
{
    mw_log_to_stderr();
    if (!f->log_level)
        return 0;
    enum mw_log_level level;
    if (mw_log_level_parse(f->log_level, &level) != MW_OK) {
        fprintf(stderr, "midway-server: --log-level must be error, warn, info or debug\n");
        return EXIT_USAGE;
    }
    mw_log_threshold = level;
    return 0;
}

static int cmd_migrate(const struct flags *f)
{
    if (f->help) {
        fputs(migrate_help, stdout);
        return 0;
    }
    if (!f->db) {
        fprintf(stderr, "midway-server migrate: --db CONNINFO is required (see --help)\n");
        return EXIT_USAGE;
    }
    struct mw_error err = {0};
    PGconn *conn = NULL;
    if (mw_db_connect(f->db, &conn, &err) != MW_OK) {
        MW_LOG(MW_LOG_ERROR, NULL, "migrate: %s", err.msg);
        return 1;
    }
    struct mw_migrate_report rep;
    enum mw_err rc = mw_migrate_run(conn, &rep, &err);
    PQfinish(conn);
    if (rc != MW_OK) {
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
    struct flags f = {0};
    int rc = parse_flags(argc - 2, argv + 2, &f);
    if (rc == 0)
        rc = setup_logging(&f);
    if (rc != 0)
        return rc;
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(&f);
    fprintf(stderr, "midway-server: unknown command '%s'\n\n%s", cmd, usage_text);
    return EXIT_USAGE;
}
