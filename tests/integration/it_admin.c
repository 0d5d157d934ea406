/* it_admin.c - the admin commands and device authentication against a real throwaway
 * PostgreSQL: each command run as an operator would (mw_admin_main with its flags, stdout
 * and stderr captured, the password on standard input), then the database checked for what
 * it must and must not hold. Device tokens are authenticated as the runtime role, the way
 * the serving workers do; the local database mode (--data) is run against its own cluster,
 * also while another process (here: this one) keeps that cluster running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "admin.h"
#include "auth.h"
#include "db.h"
#include "json.h"
#include "localdb.h"
#include "password.h"
#include "pgtest.h"
#include "testutil.h"
#include "timestamp.h"
#include "token.h"
#include "uuid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_NAME  "it_admin"
#define APP_ROLE "it_admin_app" /* a deployment's LOGIN role, member of midway_runtime */

static struct pgtest *pg;
static char *owner_ci; /* superuser: the owner of everything in DB_NAME */
static char *app_ci;   /* the runtime role */
static PGconn *su;

/* ---- running a command ---- */

struct run {
    int rc;
    char *out; /* stdout, NUL-terminated */
    char *err; /* stderr */
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    if (n < 0)
        fail_msg("ftell: %s", strerror(errno));
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    rewind(f);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    return s;
}

/* Runs mw_admin_main(group, args...) with stdin_text (NULL: /dev/null) on fd 0 and fds 1 and
 * 2 captured. args end with NULL. */
static struct run run_in(const char *stdin_text, const char *group, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    for (; args[argc]; argc++) {
        assert_true(argc < 31);
        argv[argc] = (char *)args[argc];
    }
    argv[argc] = NULL;

    FILE *in = tmpfile();
    FILE *out = tmpfile();
    FILE *errf = tmpfile();
    assert_true(in && out && errf);
    if (stdin_text) {
        fputs(stdin_text, in);
        fflush(in);
        rewind(in);
    } else {
        fclose(in);
        in = fopen("/dev/null", "r");
        assert_non_null(in);
    }
    fflush(stdout);
    fflush(stderr);
    int saved[3] = {dup(0), dup(1), dup(2)};
    assert_true(saved[0] >= 0 && saved[1] >= 0 && saved[2] >= 0);
    assert_true(dup2(fileno(in), 0) >= 0 && dup2(fileno(out), 1) >= 0 &&
                dup2(fileno(errf), 2) >= 0);

    struct run r = {0};
    r.rc = mw_admin_main(group, argc, argv);

    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 3; i++) {
        dup2(saved[i], i);
        close(saved[i]);
    }
    fseek(out, 0, SEEK_END);
    fseek(errf, 0, SEEK_END);
    r.out = slurp(out);
    r.err = slurp(errf);
    fclose(in);
    fclose(out);
    fclose(errf);
    return r;
}

#define RUN(stdin_text, group, ...) \
    run_in((stdin_text), (group), (const char *const[]){__VA_ARGS__, NULL})

/* The same against the test database. */
#define ADMIN(stdin_text, group, ...) \
    RUN((stdin_text), (group), __VA_ARGS__, "--db-owner", owner_ci)

static cJSON *parse_json(const char *text)
{
    cJSON *root = NULL;
    struct mw_error err = {0};
    if (mw_json_parse(text, strlen(text), &root, &err) != MW_OK)
        fail_msg("stdout is not one JSON value (%s): %s", err.msg, text);
    /* One object on one line. */
    assert_true(cJSON_IsObject(root));
    const char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_string_equal(nl, "\n");
    return root;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v))
        fail_msg("JSON has no string \"%s\"", key);
    return v->valuestring;
}

static double jnum(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v))
        fail_msg("JSON has no number \"%s\"", key);
    return v->valuedouble;
}

static bool jbool(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsBool(v))
        fail_msg("JSON has no boolean \"%s\"", key);
    return cJSON_IsTrue(v);
}

/* ---- the database, through parameters only ---- */

