/* admin.c - the admin command line: the command table with each command's help, flag
 * parsing, the database session, and the output helpers the command files share (see
 * admin.h for the commands, admin_internal.h for the helpers). */
#include "admin.h"

#include "admin_internal.h"
#include "db.h"
#include "json.h"
#include "midway/log.h"
#include "timestamp.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Value flags a command may accept; --data, --db-owner, --log-level, --json and --help are
 * accepted by all. */
enum {
    F_NAME = 1u << 0,
    F_KIND = 1u << 1,
    F_ID = 1u << 2,
    F_USERNAME = 1u << 3,
    F_EMAIL = 1u << 4,
    F_ROLE = 1u << 5,
    F_ADDRESS = 1u << 6,
    F_SKU = 1u << 7,
    F_LOCATION = 1u << 8,
    F_QUANTITY = 1u << 9,
    F_COMMON = 1u << 10, /* the connection and logging flags */
};

struct flag_def {
    const char *name;
    unsigned bit;
    size_t offset; /* of the const char * in struct mw_admin_cmd */
};

static const struct flag_def flag_defs[] = {
    {"--name", F_NAME, offsetof(struct mw_admin_cmd, name)},
    {"--kind", F_KIND, offsetof(struct mw_admin_cmd, kind)},
    {"--id", F_ID, offsetof(struct mw_admin_cmd, id)},
    {"--username", F_USERNAME, offsetof(struct mw_admin_cmd, username)},
    {"--email", F_EMAIL, offsetof(struct mw_admin_cmd, email)},
    {"--role", F_ROLE, offsetof(struct mw_admin_cmd, role)},
    {"--address", F_ADDRESS, offsetof(struct mw_admin_cmd, address)},
    {"--sku", F_SKU, offsetof(struct mw_admin_cmd, sku)},
    {"--location", F_LOCATION, offsetof(struct mw_admin_cmd, location)},
    {"--quantity", F_QUANTITY, offsetof(struct mw_admin_cmd, quantity)},
    {"--data", F_COMMON, offsetof(struct mw_admin_cmd, data_dir)},
    {"--db-owner", F_COMMON, offsetof(struct mw_admin_cmd, db_owner)},
    {"--log-level", F_COMMON, offsetof(struct mw_admin_cmd, log_level)},
};
#define N_FLAG_DEFS (sizeof flag_defs / sizeof flag_defs[0])

struct command {
    const char *group;
    const char *sub;
    unsigned flags;
    int positional; /* positional arguments required (0 or 1) */
    int (*run)(const struct mw_admin_cmd *c);
    const char *synopsis;
    const char *help;
};

static const char *const common_help =
    "\n"
    "Database (one of):\n"
    "  --data DIR           the local database under DIR (default " MW_ADMIN_DEFAULT_DATA_DIR ");\n"
    "                       started if it is not running, stopped again afterwards only if\n"
    "                       this command started it (safe while 'serve' runs on DIR)\n"
    "  --db-owner CONNINFO  an existing database, connecting as its owner role\n"
    "                       (e.g. 'host=/run/postgresql dbname=midway user=midway_owner')\n"
    "Output:\n"
    "  --json               print one JSON object on standard output instead of text\n"
    "                       (errors are always text on standard error)\n"
    "  --log-level LEVEL    error, warn, info (default) or debug\n"
    "  --help               this text\n"
    "\n"
    "Exit: 0 done; 1 failed (database unreachable or refused, or the device or user it acts\n"
    "on does not exist); 2 usage or bad input, including a role or location that does not\n"
    "exist and a username, email, SKU or device id already taken (nothing was written).\n";