static char *query1(PGconn *c, const char *sql, const char *p1)
{
    const char *params[1] = {p1};
    PGresult *res = PQexecParams(c, sql, p1 ? 1 : 0, NULL, p1 ? params : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    char *v = NULL;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v; /* NULL: no row or SQL NULL */
}

static long count1(const char *sql, const char *p1)
{
    char *v = query1(su, sql, p1);
    assert_non_null(v);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

static void exec1(PGconn *c, const char *sql, const char *p1)
{
    const char *params[1] = {p1};
    PGresult *res = PQexecParams(c, sql, p1 ? 1 : 0, NULL, p1 ? params : NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

static PGconn *connect_as(const char *ci)
{
    PGconn *c = NULL;
    struct mw_error err = {0};
    if (mw_db_connect(ci, &c, &err) != MW_OK)
        fail_msg("connect: %s", err.msg);
    return c;
}

/* Adds a device and returns its JSON (caller deletes). */
static cJSON *add_device(const char *name, const char *kind, const char *id)
{
    struct run r =
        id ? ADMIN(NULL, "device", "add", "--name", name, "--kind", kind, "--id", id, "--json")
           : ADMIN(NULL, "device", "add", "--name", name, "--kind", kind, "--json");
    if (r.rc != 0)
        fail_msg("device add: rc %d: %s", r.rc, r.err);
    cJSON *j = parse_json(r.out);
    run_free(&r);
    return j;
}

/* ---- help and usage ---- */

static void test_admin_every_command_has_help(void **state)
{
    (void)state;
    const char *cmds[][2] = {{"device", "add"},  {"device", "list"},  {"device", "revoke"},
                             {"user", "add"},    {"user", "disable"}, {"role", "grant"},
                             {"role", "revoke"}, {"location", "add"}, {"item", "add"}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct run r = RUN(NULL, cmds[i][0], cmds[i][1], "--help");
        assert_int_equal(r.rc, 0);
        assert_non_null(strstr(r.out, "usage: midway-server "));
        assert_non_null(strstr(r.out, cmds[i][1]));
        assert_non_null(strstr(r.out, "--db-owner"));
        assert_non_null(strstr(r.out, "--json"));
        assert_non_null(strstr(r.out, "Exit: 0"));
        assert_string_equal(r.err, "");
        run_free(&r);
        /* --help wins wherever it is, even next to bad flags. */
        r = RUN(NULL, cmds[i][0], cmds[i][1], "--bogus", "-h");
        assert_int_equal(r.rc, 0);
        run_free(&r);
    }
    const char *groups[] = {"device", "user", "role", "location", "item"};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        struct run r = RUN(NULL, groups[i], "--help");
        assert_int_equal(r.rc, 0);
        assert_non_null(strstr(r.out, groups[i]));
        run_free(&r);
        r = run_in(NULL, groups[i], (const char *const[]){NULL});
        assert_int_equal(r.rc, 2); /* no subcommand */
        assert_non_null(strstr(r.err, "usage:"));
        run_free(&r);
    }
    struct run r = RUN(NULL, "device", "frobnicate");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unknown command 'frobnicate'"));
    run_free(&r);
    r = RUN(NULL, "gadget", "add");
    assert_int_equal(r.rc, 2);
    run_free(&r);
}

static void test_admin_usage_errors_exit_2(void **state)
{
    (void)state;
    struct run r = RUN(NULL, "device", "list", "--db-owner", owner_ci, "--data", "/tmp/x");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "not both"));
    run_free(&r);
    r = ADMIN(NULL, "device", "list", "--name", "x"); /* a flag of another command */
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unknown flag '--name'"));
    run_free(&r);
    r = ADMIN(NULL, "device", "add", "--name", "a", "--name", "b", "--kind", "scanner");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "twice"));
    run_free(&r);
    r = ADMIN(NULL, "device", "add", "--name", "--kind", "scanner");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--name needs a value"));
    run_free(&r);
    r = ADMIN(NULL, "device", "list", "extra");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unexpected argument"));
    run_free(&r);
    r = ADMIN(NULL, "device", "revoke");
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ADMIN(NULL, "device", "list", "--log-level", "loud");
    assert_int_equal(r.rc, 2);
    run_free(&r);
    /* A database that is not there is a failure, not a usage error. */
    r = RUN(NULL, "device", "list", "--db-owner", "host=127.0.0.1 port=1 connect_timeout=2");
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "midway-server device list: "));
    run_free(&r);
}

/* ---- devices and authentication ---- */

static void test_admin_device_add_stores_only_the_hash(void **state)
{
    (void)state;
    cJSON *j = add_device("Dock 3 scanner", "scanner", NULL);
    const char *id = jstr(j, "device_id");
    const char *token = jstr(j, "token");
    assert_true(mw_token_device_id_valid(id, strlen(id)));
    assert_memory_equal(id, "dev-", 4);
    assert_true(mw_token_well_formed(token, strlen(token)));
    assert_string_equal(jstr(j, "name"), "Dock 3 scanner");
    assert_string_equal(jstr(j, "kind"), "scanner");
    int64_t ms;
    struct mw_error err = {0};
    const char *created = jstr(j, "created_at");
    assert_int_equal(mw_timestamp_parse(created, strlen(created), &ms, &err), MW_OK);

    char hash[MW_TOKEN_HASH_SIZE];
    assert_int_equal(mw_token_hash(token, strlen(token), hash, &err), MW_OK);
    char *stored = query1(su, "SELECT token_hash FROM device WHERE device_id = $1", id);
    assert_non_null(stored);
    assert_string_equal(stored, hash);
    free(stored);
    /* The token itself is nowhere in the row, nor in any other device row. */
    assert_int_equal(count1("SELECT count(*) FROM device d WHERE strpos(d::text, $1) > 0",
                            token + MW_TOKEN_PREFIX_LEN),
                     0);

    /* Human output shows the id and the token, once. */
    struct run r =
        ADMIN(NULL, "device", "add", "--name", "Gate", "--kind", "gateway", "--id", "gw-north.1");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "gw-north.1"));
    const char *t = strstr(r.out, "token:");
    assert_non_null(t);
    t += strlen("token:");
    while (*t == ' ')
        t++;
    assert_true(mw_token_well_formed(t, MW_TOKEN_LEN));
    assert_string_equal(r.err, "");
    run_free(&r);
    assert_int_equal(count1("SELECT count(*) FROM device WHERE device_id = $1 AND kind = "
                            "'gateway'",
                            "gw-north.1"),
                     1);
    cJSON_Delete(j);
}