static const struct command commands[] = {
    {"device", "add", F_NAME | F_KIND | F_ID, 0, mw_admin_device_add,
     "device add --name NAME --kind scanner|gateway [--id ID]",
     "Registers a scanner or gateway and prints its bearer token. The token is shown only\n"
     "now: the database keeps its SHA-256 hash, so a lost token cannot be recovered (revoke\n"
     "the device and add it again). Put the device id and the token into the device's\n"
     "configuration.\n"
     "\n"
     "  --name NAME   what people call it, 1..200 characters (e.g. 'Dock 3 scanner')\n"
     "  --kind KIND   scanner or gateway\n"
     "  --id ID       the id the device pushes under, 1..64 of A-Z a-z 0-9 . _ -\n"
     "                (default: dev- and 16 random hex digits)\n"
     "\n"
     "JSON: {\"device_id\", \"name\", \"kind\", \"token\", \"created_at\"}\n"},
    {"device", "list", 0, 0, mw_admin_device_list, "device list",
     "Lists every registered device, revoked ones included, oldest first. Token hashes are\n"
     "never shown.\n"
     "\n"
     "JSON: {\"devices\": [{\"device_id\", \"name\", \"kind\", \"created_at\", \"last_seen_at\",\n"
     "       \"revoked_at\"}]}  (times are RFC 3339 UTC, or null)\n"},
    {"device", "revoke", 0, 1, mw_admin_device_revoke, "device revoke DEVICE_ID",
     "Revokes a device: its token is refused from the next request on. The row is kept for\n"
     "the audit trail. Revoking a revoked device succeeds and keeps the first time.\n"
     "An unknown id fails with exit 1.\n"
     "\n"
     "JSON: {\"device_id\", \"revoked_at\", \"already_revoked\"}\n"},
    {"user", "add", F_USERNAME | F_EMAIL | F_ROLE, 0, mw_admin_user_add,
     "user add --username USER --email EMAIL --role ROLE",
     "Creates a user holding one role. The password is the first line of standard input\n"
     "(not echoed when typed at a terminal), 1..1024 bytes, stored as an Argon2id hash:\n"
     "  printf '%s\\n' \"$PASSWORD\" | midway-server user add --username ana ...\n"
     "\n"
     "  --username USER  1..255 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit\n"
     "  --email EMAIL    local@domain, at most 255 bytes\n"
     "  --role ROLE      an existing role: admin, manager, operator or auditor as seeded\n"
     "\n"
     "JSON: {\"user_id\", \"username\", \"email\", \"roles\"}\n"},
    {"user", "disable", F_USERNAME, 0, mw_admin_user_disable, "user disable --username USER",
     "Deactivates a user (is_active = false): they lose every permission at once, and their\n"
     "history stays. Users are never deleted. Disabling a disabled user succeeds.\n"
     "An unknown user fails with exit 1.\n"
     "\n"
     "JSON: {\"user_id\", \"username\", \"is_active\", \"already_disabled\"}\n"},
    {"role", "grant", F_USERNAME | F_ROLE, 0, mw_admin_user_grant,
     "role grant --username USER --role ROLE",
     "Gives a user a role (in addition to the ones they hold). Granting a role the user\n"
     "already holds succeeds with \"changed\": false. An unknown user fails with exit 1, an\n"
     "unknown role with exit 2.\n"
     "\n"
     "JSON: {\"user_id\", \"username\", \"role\", \"changed\"}\n"},
    {"role", "revoke", F_USERNAME | F_ROLE, 0, mw_admin_user_ungrant,
     "role revoke --username USER --role ROLE",
     "Takes a role from a user. Revoking a role the user does not hold succeeds with\n"
     "\"changed\": false. An unknown user fails with exit 1, an unknown role with exit 2.\n"
     "\n"
     "JSON: {\"user_id\", \"username\", \"role\", \"changed\"}\n"},
    {"location", "add", F_NAME | F_ADDRESS, 0, mw_admin_stock_location_add,
     "location add --name NAME [--address ADDRESS]",
     "Creates a location that can hold inventory.\n"
     "\n"
     "  --name NAME        1..255 bytes (e.g. 'Aisle 4, bin 12')\n"
     "  --address ADDRESS  up to 4096 bytes; may span lines\n"
     "\n"
     "JSON: {\"location_id\", \"name\", \"address\"}\n"},
    {"item", "add", F_SKU | F_NAME | F_LOCATION | F_QUANTITY, 0, mw_admin_stock_item_add,
     "item add --sku SKU --name NAME --location LOCATION_ID --quantity Q",
     "Creates an inventory item at a location with an initial quantity, and records that\n"
     "quantity in the ledger as a 'receive' movement, so every quantity has an explanation.\n"
     "\n"
     "  --sku SKU            the unique stock-keeping unit, 1..100 bytes, no surrounding spaces\n"
     "  --name NAME          1..255 bytes\n"
     "  --location ID        an active location's id (see 'location add')\n"
     "  --quantity Q         0..2147483647\n"
     "\n"
     "JSON: {\"resource_id\", \"sku\", \"name\", \"location_id\", \"quantity\"}\n"},
    {"item", "history", F_SKU, 0, mw_admin_stock_item_history, "item history --sku SKU",
     "Shows every movement of an item, oldest first: when it happened on the device, when it\n"
     "was applied, its kind, delta and the quantity after, who did it, from which device, and\n"
     "the correlation id that joins it to received_op and both sides' logs. The last line\n"
     "checks that the quantity equals what the ledger explains.\n"
     "\n"
     "JSON: {\"resource_id\", \"sku\", \"name\", \"quantity\", \"ledger_sum\", \"movements\":\n"
     "       [{\"kind\", \"delta\", \"quantity_after\", \"location_id\", \"event_at\",\n"
     "         \"applied_at\", \"user_id\", \"username\", \"device_id\", \"op_id\",\n"
     "         \"correlation_id\"}]}\n"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_command_help(const struct command *cmd, FILE *out)
{
    fprintf(out,
            "usage: midway-server %s\n"
            "         [--data DIR | --db-owner CONNINFO] [--json]\n\n%s%s",
            cmd->synopsis, cmd->help, common_help);
}

/* Returns false when the group has no commands. */
static bool print_group_help(const char *group, FILE *out)
{
    bool any = false;
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].group, group) != 0)
            continue;
        if (!any)
            fprintf(out, "usage:\n");
        any = true;
        fprintf(out, "  midway-server %s\n", commands[i].synopsis);
    }
    if (any)
        fprintf(out, "\nRun 'midway-server %s COMMAND --help' for details.\n", group);
    return any;
}