static void test_admin_device_add_bad_input_writes_nothing(void **state)
{
    (void)state;
    long before = count1("SELECT count(*) FROM device", NULL);
    char long_name[202];
    memset(long_name, 'n', 201);
    long_name[201] = '\0';
    char name200[201 * 2];
    /* 200 characters of two bytes each: the limit is in characters, like the CHECK. */
    for (int i = 0; i < 200; i++)
        memcpy(name200 + 2 * i, "\xc3\xa9", 2);
    name200[400] = '\0';

    struct {
        const char *name, *kind, *id, *msg;
    } cases[] = {
        {NULL, "scanner", NULL, "--name is required"},
        {"", "scanner", NULL, "--name must be"},
        {long_name, "scanner", NULL, "--name must be"},
        {"tab\there", "scanner", NULL, "--name must be"},
        {"bad \xff utf8", "scanner", NULL, "--name must be"},
        {"x", NULL, NULL, "--kind is required"},
        {"x", "printer", NULL, "--kind must be scanner or gateway"},
        {"x", "Scanner", NULL, "--kind must be scanner or gateway"},
        {"x", "scanner", "has space", "--id must be"},
        {"x", "scanner", "", "--id must be"},
        {"x", "scanner", "a/b", "--id must be"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[16];
        int n = 0;
        args[n++] = "add";
        if (cases[i].name) {
            args[n++] = "--name";
            args[n++] = cases[i].name;
        }
        if (cases[i].kind) {
            args[n++] = "--kind";
            args[n++] = cases[i].kind;
        }
        if (cases[i].id) {
            args[n++] = "--id";
            args[n++] = cases[i].id;
        }
        args[n++] = "--db-owner";
        args[n++] = owner_ci;
        args[n] = NULL;
        struct run r = run_in(NULL, "device", args);
        if (r.rc != 2 || !strstr(r.err, cases[i].msg))
            fail_msg("case %zu: rc %d, stderr: %s", i, r.rc, r.err);
        assert_string_equal(r.out, "");
        run_free(&r);
    }
    assert_int_equal(count1("SELECT count(*) FROM device", NULL), before);

    /* 200 two-byte characters fit; an id that exists is refused with exit 2. */
    cJSON *j = add_device(name200, "gateway", "dup-id");
    cJSON_Delete(j);
    struct run r =
        ADMIN(NULL, "device", "add", "--name", "again", "--kind", "scanner", "--id", "dup-id");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "already exists"));
    run_free(&r);
    assert_int_equal(count1("SELECT count(*) FROM device", NULL), before + 1);
}

static void test_admin_device_list_shows_no_secrets(void **state)
{
    (void)state;
    cJSON *a = add_device("List me", "scanner", "list-me");
    struct run r = ADMIN(NULL, "device", "list", "--json");
    assert_int_equal(r.rc, 0);
    cJSON *j = parse_json(r.out);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(j, "devices");
    assert_true(cJSON_IsArray(devs));
    assert_int_equal(cJSON_GetArraySize(devs), (int)count1("SELECT count(*) FROM device", NULL));
    const cJSON *found = NULL;
    const cJSON *d;
    cJSON_ArrayForEach(d, devs)
    {
        assert_null(cJSON_GetObjectItemCaseSensitive(d, "token_hash"));
        assert_null(cJSON_GetObjectItemCaseSensitive(d, "token"));
        if (strcmp(jstr(d, "device_id"), "list-me") == 0)
            found = d;
    }
    assert_non_null(found);
    assert_string_equal(jstr(found, "name"), "List me");
    assert_string_equal(jstr(found, "kind"), "scanner");
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(found, "created_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(found, "last_seen_at")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(found, "revoked_at")));
    char hash[MW_TOKEN_HASH_SIZE];
    struct mw_error err = {0};
    assert_int_equal(mw_token_hash(jstr(a, "token"), MW_TOKEN_LEN, hash, &err), MW_OK);
    assert_null(strstr(r.out, hash));
    cJSON_Delete(j);
    run_free(&r);

    r = ADMIN(NULL, "device", "list");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "DEVICE_ID"));
    assert_non_null(strstr(r.out, "list-me"));
    assert_null(strstr(r.out, hash));
    run_free(&r);
    cJSON_Delete(a);
}

static char *last_seen(const char *id)
{
    return query1(su, "SELECT last_seen_at::text FROM device WHERE device_id = $1", id);
}