static void vreport(const struct mw_admin_cmd *c, const char *fmt, va_list ap)
{
    fprintf(stderr, "midway-server %s %s: ", c->group, c->sub ? c->sub : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int mw_admin_usage(const struct mw_admin_cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    return MW_ADMIN_EXIT_USAGE;
}

int mw_admin_failed(const struct mw_admin_cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    return MW_ADMIN_EXIT_FAIL;
}

int mw_admin_db_failed(const struct mw_admin_cmd *c, PGconn *conn, const PGresult *res,
                       const char *what)
{
    struct mw_error err = {0};
    mw_db_fail(&err, conn, res, what);
    return mw_admin_failed(c, "%s", err.msg);
}

/* Parses argv[1..argc) of a subcommand into c. Returns 0 or MW_ADMIN_EXIT_USAGE. */
static int parse_flags(const struct command *cmd, int argc, char **argv, struct mw_admin_cmd *c)
{
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            c->json = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (strcmp(a, "--") == 0 && i + 1 < argc)
                a = argv[++i]; /* "--" lets an argument start with a dash */
            if (positional >= cmd->positional)
                return mw_admin_usage(c, "unexpected argument '%s' (see --help)", a);
            c->arg = a;
            positional++;
            continue;
        }
        const struct flag_def *def = NULL;
        const char *value = NULL;
        for (size_t k = 0; k < N_FLAG_DEFS && !def; k++) {
            size_t n = strlen(flag_defs[k].name);
            if (strncmp(a, flag_defs[k].name, n) != 0)
                continue;
            if (a[n] == '=') {
                def = &flag_defs[k];
                value = a + n + 1;
            } else if (a[n] == '\0') {
                def = &flag_defs[k];
                /* A missing value must not swallow the next flag. */
                if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                    return mw_admin_usage(c, "%s needs a value", def->name);
                value = argv[++i];
            }
        }
        if (!def || (def->bit != F_COMMON && !(cmd->flags & def->bit)))
            return mw_admin_usage(c, "unknown flag '%s' (see --help)", a);
        const char **slot = (const char **)(void *)((char *)c + def->offset);
        if (*slot)
            return mw_admin_usage(c, "%s given twice", def->name);
        *slot = value;
    }
    if (positional < cmd->positional)
        return mw_admin_usage(c, "missing argument (see --help)");
    if (c->data_dir && c->db_owner)
        return mw_admin_usage(c, "give --data or --db-owner, not both");
    if (c->data_dir && c->data_dir[0] == '\0')
        return mw_admin_usage(c, "--data must name a directory");
    if (c->db_owner && c->db_owner[0] == '\0')
        return mw_admin_usage(c, "--db-owner must be a connection string");
    if (c->log_level) {
        enum mw_log_level level;
        if (mw_log_level_parse(c->log_level, &level) != MW_OK)
            return mw_admin_usage(c, "--log-level must be error, warn, info or debug");
        mw_log_threshold = level;
    }
    return 0;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

static bool group_known(const char *group)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].group, group) == 0)
            return true;
    return false;
}