static void test_admin_auth_accepts_its_token_and_nothing_else(void **state)
{
    (void)state;
    cJSON *a = add_device("Auth A", "scanner", "auth-a");
    cJSON *b = add_device("Auth B", "gateway", "auth-b");
    PGconn *app = connect_as(app_ci);
    char id[MW_DEVICE_ID_MAX + 1];
    struct mw_error err = {0};

    assert_null(last_seen("auth-a"));
    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_OK);
    assert_string_equal(id, "auth-a");
    char *seen1 = last_seen("auth-a");
    assert_non_null(seen1);
    assert_int_equal(mw_auth_device(app, jstr(b, "token"), id, &err), MW_OK);
    assert_string_equal(id, "auth-b");

    /* A second request within the minute writes nothing. */
    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_OK);
    char *seen2 = last_seen("auth-a");
    assert_string_equal(seen1, seen2);
    free(seen2);
    /* An hour-old last_seen is refreshed. */
    exec1(su, "UPDATE device SET last_seen_at = now() - interval '1 hour' WHERE device_id = $1",
          "auth-a");
    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_OK);
    assert_int_equal(count1("SELECT count(*) FROM device WHERE device_id = $1 AND last_seen_at "
                            "> now() - interval '1 minute'",
                            "auth-a"),
                     1);
    free(seen1);

    /* Wrong, malformed, empty and missing tokens: one code, one message. */
    char other[MW_TOKEN_SIZE];
    assert_int_equal(mw_token_generate(other, &err), MW_OK);
    char flipped[MW_TOKEN_SIZE];
    memcpy(flipped, jstr(a, "token"), sizeof flipped);
    flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
    char with_newline[MW_TOKEN_SIZE + 2];
    snprintf(with_newline, sizeof with_newline, "%s\n", jstr(a, "token"));
    const char *bad[] = {other, flipped, "", "mwd_", "Bearer x", with_newline, "' OR 1=1 --"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mw_error_clear(&err);
        assert_int_equal(mw_auth_device(app, bad[i], id, &err), MW_EAUTH);
        assert_string_equal(err.msg, MW_AUTH_REJECTED_MSG);
        assert_string_equal(id, "");
    }
    mw_error_clear(&err);
    assert_int_equal(mw_auth_device(app, NULL, id, &err), MW_EAUTH);
    assert_string_equal(err.msg, MW_AUTH_REJECTED_MSG);
    /* The hash is not a token: presenting the stored value gets nothing. */
    char *stored = query1(su, "SELECT token_hash FROM device WHERE device_id = $1", "auth-a");
    mw_error_clear(&err);
    assert_int_equal(mw_auth_device(app, stored, id, &err), MW_EAUTH);
    free(stored);

    PQfinish(app);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_admin_auth_never_waits_for_a_locked_device_row(void **state)
{
    (void)state;
    cJSON *a = add_device("Busy", "gateway", "busy-gw");
    exec1(su, "UPDATE device SET last_seen_at = now() - interval '1 hour' WHERE device_id = $1",
          "busy-gw");
    char *before = last_seen("busy-gw");

    /* Another session holds the row, as a batch of this device being applied does. */
    PGconn *batch = connect_as(owner_ci);
    exec1(batch, "BEGIN", NULL);
    exec1(batch, "SELECT 1 FROM device WHERE device_id = $1 FOR UPDATE", "busy-gw");

    PGconn *app = connect_as(app_ci);
    exec1(app, "SET statement_timeout = '5s'", NULL); /* a wait would fail, not hang */
    char id[MW_DEVICE_ID_MAX + 1];
    struct mw_error err = {0};
    enum mw_err rc = mw_auth_device(app, jstr(a, "token"), id, &err);
    if (rc != MW_OK)
        fail_msg("auth while the row is locked: %s", err.msg);
    assert_string_equal(id, "busy-gw");
    exec1(batch, "COMMIT", NULL);
    char *after = last_seen("busy-gw");
    assert_string_equal(before, after); /* skipped, not waited for */

    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_OK);
    assert_int_equal(count1("SELECT count(*) FROM device WHERE device_id = $1 AND last_seen_at "
                            "> now() - interval '1 minute'",
                            "busy-gw"),
                     1);
    free(before);
    free(after);
    PQfinish(app);
    PQfinish(batch);
    cJSON_Delete(a);
}

static void test_admin_device_revoke_refuses_the_token(void **state)
{
    (void)state;
    cJSON *a = add_device("Revoke me", "scanner", "rev-1");
    PGconn *app = connect_as(app_ci);
    char id[MW_DEVICE_ID_MAX + 1];
    struct mw_error err = {0};
    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_OK);

    struct run r = ADMIN(NULL, "device", "revoke", "rev-1", "--json");
    assert_int_equal(r.rc, 0);
    cJSON *j = parse_json(r.out);
    assert_string_equal(jstr(j, "device_id"), "rev-1");
    assert_false(jbool(j, "already_revoked"));
    char *first = strdup(jstr(j, "revoked_at"));
    cJSON_Delete(j);
    run_free(&r);

    mw_error_clear(&err);
    assert_int_equal(mw_auth_device(app, jstr(a, "token"), id, &err), MW_EAUTH);
    assert_string_equal(err.msg, MW_AUTH_REJECTED_MSG); /* same as an unknown token */

    /* Again: success, and the first time stays. */
    r = ADMIN(NULL, "device", "revoke", "rev-1", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_true(jbool(j, "already_revoked"));
    assert_string_equal(jstr(j, "revoked_at"), first);
    cJSON_Delete(j);
    run_free(&r);
    r = ADMIN(NULL, "device", "revoke", "rev-1");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "already revoked"));
    run_free(&r);

    /* The row stays for the audit trail and shows in the list as revoked. */
    r = ADMIN(NULL, "device", "list", "--json");
    j = parse_json(r.out);
    const cJSON *d;
    bool seen = false;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(j, "devices"))
    {
        if (strcmp(jstr(d, "device_id"), "rev-1") == 0) {
            assert_string_equal(jstr(d, "revoked_at"), first);
            seen = true;
        }
    }
    assert_true(seen);
    cJSON_Delete(j);
    run_free(&r);

    r = ADMIN(NULL, "device", "revoke", "no-such-device");
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "no device with id 'no-such-device'"));
    run_free(&r);
    r = ADMIN(NULL, "device", "revoke", "bad id!");
    assert_int_equal(r.rc, 2);
    run_free(&r);

    free(first);
    PQfinish(app);
    cJSON_Delete(a);
}

/* ---- users and roles ---- */

static void test_admin_user_add_stores_argon2id(void **state)
{
    (void)state;
    struct run r = ADMIN("correct horse battery\n", "user", "add", "--username", "ana", "--email",
                         "ana@example.com", "--role", "operator", "--json");
    if (r.rc != 0)
        fail_msg("user add: %s", r.err);
    cJSON *j = parse_json(r.out);
    const char *uid = jstr(j, "user_id");
    struct mw_uuid u;
    assert_int_equal(mw_uuid_parse(uid, strlen(uid), &u), MW_OK);
    assert_int_equal(mw_uuid_version(&u), 7);
    assert_string_equal(jstr(j, "username"), "ana");
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(j, "roles");
    assert_int_equal(cJSON_GetArraySize(roles), 1);
    assert_string_equal(cJSON_GetArrayItem(roles, 0)->valuestring, "operator");
    assert_null(strstr(r.out, "correct horse"));
    assert_null(strstr(r.err, "correct horse"));
    run_free(&r);

    char *hash = query1(su, "SELECT password_hash FROM users WHERE user_id = $1::uuid", uid);
    assert_non_null(hash);
    assert_memory_equal(hash, "$argon2id$", 10);
    assert_non_null(strstr(hash, "m=65536,t=3,p=1"));
    assert_null(strstr(hash, "correct horse"));
    struct mw_error err = {0};
    assert_int_equal(mw_password_verify(hash, "correct horse battery", 21, &err), MW_OK);
    assert_int_equal(mw_password_verify(hash, "correct horse battery\n", 22, &err), MW_EAUTH);
    assert_int_equal(mw_password_verify(hash, "wrong", 5, &err), MW_EAUTH);
    free(hash);
    assert_int_equal(count1("SELECT count(*) FROM userroles ur JOIN roles r USING (role_id)"
                            " WHERE ur.user_id = $1::uuid AND r.role_name = 'operator'",
                            uid),
                     1);
    assert_int_equal(
        count1("SELECT count(*) FROM users WHERE user_id = $1::uuid AND is_active", uid), 1);
    cJSON_Delete(j);

    /* A CRLF line ending is not part of the password; human output by default. */
    r = ADMIN("pw-ben\r\nignored second line\n", "user", "add", "--username", "ben.k", "--email",
              "ben@warehouse.example.org", "--role", "manager");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "ben.k"));
    run_free(&r);
    hash = query1(su, "SELECT password_hash FROM users WHERE username = $1", "ben.k");
    assert_int_equal(mw_password_verify(hash, "pw-ben", 6, &err), MW_OK);
    free(hash);
}

static void test_admin_user_add_bad_input_writes_nothing(void **state)
{
    (void)state;
    long users = count1("SELECT count(*) FROM users", NULL);
    long feed = count1("SELECT count(*) FROM change_feed", NULL);
    struct {
        const char *stdin_text, *username, *email, *role, *msg;
    } cases[] = {
        {"pw\n", "carl", "not-an-email", "operator", "--email"},
        {"pw\n", "carl", "carl@localhost", "operator", "--email"},
        {"pw\n", "carl", "carl@@example.com", "operator", "--email"},
        {"pw\n", "carl", "car l@example.com", "operator", "--email"},
        {"pw\n", "carl", "carl@exa_mple.com", "operator", "--email"},
        {"pw\n", "carl", "carl@-example.com", "operator", "--email"},
        {"pw\n", "carl", "@example.com", "operator", "--email"},
        {"pw\n", "carl", "carl@example.com", "overlord", "no role named 'overlord'"},
        {"pw\n", "carl", "carl@example.com", "", "--role must be"},
        {"pw\n", "-carl", "carl@example.com", "operator", "--username"},
        {"pw\n", "car l", "carl@example.com", "operator", "--username"},
        {"pw\n", "", "carl@example.com", "operator", "--username"},
        {"pw\n", "ana", "carl@example.com", "operator", "username 'ana' is taken"},
        {"pw\n", "carl", "ana@example.com", "operator", "already used"},
        {"\n", "carl", "carl@example.com", "operator", "empty password"},
        {NULL, "carl", "carl@example.com", "operator", "no password"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r = ADMIN(cases[i].stdin_text, "user", "add", "--username", cases[i].username,
                             "--email", cases[i].email, "--role", cases[i].role);
        if (r.rc != 2 || !strstr(r.err, cases[i].msg))
            fail_msg("case %zu: rc %d, stderr: %s", i, r.rc, r.err);
        run_free(&r);
    }
    /* The list of roles helps whoever mistyped one. */
    struct run r = ADMIN("pw\n", "user", "add", "--username", "carl", "--email", "carl@example.com",
                         "--role", "overlord");
    assert_non_null(strstr(r.err, "admin, auditor, manager, operator"));
    run_free(&r);
    /* A password over the bound. */
    char *big = malloc(MW_PASSWORD_MAX + 3);
    memset(big, 'p', MW_PASSWORD_MAX + 1);
    memcpy(big + MW_PASSWORD_MAX + 1, "\n", 2);
    r = ADMIN(big, "user", "add", "--username", "carl", "--email", "carl@example.com", "--role",
              "operator");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "longer than"));
    run_free(&r);
    free(big);

    assert_int_equal(count1("SELECT count(*) FROM users", NULL), users);
    assert_int_equal(count1("SELECT count(*) FROM change_feed", NULL), feed);
}