int mw_admin_main(const char *group, int argc, char **argv)
{
    mw_log_to_stderr();
    if (!group || !group_known(group)) {
        fprintf(stderr, "midway-server: unknown command '%s'\n", group ? group : "");
        return MW_ADMIN_EXIT_USAGE;
    }
    if (argc < 1 || !argv || !argv[0]) {
        print_group_help(group, stderr);
        return MW_ADMIN_EXIT_USAGE;
    }
    const char *sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        print_group_help(group, stdout);
        return MW_ADMIN_EXIT_OK;
    }
    const struct command *cmd = NULL;
    for (size_t i = 0; i < N_COMMANDS && !cmd; i++)
        if (strcmp(commands[i].group, group) == 0 && strcmp(commands[i].sub, sub) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "midway-server %s: unknown command '%s'\n\n", group, sub);
        print_group_help(group, stderr);
        return MW_ADMIN_EXIT_USAGE;
    }
    if (wants_help(argc - 1, argv + 1)) {
        print_command_help(cmd, stdout);
        return fflush(stdout) == 0 ? MW_ADMIN_EXIT_OK : MW_ADMIN_EXIT_FAIL;
    }

    struct mw_admin_cmd c = {.group = group, .sub = sub};
    int rc = parse_flags(cmd, argc, argv, &c);
    if (rc != 0)
        return rc;
    rc = cmd->run(&c);
    /* A result that never reached its reader (a closed pipe, a full disk) is a failure: for
     * `device add` it means the token is lost and the device should be revoked. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        clearerr(stdout);
        if (rc == MW_ADMIN_EXIT_OK)
            rc = mw_admin_failed(&c, "could not write the result to standard output: %s",
                                 strerror(errno));
    }
    return rc;
}

void mw_admin_disconnect(struct mw_admin_db *db)
{
    if (!db)
        return;
    PQfinish(db->conn);
    db->conn = NULL;
    if (db->local) {
        struct mw_error err = {0};
        mw_localdb_close(db->local, true, &err);
        if (err.code != MW_OK)
            MW_LOG(MW_LOG_WARN, NULL, "local database: %s", err.msg);
        db->local = NULL;
    }
}

int mw_admin_connect(const struct mw_admin_cmd *c, struct mw_admin_db *db)
{
    struct mw_error err = {0};
    const char *conninfo = c->db_owner;
    db->local = NULL;
    db->conn = NULL;
    if (!conninfo) {
        const char *dir = c->data_dir ? c->data_dir : MW_ADMIN_DEFAULT_DATA_DIR;
        if (mw_localdb_open(dir, &db->local, &err) != MW_OK)
            return mw_admin_failed(c, "local database in %s: %s", dir, err.msg);
        conninfo = db->local->owner_conninfo;
    }
    if (mw_db_connect(conninfo, &db->conn, &err) != MW_OK) {
        mw_admin_disconnect(db);
        return mw_admin_failed(c, "%s", err.msg);
    }
    return MW_ADMIN_EXIT_OK;
}

PGresult *mw_admin_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         PGresult **failed_out)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    *failed_out = NULL;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    *failed_out = res;
    return NULL;
}

int mw_admin_tx(const struct mw_admin_cmd *c, PGconn *conn, const char *sql)
{
    struct mw_error err = {0};
    if (mw_db_exec(conn, sql, &err) != MW_OK)
        return mw_admin_failed(c, "%s", err.msg);
    return MW_ADMIN_EXIT_OK;
}

const char *mw_admin_sqlstate(const PGresult *res)
{
    return mw_db_sqlstate(res);
}

const char *mw_admin_constraint(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    return s ? s : "";
}

int mw_admin_print_json(const struct mw_admin_cmd *c, cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text)
        return mw_admin_failed(c, "out of memory");
    fputs(text, stdout);
    fputc('\n', stdout);
    cJSON_free(text);
    return MW_ADMIN_EXIT_OK;
}

bool mw_admin_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s)
        return false;
    size_t i = 0;
    if (s[0] == '-' && min < 0)
        i = 1;
    size_t digits = 0;
    for (; s[i]; i++, digits++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    /* 19 digits hold every int64; more is out of range whatever they are. */
    if (digits == 0 || digits > 19)
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0' || v < min || v > max)
        return false;
    *out = (int64_t)v;
    return true;
}

bool mw_admin_time_text(const PGresult *res, int row, int col, char out[32])
{
    out[0] = '\0';
    if (PQgetisnull(res, row, col))
        return true;
    int64_t ms;
    if (!mw_admin_parse_int(PQgetvalue(res, row, col), MW_TIMESTAMP_MIN_MS, MW_TIMESTAMP_MAX_MS,
                            &ms))
        return false;
    char text[MW_TIMESTAMP_LEN];
    struct mw_error err = {0};
    if (mw_timestamp_format(ms, text, &err) != MW_OK)
        return false;
    memcpy(out, text, sizeof text);
    return true;
}

bool mw_admin_json_time(cJSON *obj, const char *key, const PGresult *res, int row, int col)
{
    char text[32];
    if (!mw_admin_time_text(res, row, col, text))
        return false;
    if (text[0] == '\0')
        return cJSON_AddNullToObject(obj, key) != NULL;
    return cJSON_AddStringToObject(obj, key, text) != NULL;
}

bool mw_admin_text_ok(const char *s, size_t min, size_t max, bool allow_newlines)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n < min || n > max || !mw_json_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (allow_newlines && (ch == '\n' || ch == '\t'))
            continue;
        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

size_t mw_admin_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

const char *mw_admin_printable(const char *s, char *out, size_t size)
{
    size_t o = 0;
    size_t i = 0;
    for (; s && s[i] && o + 1 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[o] = '\0';
    if (s && s[i] && size >= 4) {
        /* Cut before a character that the "..." would split, so the text stays UTF-8. */
        size_t cut = size - 4;
        while (cut > 0 && ((unsigned char)out[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(out + cut, "...", 4);
    }
    return out;
}