static void test_admin_user_disable_and_roles(void **state)
{
    (void)state;
    struct run r = ADMIN("pw-dora\n", "user", "add", "--username", "dora", "--email",
                         "dora@example.com", "--role", "operator", "--json");
    assert_int_equal(r.rc, 0);
    cJSON *j = parse_json(r.out);
    char *uid = strdup(jstr(j, "user_id"));
    cJSON_Delete(j);
    run_free(&r);

    r = ADMIN(NULL, "role", "grant", "--username", "dora", "--role", "manager", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_true(jbool(j, "changed"));
    assert_string_equal(jstr(j, "user_id"), uid);
    assert_string_equal(jstr(j, "role"), "manager");
    cJSON_Delete(j);
    run_free(&r);
    r = ADMIN(NULL, "role", "grant", "--username", "dora", "--role", "manager", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_false(jbool(j, "changed"));
    cJSON_Delete(j);
    run_free(&r);
    assert_int_equal(count1("SELECT count(*) FROM userroles WHERE user_id = $1::uuid", uid), 2);
    /* Holding manager now gives inventory.receive, which operator alone does not. */
    assert_int_equal(
        count1("SELECT midway_user_has_permission($1::uuid, 'inventory.receive')::int", uid), 1);

    r = ADMIN(NULL, "role", "revoke", "--username", "dora", "--role", "manager", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_true(jbool(j, "changed"));
    cJSON_Delete(j);
    run_free(&r);
    r = ADMIN(NULL, "role", "revoke", "--username", "dora", "--role", "manager");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "did not hold"));
    run_free(&r);
    assert_int_equal(
        count1("SELECT midway_user_has_permission($1::uuid, 'inventory.receive')::int", uid), 0);

    r = ADMIN(NULL, "role", "grant", "--username", "dora", "--role", "overlord");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "no role named"));
    run_free(&r);
    r = ADMIN(NULL, "role", "grant", "--username", "nobody", "--role", "manager");
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "no user named 'nobody'"));
    run_free(&r);
    r = ADMIN(NULL, "role", "grant", "--username", "dora");
    assert_int_equal(r.rc, 2);
    run_free(&r);

    assert_int_equal(
        count1("SELECT midway_user_has_permission($1::uuid, 'inventory.adjust')::int", uid), 1);
    r = ADMIN(NULL, "user", "disable", "--username", "dora", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_false(jbool(j, "is_active"));
    assert_false(jbool(j, "already_disabled"));
    assert_string_equal(jstr(j, "user_id"), uid);
    cJSON_Delete(j);
    run_free(&r);
    assert_int_equal(count1("SELECT (NOT is_active)::int FROM users WHERE user_id = $1::uuid", uid),
                     1);
    assert_int_equal(
        count1("SELECT midway_user_has_permission($1::uuid, 'inventory.adjust')::int", uid), 0);
    r = ADMIN(NULL, "user", "disable", "--username", "dora", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_true(jbool(j, "already_disabled"));
    cJSON_Delete(j);
    run_free(&r);
    r = ADMIN(NULL, "user", "disable", "--username", "nobody");
    assert_int_equal(r.rc, 1);
    run_free(&r);
    r = ADMIN(NULL, "user", "disable");
    assert_int_equal(r.rc, 2);
    run_free(&r);
    free(uid);
}

/* ---- locations and items ---- */

static void test_admin_location_and_item_add(void **state)
{
    (void)state;
    struct run r = ADMIN(NULL, "location", "add", "--name", "Aisle 4", "--address",
                         "1 Dock Road\nSpringfield", "--json");
    assert_int_equal(r.rc, 0);
    cJSON *j = parse_json(r.out);
    double loc = jnum(j, "location_id");
    assert_true(loc >= 1);
    assert_string_equal(jstr(j, "address"), "1 Dock Road\nSpringfield");
    cJSON_Delete(j);
    run_free(&r);
    char loc_text[24];
    snprintf(loc_text, sizeof loc_text, "%.0f", loc);

    r = ADMIN(NULL, "location", "add", "--name", "Yard", "--json");
    assert_int_equal(r.rc, 0);
    j = parse_json(r.out);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "address")));
    assert_true(jnum(j, "location_id") > loc);
    cJSON_Delete(j);
    run_free(&r);

    r = ADMIN(NULL, "item", "add", "--sku", "SKU-100", "--name", "Widget", "--location", loc_text,
              "--quantity", "12", "--json");
    if (r.rc != 0)
        fail_msg("item add: %s", r.err);
    j = parse_json(r.out);
    const char *rid = jstr(j, "resource_id");
    struct mw_uuid u;
    assert_int_equal(mw_uuid_parse(rid, strlen(rid), &u), MW_OK);
    assert_int_equal((int)jnum(j, "quantity"), 12);
    assert_int_equal((int)jnum(j, "location_id"), (int)loc);
    assert_string_equal(jstr(j, "sku"), "SKU-100");
    assert_int_equal(count1("SELECT quantity FROM inventory WHERE resource_id = $1::uuid", rid),
                     12);
    /* The ledger explains the quantity: one receive of 12. */
    assert_int_equal(count1("SELECT count(*) FROM inventory_ledger WHERE resource_id = $1::uuid"
                            " AND kind = 'receive' AND delta = 12 AND quantity_after = 12"
                            " AND op_id IS NULL",
                            rid),
                     1);
    assert_int_equal(count1("SELECT coalesce(sum(delta), -1) FROM inventory_ledger"
                            " WHERE resource_id = $1::uuid",
                            rid),
                     12);
    cJSON_Delete(j);
    run_free(&r);

    /* Quantity 0 is an item too; human output. */
    r = ADMIN(NULL, "item", "add", "--sku", "SKU-0", "--name", "Empty bin", "--location", loc_text,
              "--quantity", "0");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "SKU-0"));
    run_free(&r);

    /* A retired location takes no new items. */
    r = ADMIN(NULL, "location", "add", "--name", "Old shed", "--json");
    j = parse_json(r.out);
    char old_text[24];
    snprintf(old_text, sizeof old_text, "%.0f", jnum(j, "location_id"));
    cJSON_Delete(j);
    run_free(&r);
    exec1(su, "UPDATE locations SET is_active = false WHERE location_id = $1::int", old_text);

    long items = count1("SELECT count(*) FROM inventory", NULL);
    long ledger = count1("SELECT count(*) FROM inventory_ledger", NULL);
    struct {
        const char *sku, *name, *location, *quantity, *msg;
    } cases[] = {
        {"SKU-100", "Dup", loc_text, "1", "already exists"},
        {"SKU-N", "Neg", loc_text, "-1", "--quantity must be"},
        {"SKU-N", "Frac", loc_text, "1.5", "--quantity must be"},
        {"SKU-N", "Junk", loc_text, "12abc", "--quantity must be"},
        {"SKU-N", "Big", loc_text, "2147483648", "--quantity must be"},
        {"SKU-N", "Empty", loc_text, "", "--quantity must be"},
        {"SKU-N", "Spaces", loc_text, " 5", "--quantity must be"},
        {"SKU-N", "Loc0", "0", "1", "--location must be"},
        {"SKU-N", "LocX", "x", "1", "--location must be"},
        {"SKU-N", "Nowhere", "99999", "1", "no location with id 99999"},
        {"SKU-N", "Retired", old_text, "1", "retired"},
        {"", "NoSku", loc_text, "1", "--sku must be"},
        {" SKU-N", "Lead", loc_text, "1", "--sku must be"},
        {"SKU-N ", "Trail", loc_text, "1", "--sku must be"},
        {"SKU\tN", "Tab", loc_text, "1", "--sku must be"},
        {"SKU-N", "", loc_text, "1", "--name must be"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r = ADMIN(NULL, "item", "add", "--sku", cases[i].sku, "--name", cases[i].name, "--location",
                  cases[i].location, "--quantity", cases[i].quantity);
        if (r.rc != 2 || !strstr(r.err, cases[i].msg))
            fail_msg("case %zu: rc %d, stderr: %s", i, r.rc, r.err);
        run_free(&r);
    }
    char long_sku[MW_SKU_MAX + 2];
    memset(long_sku, 'S', MW_SKU_MAX + 1);
    long_sku[MW_SKU_MAX + 1] = '\0';
    r = ADMIN(NULL, "item", "add", "--sku", long_sku, "--name", "Long", "--location", loc_text,
              "--quantity", "1");
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ADMIN(NULL, "item", "add", "--sku", "SKU-N", "--name", "NoQty", "--location", loc_text);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--quantity is required"));
    run_free(&r);
    assert_int_equal(count1("SELECT count(*) FROM inventory", NULL), items);
    assert_int_equal(count1("SELECT count(*) FROM inventory_ledger", NULL), ledger);

    long locations = count1("SELECT count(*) FROM locations", NULL);
    char long_name[MW_LOCATION_NAME_MAX + 2];
    memset(long_name, 'L', MW_LOCATION_NAME_MAX + 1);
    long_name[MW_LOCATION_NAME_MAX + 1] = '\0';
    r = ADMIN(NULL, "location", "add", "--name", long_name);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ADMIN(NULL, "location", "add", "--address", "somewhere");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--name is required"));
    run_free(&r);
    r = ADMIN(NULL, "location", "add", "--name", "Bad\x01name");
    assert_int_equal(r.rc, 2);
    run_free(&r);
    assert_int_equal(count1("SELECT count(*) FROM locations", NULL), locations);
}

/* ---- passwords ---- */

static void test_admin_password_read_takes_one_line(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "first\nsecond\n", 13), 13);
    close(p[1]);
    char buf[MW_PASSWORD_MAX + 1];
    size_t len = 0;
    struct mw_error err = {0};
    assert_int_equal(mw_password_read(p[0], buf, &len, &err), MW_OK);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "first");
    char rest[16] = "";
    assert_int_equal(read(p[0], rest, sizeof rest - 1), 7); /* nothing past the line taken */
    assert_string_equal(rest, "second\n");
    close(p[0]);

    /* Exactly MW_PASSWORD_MAX bytes without a newline (end of input ends the line). */
    assert_int_equal(pipe(p), 0);
    char *big = malloc(MW_PASSWORD_MAX);
    memset(big, 'x', MW_PASSWORD_MAX);
    assert_int_equal(write(p[1], big, MW_PASSWORD_MAX), (ssize_t)MW_PASSWORD_MAX);
    close(p[1]);
    assert_int_equal(mw_password_read(p[0], buf, &len, &err), MW_OK);
    assert_int_equal(len, MW_PASSWORD_MAX);
    close(p[0]);
    free(big);

    /* A NUL byte, and a line over the bound, are refused (and the buffer wiped). */
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "a\0b\n", 4), 4);
    close(p[1]);
    mw_error_clear(&err);
    assert_int_equal(mw_password_read(p[0], buf, &len, &err), MW_EMALFORMED);
    assert_non_null(strstr(err.msg, "NUL"));
    assert_int_equal(buf[0], 0);
    close(p[0]);

    char hash[MW_PASSWORD_HASH_SIZE], hash2[MW_PASSWORD_HASH_SIZE];
    assert_int_equal(mw_password_hash("same", 4, hash, &err), MW_OK);
    assert_int_equal(mw_password_hash("same", 4, hash2, &err), MW_OK);
    assert_string_not_equal(hash, hash2); /* a fresh salt each time */
    assert_true(strlen(hash) < 255);      /* fits users.password_hash */
    assert_int_equal(mw_password_verify(hash2, "same", 4, &err), MW_OK);
    mw_error_clear(&err);
    assert_int_equal(mw_password_hash("", 0, hash, &err), MW_EMALFORMED);
    assert_int_equal(mw_password_verify("$2b$10$abc", "x", 1, &err), MW_EMALFORMED);
}

/* ---- the local database (--data) ---- */

static void test_admin_data_dir_works_beside_a_running_server(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("admin-data");
    /* Nothing runs yet: the command starts the cluster and stops it again. */
    struct run r = RUN(NULL, "location", "add", "--data", dir, "--name", "Local", "--json");
    if (r.rc != 0)
        fail_msg("location add --data: %s", r.err);
    cJSON *j = parse_json(r.out);
    assert_true(jnum(j, "location_id") >= 1);
    cJSON_Delete(j);
    run_free(&r);

    /* Now a server holds the cluster: the command works and leaves it running. */
    struct mw_localdb *server = NULL;
    struct mw_error err = {0};
    if (mw_localdb_open(dir, &server, &err) != MW_OK)
        fail_msg("localdb: %s", err.msg);
    assert_true(server->started_here); /* proves the first command stopped what it started */
    r = RUN(NULL, "device", "add", "--data", dir, "--name", "Local scanner", "--kind", "scanner",
            "--json");
    if (r.rc != 0)
        fail_msg("device add --data: %s", r.err);
    j = parse_json(r.out);
    char token[MW_TOKEN_SIZE];
    snprintf(token, sizeof token, "%s", jstr(j, "token"));
    char id[MW_DEVICE_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", jstr(j, "device_id"));
    cJSON_Delete(j);
    run_free(&r);

    /* The server's runtime connection still works and accepts the new token. */
    PGconn *app = connect_as(server->runtime_conninfo);
    char got[MW_DEVICE_ID_MAX + 1];
    assert_int_equal(mw_auth_device(app, token, got, &err), MW_OK);
    assert_string_equal(got, id);
    PQfinish(app);
    PGconn *owner = connect_as(server->owner_conninfo);
    PGresult *res = PQexec(owner, "SELECT count(*) FROM locations");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    PQfinish(owner);

    mw_localdb_close(server, true, NULL);
    tu_rmrf(dir);
    free(dir);
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    owner_ci = pgtest_create_db(pg, DB_NAME);
    pgtest_apply_schema(pg, DB_NAME);
    su = connect_as(owner_ci);
    exec1(su, "CREATE ROLE " APP_ROLE " LOGIN IN ROLE midway_runtime", NULL);
    app_ci = pgtest_conninfo(pg, DB_NAME, APP_ROLE);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(su);
    free(owner_ci);
    free(app_ci);
    pgtest_stop(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_every_command_has_help),
        cmocka_unit_test(test_admin_usage_errors_exit_2),
        cmocka_unit_test(test_admin_device_add_stores_only_the_hash),
        cmocka_unit_test(test_admin_device_add_bad_input_writes_nothing),
        cmocka_unit_test(test_admin_device_list_shows_no_secrets),
        cmocka_unit_test(test_admin_auth_accepts_its_token_and_nothing_else),
        cmocka_unit_test(test_admin_auth_never_waits_for_a_locked_device_row),
        cmocka_unit_test(test_admin_device_revoke_refuses_the_token),
        cmocka_unit_test(test_admin_user_add_stores_argon2id),
        cmocka_unit_test(test_admin_user_add_bad_input_writes_nothing),
        cmocka_unit_test(test_admin_user_disable_and_roles),
        cmocka_unit_test(test_admin_location_and_item_add),
        cmocka_unit_test(test_admin_password_read_takes_one_line),
        cmocka_unit_test(test_admin_data_dir_works_beside_a_running_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
