/* it_schema.c - the PostgreSQL schema (schema/postgres/NNN_*.sql) against a real throwaway
 * cluster: the files apply in order with psql alone; the seed document's tables, columns,
 * types, defaults, constraints and section-3 indexes are all there and reject what they
 * must; monthly partitions route, move out of DEFAULT and retire through the archive; a
 * second application changes nothing; the runtime role sees rows only as row-level
 * security allows and can't read password hashes; the change feed never skips a
 * transaction that commits out of order. Queries are parameterized throughout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgtest.h"
#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DB_NAME  "it_schema"
#define APP_ROLE "it_schema_app" /* a deployment's LOGIN role, member of midway_runtime */

static struct pgtest *pg;
static PGconn *su; /* superuser connection to DB_NAME */
static struct dirent **files;
static int nfiles;
static int applied_ok;      /* every file applied in group setup */
static char apply_msg[256]; /* why not, if not */

/* ---- small libpq helpers: every statement goes through PQexecParams ---- */

static PGresult *run(PGconn *c, const char *sql, int n, const char *const *params)
{
    return PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
}

/* Runs sql, which must succeed; the caller PQclear()s the result. */
static PGresult *must(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = run(c, sql, n, params);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("%s\n  -> %s", sql, msg);
    }
    return r;
}

static void exec_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PQclear(must(c, sql, n, params));
}

/* The single value sql returns, as a malloc'd string ("" for NULL). */
static char *value(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = must(c, sql, n, params);
    if (PQntuples(r) != 1 || PQnfields(r) != 1) {
        int rows = PQntuples(r);
        PQclear(r);
        fail_msg("%s: expected one value, got %d rows", sql, rows);
    }
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_non_null(v);
    return v;
}

static long long number(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = value(c, sql, n, params);
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    int bad = end == v || *end != '\0';
    free(v);
    if (bad)
        fail_msg("%s: not a number", sql);
    return x;
}

/* sql must fail with sqlstate; returns the violated constraint's name (malloc'd, "" if none). */
static char *fails_with(PGconn *c, const char *sql, int n, const char *const *params,
                        const char *sqlstate)
{
    PGresult *r = run(c, sql, n, params);
    if (PQresultStatus(r) != PGRES_FATAL_ERROR) {
        PQclear(r);
        fail_msg("%s: succeeded, expected SQLSTATE %s", sql, sqlstate);
    }
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!got || strcmp(got, sqlstate) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", PQresultErrorMessage(r), got ? got : "?");
        PQclear(r);
        fail_msg("%s: expected SQLSTATE %s, got %s", sql, sqlstate, msg);
    }
    const char *cons = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    char *name = strdup(cons ? cons : "");
    PQclear(r);
    assert_non_null(name);
    return name;
}

static void rejects(PGconn *c, const char *sql, int n, const char *const *params,
                    const char *sqlstate)
{
    free(fails_with(c, sql, n, params, sqlstate));
}

static PGconn *connect_as(const char *user)
{
    char *ci = pgtest_conninfo(pg, DB_NAME, user);
    PGconn *c = PQconnectdb(ci);
    free(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        PQfinish(c);
        fail_msg("connect as %s: %s", user, msg);
    }
    return c;
}

/* The deployment's login role, created by the first test that needs it. */
static void ensure_app_role(void)
{
    exec_ok(su,
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" APP_ROLE "') "
            "THEN CREATE ROLE " APP_ROLE " LOGIN IN ROLE midway_runtime; END IF; END $$",
            0, NULL);
}

/* Creates an active user holding role_name ("" for none); returns its user_id (malloc'd). */
static char *make_user(const char *username, const char *role_name)
{
    char email[128];
    snprintf(email, sizeof email, "%s@example.test", username);
    const char *p[] = {username, email};
    char *id = value(su,
                     "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') "
                     "RETURNING user_id",
                     2, p);
    if (role_name[0]) {
        const char *q[] = {id, role_name};
        exec_ok(su,
                "INSERT INTO userroles (user_id, role_id) "
                "SELECT $1::uuid, role_id FROM roles WHERE role_name = $2",
                2, q);
    }
    return id;
}

static char *make_location(const char *name)
{
    const char *p[] = {name};
    return value(su, "INSERT INTO locations (location_name) VALUES ($1) RETURNING location_id", 1,
                 p);
}

/* The server's transaction preamble: acting user and device, SET LOCAL style. NULL = unset. */
static void begin_as(PGconn *c, const char *user_id, const char *device_id)
{
    exec_ok(c, "BEGIN", 0, NULL);
    const char *p[] = {user_id ? user_id : "", device_id ? device_id : ""};
    exec_ok(c,
            "SELECT set_config('midway.user_id', $1, true), "
            "set_config('midway.device_id', $2, true)",
            2, p);
}

#define REQUIRE_SCHEMA()                                        \
    do {                                                        \
        if (!applied_ok) {                                      \
            print_error("schema not applied: %s\n", apply_msg); \
            fail();                                             \
        }                                                       \
    } while (0)

/* ---- the files ---- */

static int sql_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return isdigit((unsigned char)d->d_name[0]) && n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

static int starts_with_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        if (toupper((unsigned char)*s) != toupper((unsigned char)*prefix))
            return 0;
    }
    return 1;
}

static int contains_ci(const char *s, const char *needle)
{
    for (; *s; s++) {
        if (starts_with_ci(s, needle))
            return 1;
    }
    return 0;
}

/* Plain SQL the runner can send in one PQexec inside its own transaction: no psql
 * meta-commands, no transaction control, nothing that refuses to run in a transaction, and
 * the file's own schema_migration row. */
static void files_are_plain_sql_recording_themselves(void **state)
{
    (void)state;
    char *dir = tu_path(pgtest_schema_dir(), "postgres");
    assert_true(nfiles >= 1);
    for (int i = 0; i < nfiles; i++) {
        const char *name = files[i]->d_name;
        char *path = tu_path(dir, name);
        char *sql = tu_read_file(path, NULL);
        int version = 0;
        size_t stem = strlen(name) - 4;
        for (const char *p = name; isdigit((unsigned char)*p); p++)
            version = version * 10 + (*p - '0');
        assert_true(version == i + 1); /* 001, 002, ... without gaps */

        char record[192];
        snprintf(record, sizeof record,
                 "INSERT INTO schema_migration (version, name) VALUES (%d, '%.*s');", version,
                 (int)stem, name);
        const char *at = strstr(sql, record);
        if (at) {
            at += strlen(record);
            while (*at == ' ' || *at == '\n' || *at == '\t')
                at++;
        }
        if (!at || *at != '\0')
            fail_msg("%s does not end by recording itself: %s", name, record);

        char *line = sql;
        while (line && *line) {
            char *next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            char *dash = strstr(line, "--");
            if (dash)
                *dash = '\0';
            while (*line == ' ' || *line == '\t')
                line++;
            static const char *const banned_starts[] = {"\\",
                                                        "BEGIN;",
                                                        "BEGIN TRANSACTION",
                                                        "BEGIN WORK",
                                                        "COMMIT",
                                                        "ROLLBACK",
                                                        "START TRANSACTION",
                                                        "VACUUM",
                                                        "END TRANSACTION"};
            for (size_t k = 0; k < sizeof banned_starts / sizeof banned_starts[0]; k++) {
                if (starts_with_ci(line, banned_starts[k]))
                    fail_msg("%s: statement not allowed in a migration: %s", name, line);
            }
            if (contains_ci(line, "CONCURRENTLY"))
                fail_msg("%s: CONCURRENTLY cannot run inside the file's transaction", name);
            line = next;
        }
        free(sql);
        free(path);
    }
    free(dir);
}

static void files_apply_in_order_with_psql(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    PGresult *r = must(su, "SELECT version, name FROM schema_migration ORDER BY version", 0, NULL);
    assert_int_equal(PQntuples(r), nfiles);
    for (int i = 0; i < nfiles; i++) {
        const char *name = files[i]->d_name;
        assert_int_equal(strtol(PQgetvalue(r, i, 0), NULL, 10), i + 1);
        assert_int_equal(strlen(PQgetvalue(r, i, 1)), strlen(name) - 4);
        assert_memory_equal(PQgetvalue(r, i, 1), name, strlen(name) - 4);
    }
    PQclear(r);
}

/* ---- the seed document's tables ---- */

struct column_spec {
    const char *table;
    const char *column;
    const char *type; /* format_type() */
    int not_null;
    const char *dflt; /* pg_get_expr() of the default, NULL for none */
};

/* Every column of the seed document, plus (last in each table) the columns Midway adds. */
static const struct column_spec columns[] = {
    {"users", "user_id", "uuid", 1, "gen_random_uuid()"},
    {"users", "username", "character varying(255)", 1, NULL},
    {"users", "email", "character varying(255)", 1, NULL},
    {"users", "password_hash", "character varying(255)", 1, NULL},
    {"users", "first_name", "character varying(100)", 0, NULL},
    {"users", "last_name", "character varying(100)", 0, NULL},
    {"users", "is_active", "boolean", 1, "true"},
    {"users", "created_at", "timestamp with time zone", 1, "CURRENT_TIMESTAMP"},
    {"users", "updated_at", "timestamp with time zone", 1, "CURRENT_TIMESTAMP"},
    {"roles", "role_id", "integer", 1, "nextval('roles_role_id_seq'::regclass)"},
    {"roles", "role_name", "character varying(50)", 1, NULL},
    {"roles", "description", "text", 0, NULL},
    {"userroles", "user_id", "uuid", 1, NULL},
    {"userroles", "role_id", "integer", 1, NULL},
    {"inventory", "resource_id", "uuid", 1, "gen_random_uuid()"},
    {"inventory", "item_name", "character varying(255)", 1, NULL},
    {"inventory", "item_sku", "character varying(100)", 1, NULL},
    {"inventory", "description", "text", 0, NULL},
    {"inventory", "quantity", "integer", 1, NULL},
    {"inventory", "location_id", "integer", 1, NULL},
    {"inventory", "last_updated_at", "timestamp with time zone", 1, "CURRENT_TIMESTAMP"},
    {"locations", "location_id", "integer", 1, "nextval('locations_location_id_seq'::regclass)"},
    {"locations", "location_name", "character varying(255)", 1, NULL},
    {"locations", "address", "text", 0, NULL},
    {"locations", "is_active", "boolean", 1, "true"},
    {"resourceallocation", "allocation_id", "uuid", 1, "gen_random_uuid()"},
    {"resourceallocation", "resource_id", "uuid", 1, NULL},
    {"resourceallocation", "predicted_need", "integer", 1, NULL},
    {"resourceallocation", "manual_override", "boolean", 1, "false"},
    {"resourceallocation", "override_reason", "text", 0, NULL},
    {"resourceallocation", "allocation_timestamp", "timestamp with time zone", 1,
     "CURRENT_TIMESTAMP"},
    {"resourceallocation", "allocated_by_user_id", "uuid", 0, NULL},
    {"performancereport", "report_id", "uuid", 1, "gen_random_uuid()"},
    {"performancereport", "user_id", "uuid", 1, NULL},
    {"performancereport", "generated_at", "timestamp with time zone", 1, "CURRENT_TIMESTAMP"},
    {"performancereport", "kpi_values", "jsonb", 1, NULL},
    {"performancereport", "customized_view", "jsonb", 0, NULL},
    {"integrationevent", "event_id", "bigint", 1,
     "nextval('integrationevent_event_id_seq'::regclass)"},
    {"integrationevent", "source_system", "character varying(50)", 1, NULL},
    {"integrationevent", "event_type", "event_source_type", 1, NULL},
    {"integrationevent", "event_timestamp", "timestamp with time zone", 1, "CURRENT_TIMESTAMP"},
    {"integrationevent", "details", "jsonb", 1, NULL},
    {"integrationevent", "correlation_id", "uuid", 0, NULL},
    {"integrationevent", "user_id", "uuid", 0, NULL}, /* added: DB-CON-003 */
    {"userinteraction", "interaction_id", "bigint", 1,
     "nextval('userinteraction_interaction_id_seq'::regclass)"},
    {"userinteraction", "user_id", "uuid", 1, NULL},
    {"userinteraction", "action", "character varying(100)", 1, NULL},
    {"userinteraction", "interaction_timestamp", "timestamp with time zone", 1,
     "CURRENT_TIMESTAMP"},
    {"userinteraction", "target_entity_id", "character varying(255)", 0, NULL},
    {"userinteraction", "target_entity_type", "character varying(50)", 0, NULL},
    {"userinteraction", "metadata", "jsonb", 0, NULL},
    {"userinteraction", "correlation_id", "uuid", 0, NULL}, /* added: traceability */
};
#define NCOLUMNS (sizeof columns / sizeof columns[0])

static void seed_columns_exist_as_documented(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    for (size_t i = 0; i < NCOLUMNS; i++) {
        const struct column_spec *c = &columns[i];
        const char *p[] = {c->table, c->column};
        PGresult *r = must(su,
                           "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                           "       pg_get_expr(d.adbin, d.adrelid) "
                           "  FROM pg_attribute a LEFT JOIN pg_attrdef d "
                           "       ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                           " WHERE a.attrelid = to_regclass('public.' || $1) AND a.attname = $2 "
                           "   AND a.attnum > 0 AND NOT a.attisdropped",
                           2, p);
        if (PQntuples(r) != 1) {
            PQclear(r);
            fail_msg("%s.%s: missing", c->table, c->column);
        }
        int ok_type = strcmp(PQgetvalue(r, 0, 0), c->type) == 0;
        int ok_null = (strcmp(PQgetvalue(r, 0, 1), "t") == 0) == (c->not_null != 0);
        int ok_dflt = c->dflt ? !PQgetisnull(r, 0, 2) && strcmp(PQgetvalue(r, 0, 2), c->dflt) == 0
                              : PQgetisnull(r, 0, 2);
        if (!ok_type || !ok_null || !ok_dflt) {
            print_error("%s.%s: type %s not null %s default %s\n", c->table, c->column,
                        PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
            PQclear(r);
            fail_msg("%s.%s: expected %s, not null %d, default %s", c->table, c->column, c->type,
                     c->not_null, c->dflt ? c->dflt : "(none)");
        }
        PQclear(r);
    }
    /* No column beyond the list: count each table's columns. */
    for (size_t i = 0; i < NCOLUMNS; i++) {
        if (i > 0 && strcmp(columns[i].table, columns[i - 1].table) == 0)
            continue;
        long long expected = 0;
        for (size_t j = i; j < NCOLUMNS && strcmp(columns[j].table, columns[i].table) == 0; j++)
            expected++;
        const char *p[] = {columns[i].table};
        long long got = number(su,
                               "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                               "to_regclass('public.' || $1) AND attnum > 0 AND NOT attisdropped",
                               1, p);
        if (got != expected)
            fail_msg("%s has %lld columns, expected %lld", columns[i].table, got, expected);
    }
    char *labels = value(su,
                         "SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) "
                         "FROM pg_enum WHERE enumtypid = 'public.event_source_type'::regtype",
                         0, NULL);
    assert_string_equal(labels, "sync,update,error,create,delete");
    free(labels);
}

struct constraint_spec {
    const char *table;
    const char *type; /* p, u, f */
    const char *cols;
    const char *ref;       /* referenced table ("" unless f) */
    const char *refcols;   /* "" unless f */
    const char *on_delete; /* a = no action, c = cascade ("" unless f) */
};

static const struct constraint_spec constraints[] = {
    {"users", "p", "user_id", "", "", ""},
    {"users", "u", "username", "", "", ""},
    {"users", "u", "email", "", "", ""},
    {"roles", "p", "role_id", "", "", ""},
    {"roles", "u", "role_name", "", "", ""},
    {"userroles", "p", "user_id,role_id", "", "", ""},
    {"userroles", "f", "user_id", "users", "user_id", "c"},
    {"userroles", "f", "role_id", "roles", "role_id", "c"},
    {"inventory", "p", "resource_id", "", "", ""},
    {"inventory", "u", "item_sku", "", "", ""},
    {"inventory", "f", "location_id", "locations", "location_id", "a"},
    {"locations", "p", "location_id", "", "", ""},
    {"resourceallocation", "p", "allocation_id", "", "", ""},
    {"resourceallocation", "f", "resource_id", "inventory", "resource_id", "a"},
    {"resourceallocation", "f", "allocated_by_user_id", "users", "user_id", "a"},
    {"performancereport", "p", "report_id", "", "", ""},
    {"performancereport", "f", "user_id", "users", "user_id", "a"},
    {"integrationevent", "p", "event_id,event_timestamp", "", "", ""},
    {"integrationevent", "f", "user_id", "users", "user_id", "a"},
    {"userinteraction", "p", "interaction_id,interaction_timestamp", "", "", ""},
    {"userinteraction", "f", "user_id", "users", "user_id", "a"},
};

static void seed_keys_and_references_exist(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    for (size_t i = 0; i < sizeof constraints / sizeof constraints[0]; i++) {
        const struct constraint_spec *c = &constraints[i];
        const char *p[] = {c->table, c->type, c->cols, c->ref, c->refcols, c->on_delete};
        long long n = number(
            su,
            "SELECT count(*) FROM pg_constraint c "
            " WHERE c.conrelid = to_regclass('public.' || $1) AND c.contype::text = $2 "
            "   AND (SELECT string_agg(a.attname::text, ',' ORDER BY k.n) "
            "          FROM unnest(c.conkey) WITH ORDINALITY AS k(num, n) "
            "          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num) = $3 "
            "   AND coalesce((SELECT relname::text FROM pg_class WHERE oid = c.confrelid), '') = "
            "$4 "
            "   AND coalesce((SELECT string_agg(a.attname::text, ',' ORDER BY k.n) "
            "          FROM unnest(c.confkey) WITH ORDINALITY AS k(num, n) "
            "          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num), '') "
            "= $5 "
            "   AND (c.contype <> 'f' OR c.confdeltype::text = $6)",
            6, p);
        if (n != 1)
            fail_msg("%s: constraint %s (%s) -> %s(%s) on delete %s not found", c->table, c->type,
                     c->cols, c->ref, c->refcols, c->on_delete);
    }
    const char *p[] = {"chk_override_reason"};
    char *def = value(su,
                      "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE conrelid = 'public.resourceallocation'::regclass AND conname = $1",
                      1, p);
    assert_string_equal(def,
                        "CHECK (((manual_override = false) OR (override_reason IS NOT NULL)))");
    free(def);
    /* Both high-volume tables are partitioned by range on their timestamp. */
    char *strategy =
        value(su,
              "SELECT string_agg(format('%s:%s:%s', c.relname, pt.partstrat, "
              "a.attname), ',' ORDER BY c.relname) "
              "FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid "
              "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0] "
              "WHERE c.relnamespace = 'public'::regnamespace",
              0, NULL);
    assert_string_equal(strategy, "integrationevent:r:event_timestamp,"
                                  "userinteraction:r:interaction_timestamp");
    free(strategy);
}

struct index_spec {
    const char *name;
    const char *table;
    const char *def_tail; /* end of pg_get_indexdef() */
};

static const struct index_spec seed_indexes[] = {
    {"idx_performancereport_user_id", "performancereport", "USING btree (user_id)"},
    {"idx_userinteraction_user_id", "userinteraction", "USING btree (user_id)"},
    {"idx_resourceallocation_resource_id", "resourceallocation", "USING btree (resource_id)"},
    {"idx_integrationevent_event_type", "integrationevent", "USING btree (event_type)"},
    {"idx_integrationevent_event_timestamp", "integrationevent",
     "USING btree (event_timestamp DESC)"},
    {"idx_userinteraction_user_timestamp", "userinteraction",
     "USING btree (user_id, interaction_timestamp DESC)"},
    {"idx_performancereport_kpi_values", "performancereport", "USING gin (kpi_values)"},
    {"idx_integrationevent_details", "integrationevent", "USING gin (details)"},
};

static void seed_section3_indexes_exist(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    for (size_t i = 0; i < sizeof seed_indexes / sizeof seed_indexes[0]; i++) {
        const struct index_spec *x = &seed_indexes[i];
        const char *p[] = {x->name};
        PGresult *r = must(su,
                           "SELECT i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid), "
                           "  (SELECT count(*) FROM pg_inherits WHERE inhparent = i.indexrelid), "
                           "  (SELECT count(*) FROM pg_inherits WHERE inhparent = i.indrelid) "
                           "FROM pg_index i WHERE i.indexrelid = to_regclass('public.' || $1)",
                           1, p);
        if (PQntuples(r) != 1) {
            PQclear(r);
            fail_msg("index %s missing", x->name);
        }
        const char *def = PQgetvalue(r, 0, 1);
        size_t dl = strlen(def);
        size_t tl = strlen(x->def_tail);
        int ok = strcmp(PQgetvalue(r, 0, 0), x->table) == 0 && dl >= tl &&
                 strcmp(def + dl - tl, x->def_tail) == 0;
        /* On a partitioned table every partition carries its copy of the index. */
        int copies_ok = strcmp(PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3)) == 0;
        if (!ok || !copies_ok) {
            print_error("%s: %s on %s; %s of %s partitions\n", x->name, def, PQgetvalue(r, 0, 0),
                        PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
            PQclear(r);
            fail_msg("index %s: expected on %s ... %s", x->name, x->table, x->def_tail);
        }
        PQclear(r);
    }
}

static void seed_constraints_reject_bad_rows(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    char *loc = make_location("it-constraints");
    char *user = make_user("it_c_user", "operator");
    const char *pl[] = {loc};
    char *item = value(su,
                       "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
                       "VALUES ('bolt', 'IT-C-SKU', 5, $1::int) RETURNING resource_id",
                       1, pl);

    rejects(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('neg', 'IT-C-NEG', -1, $1::int)",
            1, pl, "23514");
    const char *pi[] = {item};
    rejects(su, "UPDATE inventory SET quantity = -1 WHERE resource_id = $1::uuid", 1, pi, "23514");
    rejects(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('dup', 'IT-C-SKU', 1, $1::int)",
            1, pl, "23505");
    rejects(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('nowhere', 'IT-C-NOWHERE', 1, 2147483647)",
            0, NULL, "23503");
    rejects(su, "INSERT INTO inventory (item_name, item_sku, quantity) VALUES ('x', 'IT-C-X', 1)",
            0, NULL, "23502");

    rejects(su,
            "INSERT INTO resourceallocation (resource_id, predicted_need) VALUES ($1::uuid, -1)", 1,
            pi, "23514");
    char *cons = fails_with(su,
                            "INSERT INTO resourceallocation (resource_id, predicted_need, "
                            "manual_override) VALUES ($1::uuid, 3, true)",
                            1, pi, "23514");
    assert_string_equal(cons, "chk_override_reason");
    free(cons);
    exec_ok(su,
            "INSERT INTO resourceallocation (resource_id, predicted_need, manual_override, "
            "override_reason) VALUES ($1::uuid, 3, true, 'promotion')",
            1, pi);
    exec_ok(su, "INSERT INTO resourceallocation (resource_id, predicted_need) VALUES ($1::uuid, 0)",
            1, pi);

    rejects(su,
            "INSERT INTO users (username, email, password_hash) "
            "VALUES ('it_c_user', 'other@example.test', 'x')",
            0, NULL, "23505");
    rejects(su,
            "INSERT INTO users (username, email, password_hash) "
            "VALUES ('it_c_other', 'it_c_user@example.test', 'x')",
            0, NULL, "23505");
    rejects(su,
            "INSERT INTO integrationevent (source_system, event_type, details) "
            "VALUES ('it', 'bogus', '{}')",
            0, NULL, "22P02");
    exec_ok(su,
            "INSERT INTO integrationevent (source_system, event_type, details) "
            "VALUES ('it', 'sync', '{}')",
            0, NULL);
    rejects(su, "INSERT INTO performancereport (user_id, kpi_values) VALUES ($1::uuid, NULL)", 1,
            (const char *const[]){user}, "23502");

    /* UserRoles follows its user and its role (ON DELETE CASCADE). */
    char *doomed = make_user("it_c_doomed", "manager");
    const char *pd[] = {doomed};
    assert_int_equal(number(su, "SELECT count(*) FROM userroles WHERE user_id = $1::uuid", 1, pd),
                     1);
    exec_ok(su, "DELETE FROM users WHERE user_id = $1::uuid", 1, pd);
    assert_int_equal(number(su, "SELECT count(*) FROM userroles WHERE user_id = $1::uuid", 1, pd),
                     0);
    char *temp_role =
        value(su, "INSERT INTO roles (role_name) VALUES ('it_temp') RETURNING role_id", 0, NULL);
    const char *pr[] = {user, temp_role};
    exec_ok(su, "INSERT INTO userroles (user_id, role_id) VALUES ($1::uuid, $2::int)", 2, pr);
    exec_ok(su, "DELETE FROM roles WHERE role_id = $1::int", 1, (const char *const[]){temp_role});
    assert_int_equal(number(su, "SELECT count(*) FROM userroles WHERE user_id = $1::uuid", 1,
                            (const char *const[]){user}),
                     1); /* the operator role stays */
    free(temp_role);
    free(doomed);
    free(item);
    free(user);
    free(loc);
}

/* ---- what Midway adds ---- */

static void rbac_roles_and_permissions_are_seeded(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    char *roles = value(su,
                        "SELECT string_agg(role_name, ',' ORDER BY role_name) FROM roles "
                        "WHERE role_name IN ('admin', 'manager', 'operator', 'auditor')",
                        0, NULL);
    assert_string_equal(roles, "admin,auditor,manager,operator");
    free(roles);
    static const char *const sql =
        "SELECT string_agg(rp.permission, ',' ORDER BY rp.permission) FROM role_permission rp "
        "JOIN roles r USING (role_id) WHERE r.role_name = $1";
    char *op = value(su, sql, 1, (const char *const[]){"operator"});
    assert_string_equal(op, "event.record,interaction.record,inventory.adjust,inventory.count,"
                            "inventory.relocate");
    free(op);
    char *aud = value(su, sql, 1, (const char *const[]){"auditor"});
    assert_string_equal(aud, "audit.read,report.read");
    free(aud);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM permission p WHERE NOT EXISTS (SELECT 1 FROM "
                            "role_permission rp JOIN roles r USING (role_id) WHERE r.role_name = "
                            "'admin' AND rp.permission = p.permission)",
                            0, NULL),
                     0);
    static const char *const ops[] = {
        "inventory.adjust",   "inventory.count",   "inventory.relocate", "inventory.receive",
        "interaction.record", "allocation.record", "event.record"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const char *p[] = {"manager", ops[i]};
        assert_int_equal(number(su,
                                "SELECT count(*) FROM role_permission rp JOIN roles r "
                                "USING (role_id) WHERE r.role_name = $1 AND rp.permission = $2",
                                2, p),
                         1);
    }
    rejects(su,
            "INSERT INTO role_permission (role_id, permission) "
            "SELECT role_id, 'inventory.teleport' FROM roles WHERE role_name = 'admin'",
            0, NULL, "23503");

    /* A deactivated user loses every permission. */
    char *u = make_user("it_rbac_op", "operator");
    const char *p[] = {u, "inventory.adjust"};
    char *yes = value(su, "SELECT midway_user_has_permission($1::uuid, $2)", 2, p);
    assert_string_equal(yes, "t");
    free(yes);
    exec_ok(su, "UPDATE users SET is_active = false WHERE user_id = $1::uuid", 1, p);
    char *no = value(su, "SELECT midway_user_has_permission($1::uuid, $2)", 2, p);
    assert_string_equal(no, "f");
    free(no);
    free(u);
}

static void sync_tables_reject_bad_rows(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    exec_ok(su,
            "INSERT INTO device (device_id, name, kind, token_hash) "
            "VALUES ('it-sync.dev_1', 'dock', 'gateway', 'h-sync')",
            0, NULL);
    rejects(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('bad id', 'scanner', 'h1')",
            0, NULL, "23514");
    rejects(su,
            "INSERT INTO device (device_id, kind, token_hash) "
            "VALUES (repeat('a', 65), 'scanner', 'h2')",
            0, NULL, "23514");
    rejects(su, "INSERT INTO device (device_id, kind, token_hash) VALUES ('', 'scanner', 'h3')", 0,
            NULL, "23514");
    rejects(su, "INSERT INTO device (device_id, kind, token_hash) VALUES ('ok', 'phone', 'h4')", 0,
            NULL, "23514");
    rejects(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('ok2', 'scanner', 'h-sync')",
            0, NULL, "23505");

    static const char *const op_sql =
        "INSERT INTO received_op (op_id, device_id, batch_id, op_type, status, error_code, "
        "event_at) VALUES (gen_random_uuid(), 'it-sync.dev_1', gen_random_uuid(), "
        "'inventory.adjust', $1, NULLIF($2, ''), now())";
    exec_ok(su, op_sql, 2, (const char *const[]){"applied", ""});
    exec_ok(su, op_sql, 2, (const char *const[]){"rejected", "insufficient_stock"});
    rejects(su, op_sql, 2, (const char *const[]){"duplicate", ""}, "23514");
    rejects(su, op_sql, 2, (const char *const[]){"rejected", ""}, "23514");
    rejects(su, op_sql, 2, (const char *const[]){"applied", "insufficient_stock"}, "23514");

    char *loc = make_location("it-sync");
    char *item = value(su,
                       "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
                       "VALUES ('nut', 'IT-SYNC-SKU', 1, $1::int) RETURNING resource_id",
                       1, (const char *const[]){loc});
    static const char *const ledger_sql =
        "INSERT INTO inventory_ledger (resource_id, kind, delta, quantity_after, location_id, "
        "op_id, event_at) VALUES ($1::uuid, $2, $3::int, $4::int, NULLIF($5, '')::int, "
        "NULLIF($6, '')::uuid, now())";
    exec_ok(su, ledger_sql, 6, (const char *const[]){item, "adjust", "-1", "0", "", ""});
    exec_ok(su, ledger_sql, 6, (const char *const[]){item, "relocate", "0", "0", loc, ""});
    rejects(su, ledger_sql, 6, (const char *const[]){item, "adjust", "-2", "-1", "", ""}, "23514");
    rejects(su, ledger_sql, 6, (const char *const[]){item, "relocate", "0", "0", "", ""}, "23514");
    rejects(su, ledger_sql, 6, (const char *const[]){item, "teleport", "0", "0", "", ""}, "23514");
    /* op_id must name a received op; the check is deferred to commit. */
    rejects(
        su, ledger_sql, 6,
        (const char *const[]){item, "adjust", "1", "1", "", "00000000-0000-7000-8000-000000000000"},
        "23503");
    free(item);
    free(loc);
}

/* ---- partitions and retention ---- */

/* Inserts an IntegrationEvent at (this UTC month + months) + 10 days; returns event_id. */
static char *event_at_month(int months)
{
    char m[16];
    snprintf(m, sizeof m, "%d", months);
    const char *p[] = {m};
    return value(su,
                 "INSERT INTO integrationevent (source_system, event_type, event_timestamp, "
                 "details) VALUES ('it-part', 'sync', (date_trunc('month', now() AT TIME ZONE "
                 "'UTC') + make_interval(months => $1::int, days => 10)) AT TIME ZONE 'UTC', "
                 "'{}') RETURNING event_id",
                 1, p);
}

#define IN_DEFAULT INT32_MIN /* assert_event_in(): the row is in the DEFAULT partition */

/* Asserts that event id sits in the partition of (this UTC month + months). */
static void assert_event_in(const char *id, int months)
{
    char *got = value(su,
                      "SELECT tableoid::regclass::text FROM integrationevent WHERE event_id = "
                      "$1::bigint",
                      1, (const char *const[]){id});
    char *want = NULL;
    if (months == IN_DEFAULT) {
        want = strdup("integrationevent_default");
    } else {
        char m[16];
        snprintf(m, sizeof m, "%d", months);
        want = value(su,
                     "SELECT 'integrationevent_' || to_char(date_trunc('month', now() AT TIME "
                     "ZONE 'UTC') + make_interval(months => $1::int), '\"y\"YYYY\"m\"MM')",
                     1, (const char *const[]){m});
    }
    assert_non_null(want);
    assert_string_equal(got, want);
    free(got);
    free(want);
}

static void partitions_route_rows_and_drain_default(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    /* 002 created this month and the next three. */
    char *next = event_at_month(1);
    assert_event_in(next, 1);
    char *now_ev = event_at_month(0);
    assert_event_in(now_ev, 0);

    /* Beyond the horizon, and before the first partition: DEFAULT keeps them. */
    char *future = event_at_month(8);
    assert_event_in(future, IN_DEFAULT);
    char *past = event_at_month(-5);
    assert_event_in(past, IN_DEFAULT);

    /* The maintenance call creates past months with rows waiting in DEFAULT (moving them)
     * and the months up to the horizon; the far-future row waits for its month. */
    long long created = number(su, "SELECT midway_ensure_partitions(3)", 0, NULL);
    assert_true(created >= 1);
    assert_event_in(past, -5);
    assert_event_in(future, IN_DEFAULT);
    assert_int_equal(number(su, "SELECT midway_ensure_partitions(3)", 0, NULL), 0);

    /* Reaching the far month moves the row out of DEFAULT into the new partition. */
    assert_true(number(su, "SELECT midway_ensure_partitions(8)", 0, NULL) >= 1);
    assert_event_in(future, 8);
    assert_int_equal(number(su, "SELECT count(*) FROM integrationevent_default", 0, NULL), 0);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM integrationevent WHERE source_system = "
                            "'it-part'",
                            0, NULL),
                     4);
    /* A moved partition has the parent's indexes, key and references. */
    char *idx = value(su,
                      "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass('public.' || "
                      "'integrationevent_' || to_char(date_trunc('month', now() AT TIME ZONE "
                      "'UTC') + interval '8 months', '\"y\"YYYY\"m\"MM'))",
                      0, NULL);
    assert_string_equal(idx, "4"); /* pkey, event_type, event_timestamp, details */
    free(idx);

    /* UserInteraction routes the same way, on interaction_timestamp. */
    char *u = make_user("it_part_user", "operator");
    char *where = value(su,
                        "INSERT INTO userinteraction (user_id, action, interaction_timestamp) "
                        "VALUES ($1::uuid, 'scan', (date_trunc('month', now() AT TIME ZONE "
                        "'UTC') + interval '2 months 3 days') AT TIME ZONE 'UTC') "
                        "RETURNING tableoid::regclass::text = 'userinteraction_' || "
                        "to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + "
                        "interval '2 months', '\"y\"YYYY\"m\"MM')",
                        1, (const char *const[]){u});
    assert_string_equal(where, "t");
    free(where);
    rejects(su, "SELECT midway_ensure_partitions(-1)", 0, NULL, "22023");
    free(u);
    free(next);
    free(now_ev);
    free(future);
    free(past);
}

static void retention_archives_then_drops_old_partitions(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    char *old = event_at_month(-14);
    char *recent = event_at_month(-11);
    char *u = make_user("it_ret_user", "operator");
    static const char *const ui_sql =
        "INSERT INTO userinteraction (user_id, action, interaction_timestamp) VALUES ($1::uuid, "
        "'scan', (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => "
        "$2::int, days => 5)) AT TIME ZONE 'UTC')";
    exec_ok(su, ui_sql, 2, (const char *const[]){u, "-30"});
    exec_ok(su, ui_sql, 2, (const char *const[]){u, "-14"});
    assert_true(number(su, "SELECT midway_ensure_partitions(3)", 0, NULL) >= 4);

    char *old_part = value(su,
                           "SELECT tableoid::regclass::text FROM integrationevent "
                           "WHERE event_id = $1::bigint",
                           1, (const char *const[]){old});
    char *ui_part = value(su,
                          "SELECT min(tableoid::regclass::text) FROM userinteraction "
                          "WHERE user_id = $1::uuid AND interaction_timestamp < now() - "
                          "interval '2 years'",
                          1, (const char *const[]){u});

    /* IntegrationEvent keeps 1 year, UserInteraction 2: exactly the two old months go. */
    PGresult *r = must(su,
                       "SELECT action, table_name, row_count FROM midway_apply_retention() "
                       "ORDER BY table_name",
                       0, NULL);
    assert_int_equal(PQntuples(r), 2);
    char want[128];
    snprintf(want, sizeof want, "midway_archive.%s", old_part);
    assert_string_equal(PQgetvalue(r, 0, 0), "archived");
    assert_string_equal(PQgetvalue(r, 0, 1), want);
    assert_string_equal(PQgetvalue(r, 0, 2), "1");
    snprintf(want, sizeof want, "midway_archive.%s", ui_part);
    assert_string_equal(PQgetvalue(r, 1, 0), "archived");
    assert_string_equal(PQgetvalue(r, 1, 1), want);
    PQclear(r);

    const char *po[] = {old};
    assert_int_equal(
        number(su, "SELECT count(*) FROM integrationevent WHERE event_id = $1::bigint", 1, po), 0);
    assert_int_equal(number(su, "SELECT count(*) FROM integrationevent WHERE event_id = $1::bigint",
                            1, (const char *const[]){recent}),
                     1);
    assert_int_equal(number(su, "SELECT count(*) FROM userinteraction WHERE user_id = $1::uuid", 1,
                            (const char *const[]){u}),
                     1);
    const char *pp[] = {old_part};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                            "n.oid = c.relnamespace WHERE n.nspname = 'midway_archive' AND "
                            "c.relname = $1",
                            1, pp),
                     1);
    assert_int_equal(number(su, "SELECT midway_ensure_partitions(3)", 0, NULL), 0);

    /* Not exported yet: kept however old. Exported: dropped after the grace period. */
    r = must(su, "SELECT * FROM midway_apply_retention(archive_grace => '0')", 0, NULL);
    assert_int_equal(PQntuples(r), 0);
    PQclear(r);
    char *marked = value(su, "SELECT midway_archive_mark_exported($1)", 1, pp);
    assert_string_equal(marked, "t");
    free(marked);
    r = must(su, "SELECT action, table_name FROM midway_apply_retention()", 0, NULL);
    assert_int_equal(PQntuples(r), 0); /* 30 days of grace by default */
    PQclear(r);
    r = must(su, "SELECT action, table_name FROM midway_apply_retention(archive_grace => '0')", 0,
             NULL);
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "dropped");
    PQclear(r);
    char *gone =
        value(su, "SELECT to_regclass('midway_archive.' || quote_ident($1)) IS NULL", 1, pp);
    assert_string_equal(gone, "t");
    free(gone);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM midway_archive.archived_partition WHERE "
                            "partition_name = $1 AND dropped_at IS NOT NULL AND row_count = 1",
                            1, pp),
                     1);
    /* Without cold storage a deployment opts out of the export step: in retention_policy,
     * which the server's maintenance applies through midway_apply_retention_policy(). */
    ensure_app_role();
    PGconn *app = connect_as(APP_ROLE);
    r = must(app, "SELECT action FROM midway_apply_retention_policy()", 0, NULL);
    assert_int_equal(PQntuples(r), 0); /* the default policy: exported and 30 days of grace */
    PQclear(r);
    exec_ok(su, "UPDATE retention_policy SET archive_grace = '0', require_export = false", 0,
            NULL);
    r = must(app, "SELECT action FROM midway_apply_retention_policy()", 0, NULL);
    assert_int_equal(PQntuples(r), 1); /* the UserInteraction month */
    assert_string_equal(PQgetvalue(r, 0, 0), "dropped");
    PQclear(r);
    exec_ok(su, "UPDATE retention_policy SET archive_grace = DEFAULT, require_export = DEFAULT", 0,
            NULL);
    /* The policy keeps to what midway_apply_retention() accepts. */
    rejects(su, "UPDATE retention_policy SET integration_keep = '1 day'", 0, NULL, "23514");
    rejects(su, "INSERT INTO retention_policy (id) VALUES (false)", 0, NULL, "23514");
    rejects(su, "INSERT INTO retention_policy DEFAULT VALUES", 0, NULL, "23505");
    PQfinish(app);
    free(old_part);
    free(ui_part);
    free(old);
    free(recent);
    free(u);
}

/* ---- re-running the files ---- */

static char *fingerprint(void)
{
    return value(
        su,
        "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM ("
        " SELECT format('rel %s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relowner, "
        "               coalesce(c.relacl::text, '')) "
        "   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  WHERE n.nspname IN ('public', 'midway_archive') "
        " UNION ALL SELECT format('col %s.%s %s', a.attrelid::regclass, a.attname, "
        "               format_type(a.atttypid, a.atttypmod)) "
        "   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "   JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  WHERE n.nspname IN ('public', 'midway_archive') AND a.attnum > 0 "
        " UNION ALL SELECT 'fn ' || p.oid::regprocedure::text || md5(p.prosrc) FROM pg_proc p "
        "  WHERE p.pronamespace = 'public'::regnamespace "
        " UNION ALL SELECT 'pol ' || polname FROM pg_policy "
        " UNION ALL SELECT 'trg ' || tgname FROM pg_trigger WHERE NOT tgisinternal "
        " UNION ALL SELECT 'mig ' || version || name || applied_at FROM schema_migration "
        " UNION ALL SELECT 'role ' || role_id || role_name FROM roles "
        " UNION ALL SELECT 'rp ' || role_id || permission FROM role_permission "
        " UNION ALL SELECT 'perm ' || permission FROM permission "
        " UNION ALL SELECT 'feed ' || count(*) FROM change_feed "
        " UNION ALL SELECT 'dbrole ' || rolname || rolcanlogin FROM pg_roles "
        "  WHERE rolname LIKE 'midway%') s(x)",
        0, NULL);
}

static void second_application_fails_and_changes_nothing(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    char *before = fingerprint();
    print_message("applying every file again: each must fail (its error follows)\n");
    char *dir = tu_path(pgtest_schema_dir(), "postgres");
    for (int i = 0; i < nfiles; i++) {
        char *path = tu_path(dir, files[i]->d_name);
        int status = pgtest_psql_file(pg, DB_NAME, path);
        if (status == 0)
            fail_msg("%s applied a second time", files[i]->d_name);
        free(path);
    }
    free(dir);
    char *after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* ---- the runtime role and row-level security ---- */

static void runtime_role_sees_rows_as_rls_allows(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    ensure_app_role();
    char *op1 = make_user("it_rls_op1", "operator");
    char *op2 = make_user("it_rls_op2", "operator");
    char *mgr = make_user("it_rls_mgr", "manager");
    char *aud = make_user("it_rls_aud", "auditor");
    static const char *const ui_sql =
        "INSERT INTO userinteraction (user_id, action) VALUES ($1::uuid, 'scan')";
    exec_ok(su, ui_sql, 1, (const char *const[]){op1});
    exec_ok(su, ui_sql, 1, (const char *const[]){op1});
    exec_ok(su, ui_sql, 1, (const char *const[]){op2});
    static const char *const pr_sql =
        "INSERT INTO performancereport (user_id, kpi_values) VALUES ($1::uuid, '{\"picks\": 1}')";
    exec_ok(su, pr_sql, 1, (const char *const[]){op1});
    exec_ok(su, pr_sql, 1, (const char *const[]){op2});
    exec_ok(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('it-rls-dev', 'scanner', "
            "'h-rls'), ('it-rls-old', 'scanner', 'h-rls-old')",
            0, NULL);
    exec_ok(su, "UPDATE device SET revoked_at = now() WHERE device_id = 'it-rls-old'", 0, NULL);
    long long total = number(su, "SELECT count(*) FROM userinteraction", 0, NULL);
    long long reports = number(su, "SELECT count(*) FROM performancereport", 0, NULL);
    assert_true(total >= 3);

    PGconn *app = connect_as(APP_ROLE);
    static const char *const count_ui = "SELECT count(*) FROM userinteraction";
    static const char *const others_ui =
        "SELECT count(*) FROM userinteraction WHERE user_id <> $1::uuid";

    /* Nobody acting: nothing visible. */
    begin_as(app, NULL, NULL);
    assert_int_equal(number(app, count_ui, 0, NULL), 0);
    assert_int_equal(number(app, "SELECT count(*) FROM performancereport", 0, NULL), 0);
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* An operator: own rows only, own reports only. */
    begin_as(app, op1, NULL);
    assert_int_equal(number(app, count_ui, 0, NULL), 2);
    assert_int_equal(number(app, others_ui, 1, (const char *const[]){op1}), 0);
    assert_int_equal(number(app, "SELECT count(*) FROM performancereport", 0, NULL), 1);
    exec_ok(app, ui_sql, 1, (const char *const[]){op1});
    rejects(app, ui_sql, 1, (const char *const[]){op2}, "42501");
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* Manager and auditor: everything. */
    begin_as(app, mgr, NULL);
    assert_int_equal(number(app, count_ui, 0, NULL), total);
    assert_int_equal(number(app, "SELECT count(*) FROM performancereport", 0, NULL), reports);
    exec_ok(app, ui_sql, 1, (const char *const[]){op2}); /* on behalf of an operator */
    exec_ok(app, "ROLLBACK", 0, NULL);
    begin_as(app, aud, NULL);
    assert_int_equal(number(app, count_ui, 0, NULL), total);
    rejects(app, ui_sql, 1, (const char *const[]){op2}, "42501"); /* auditors only read */
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* A batch for an authenticated device carries several operators' ops. */
    begin_as(app, NULL, "it-rls-dev");
    exec_ok(app, ui_sql, 1, (const char *const[]){op1});
    exec_ok(app, ui_sql, 1, (const char *const[]){op2});
    exec_ok(app,
            "INSERT INTO integrationevent (source_system, event_type, details, user_id) "
            "VALUES ('scanner', 'sync', '{}', $1::uuid)",
            1, (const char *const[]){op2});
    exec_ok(app, "ROLLBACK", 0, NULL);
    /* Reconciliation's writes for one op of that batch, committed. */
    char *loc = make_location("it-rls-shelf");
    char *item = value(su,
                       "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
                       "VALUES ('washer', 'IT-RLS-SKU', 3, $1::int) RETURNING resource_id",
                       1, (const char *const[]){loc});
    char *op_id = value(app, "SELECT gen_random_uuid()", 0, NULL);
    const char *pw[] = {item, op_id, op1};
    begin_as(app, NULL, "it-rls-dev");
    exec_ok(app, "SELECT 1 FROM device WHERE device_id = 'it-rls-dev' FOR UPDATE", 0, NULL);
    exec_ok(app,
            "INSERT INTO received_op (op_id, device_id, batch_id, op_type, status, user_id, "
            "event_at) VALUES ($1::uuid, 'it-rls-dev', gen_random_uuid(), 'inventory.adjust', "
            "'applied', $2::uuid, now())",
            2, pw + 1);
    exec_ok(app, "UPDATE inventory SET quantity = quantity - 1 WHERE resource_id = $1::uuid", 1,
            pw);
    exec_ok(app,
            "INSERT INTO inventory_ledger (resource_id, kind, delta, quantity_after, op_id, "
            "event_at, user_id, device_id) SELECT resource_id, 'adjust', -1, quantity, "
            "$2::uuid, now(), $3::uuid, 'it-rls-dev' FROM inventory WHERE resource_id = $1::uuid",
            3, pw);
    exec_ok(app, "UPDATE device SET last_seen_at = now() WHERE device_id = 'it-rls-dev'", 0, NULL);
    exec_ok(app, "COMMIT", 0, NULL);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM inventory_ledger l JOIN inventory i USING "
                            "(resource_id) WHERE l.resource_id = $1::uuid AND l.op_id = $2::uuid "
                            "AND l.quantity_after = 2 AND i.quantity = 2",
                            2, pw),
                     1);
    assert_true(number(su,
                       "SELECT count(*) FROM change_feed WHERE entity = 'item' AND entity_key = $1",
                       1, pw) >= 2); /* received, then adjusted */
    free(op_id);
    free(item);
    free(loc);

    begin_as(app, NULL, "it-rls-old"); /* revoked */
    rejects(app, ui_sql, 1, (const char *const[]){op1}, "42501");
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* A deactivated manager is nobody special any more. */
    exec_ok(su, "UPDATE users SET is_active = false WHERE user_id = $1::uuid", 1,
            (const char *const[]){mgr});
    begin_as(app, mgr, NULL);
    assert_int_equal(number(app, count_ui, 0, NULL), 0);
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* Never the password hash; the rest of users is readable for pull. */
    rejects(app, "SELECT password_hash FROM users", 0, NULL, "42501");
    rejects(app, "SELECT * FROM users", 0, NULL, "42501");
    assert_true(number(app,
                       "SELECT count(*) FROM (SELECT user_id, username, is_active FROM users) u", 0,
                       NULL) >= 4);
    /* Append-only tables, no DDL, no partitions directly. */
    rejects(app, "DELETE FROM userinteraction", 0, NULL, "42501");
    rejects(app, "UPDATE inventory_ledger SET delta = 0", 0, NULL, "42501");
    rejects(app, "DELETE FROM received_op", 0, NULL, "42501");
    rejects(app, "INSERT INTO change_feed (entity, entity_key) VALUES ('item', 'x')", 0, NULL,
            "42501");
    rejects(app, "SELECT count(*) FROM integrationevent_default", 0, NULL, "42501");
    rejects(app, "CREATE TABLE public.it_nope (x int)", 0, NULL, "42501");
    rejects(app, "SELECT midway_archive_mark_exported('x')", 0, NULL, "42501");
    /* But it runs the maintenance the server's loop needs. */
    assert_true(number(app, "SELECT midway_ensure_partitions()", 0, NULL) >= 0);
    assert_true(number(app, "SELECT count(*) FROM midway_apply_retention_policy()", 0, NULL) >=
                0);
    assert_true(number(app, "SELECT midway_prune_change_feed()", 0, NULL) >= 0);
    PQfinish(app);

    /* midway_runtime logs in as nobody and owns nothing. */
    assert_int_equal(number(su,
                            "SELECT count(*) FROM pg_roles WHERE rolname = 'midway_runtime' "
                            "AND NOT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls",
                            0, NULL),
                     1);
    assert_int_equal(number(su,
                            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + "
                            "(SELECT count(*) FROM pg_proc WHERE proowner = r.oid) + "
                            "(SELECT count(*) FROM pg_type WHERE typowner = r.oid) + "
                            "(SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) "
                            "FROM pg_roles r WHERE r.rolname = 'midway_runtime'",
                            0, NULL),
                     0);
    free(op1);
    free(op2);
    free(mgr);
    free(aud);
}

/* Least privilege (009): the runtime role writes exactly the columns the server writes, never
 * registers devices, and runs retention only with the owner's policy. */
static void runtime_role_writes_only_what_the_server_writes(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    ensure_app_role();
    char *loc = make_location("it-lp-dock");
    exec_ok(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('it-lp-dev', 'scanner', "
            "'h-it-lp-dev')",
            0, NULL);
    exec_ok(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('LP', 'IT-LP-1', 5, $1::int)",
            1, (const char *const[]){loc});
    PGconn *app = connect_as(APP_ROLE);

    /* device: read, refresh last_seen_at, lock; nothing else. */
    rejects(app,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('it-lp-rogue', 'scanner', "
            "'h-rogue')",
            0, NULL, "42501");
    rejects(app, "UPDATE device SET token_hash = 'h-stolen' WHERE device_id = 'it-lp-dev'", 0,
            NULL, "42501");
    rejects(app, "UPDATE device SET revoked_at = NULL WHERE device_id = 'it-lp-dev'", 0, NULL,
            "42501");
    rejects(app, "UPDATE device SET name = 'x' WHERE device_id = 'it-lp-dev'", 0, NULL, "42501");
    exec_ok(app, "UPDATE device SET last_seen_at = now() WHERE device_id = 'it-lp-dev'", 0, NULL);
    exec_ok(app, "BEGIN", 0, NULL);
    assert_int_equal(number(app,
                            "SELECT count(*) FROM (SELECT 1 FROM device d WHERE d.device_id = "
                            "'it-lp-dev' FOR NO KEY UPDATE OF d) x",
                            0, NULL),
                     1);
    exec_ok(app, "ROLLBACK", 0, NULL);

    /* inventory: quantity, location and the timestamp; never the item's identity. */
    rejects(app, "UPDATE inventory SET item_sku = 'IT-LP-2' WHERE item_sku = 'IT-LP-1'", 0, NULL,
            "42501");
    rejects(app, "UPDATE inventory SET item_name = 'x' WHERE item_sku = 'IT-LP-1'", 0, NULL,
            "42501");
    rejects(app, "UPDATE inventory SET description = 'x' WHERE item_sku = 'IT-LP-1'", 0, NULL,
            "42501");
    rejects(app,
            "UPDATE inventory SET resource_id = gen_random_uuid() WHERE item_sku = 'IT-LP-1'", 0,
            NULL, "42501");
    exec_ok(app,
            "UPDATE inventory SET quantity = 4, location_id = $1::int, last_updated_at = now() "
            "WHERE item_sku = 'IT-LP-1'",
            1, (const char *const[]){loc});
    exec_ok(app,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('LP new', 'IT-LP-NEW', 1, $1::int)",
            1, (const char *const[]){loc});

    /* Retention: the wrapper, never the function with arguments of the caller's choosing. */
    rejects(app,
            "SELECT * FROM midway_apply_retention('1 month', '1 month', '0', false)", 0, NULL,
            "42501");
    rejects(app, "SELECT * FROM midway_apply_retention()", 0, NULL, "42501");
    rejects(app, "UPDATE retention_policy SET archive_grace = '0'", 0, NULL, "42501");
    rejects(app, "SELECT * FROM retention_policy", 0, NULL, "42501");
    assert_true(number(app, "SELECT count(*) FROM midway_apply_retention_policy()", 0, NULL) >=
                0);
    PQfinish(app);
    free(loc);
}

/* ---- change feed ---- */

/* The keys among watch[0..1] of the location rows a pull after cursor (txid, seq) hands
 * out, in order, as "k1,k2"; cursor_txid/cursor_seq advance to the last row handed out.
 * Rows of other tests pass by unreported. */
static char *pull_locations(PGconn *app, char *cursor_txid, char *cursor_seq, size_t cap,
                            const char *const watch[2])
{
    const char *p[] = {cursor_txid, cursor_seq};
    PGresult *r = must(app,
                       "SELECT txid::text, seq::text, entity, entity_key FROM change_feed "
                       "WHERE (txid, seq) > ($1::xid8, $2::bigint) "
                       "AND txid < pg_snapshot_xmin(pg_current_snapshot()) "
                       "ORDER BY txid, seq",
                       2, p);
    size_t len = 0;
    char *out = calloc(1, 512);
    assert_non_null(out);
    for (int i = 0; i < PQntuples(r); i++) {
        snprintf(cursor_txid, cap, "%s", PQgetvalue(r, i, 0));
        snprintf(cursor_seq, cap, "%s", PQgetvalue(r, i, 1));
        const char *key = PQgetvalue(r, i, 3);
        if (strcmp(PQgetvalue(r, i, 2), "location") != 0 || !watch ||
            (strcmp(key, watch[0]) != 0 && strcmp(key, watch[1]) != 0))
            continue;
        int w = snprintf(out + len, 512 - len, "%s%s", len ? "," : "", key);
        assert_true(w > 0 && (size_t)w < 512 - len);
        len += (size_t)w;
    }
    PQclear(r);
    return out;
}

static void change_feed_never_skips_late_commits(void **state)
{
    (void)state;
    REQUIRE_SCHEMA();
    PGconn *app = connect_as(APP_ROLE);
    char txid[32] = "0";
    char seq[32] = "0";
    free(pull_locations(app, txid, seq, sizeof txid, NULL)); /* catch up */

    /* A takes its transaction id (and a feed seq) first but commits after B. */
    char *ci = pgtest_conninfo(pg, DB_NAME, "postgres");
    PGconn *a = PQconnectdb(ci);
    free(ci);
    assert_int_equal(PQstatus(a), CONNECTION_OK);
    exec_ok(a, "BEGIN", 0, NULL);
    PGresult *r = must(a,
                       "INSERT INTO locations (location_name) VALUES ('it-feed-a') "
                       "RETURNING location_id::text",
                       0, NULL);
    char *loc_a = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    char *loc_b = make_location("it-feed-b"); /* B: commits now */
    const char *const watch[2] = {loc_a, loc_b};

    char *first = pull_locations(app, txid, seq, sizeof txid, watch);
    assert_string_equal(first, ""); /* B waits behind A's open transaction */
    free(first);
    exec_ok(a, "COMMIT", 0, NULL);
    PQfinish(a);

    /* Some other transaction (autovacuum's analyze) may briefly hold the horizon back. */
    char want[128];
    snprintf(want, sizeof want, "%s,%s", loc_a, loc_b);
    char *got = NULL;
    for (int tries = 0; tries < 100; tries++) {
        free(got);
        char t[32];
        char s[32];
        snprintf(t, sizeof t, "%s", txid);
        snprintf(s, sizeof s, "%s", seq);
        got = pull_locations(app, t, s, sizeof t, watch);
        if (strcmp(got, want) == 0)
            break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_string_equal(got, want);
    free(got);

    /* Other entities: an item, a user's roles, a role's permissions. */
    exec_ok(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('feed', 'IT-FEED', 1, $1::int)",
            1, (const char *const[]){loc_b});
    char *u = make_user("it_feed_user", "auditor");
    exec_ok(su,
            "DELETE FROM role_permission WHERE permission = 'report.read' AND role_id = "
            "(SELECT role_id FROM roles WHERE role_name = 'auditor')",
            0, NULL);
    r = must(su,
             "SELECT string_agg(DISTINCT entity, ',' ORDER BY entity) FROM change_feed "
             "WHERE seq > $1::bigint",
             1, (const char *const[]){seq});
    assert_string_equal(PQgetvalue(r, 0, 0), "item,location,role_permission,user");
    PQclear(r);
    free(u);
    free(loc_a);
    free(loc_b);
    PQfinish(app);
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    char *ci = pgtest_create_db(pg, DB_NAME);
    su = PQconnectdb(ci);
    free(ci);
    if (PQstatus(su) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(su));
        return -1;
    }
    char *dir = tu_path(pgtest_schema_dir(), "postgres");
    nfiles = scandir(dir, &files, sql_name, alphasort);
    if (nfiles < 1) {
        fprintf(stderr, "no migration files in %s\n", dir);
        free(dir);
        return -1;
    }
    applied_ok = 1;
    for (int i = 0; i < nfiles && applied_ok; i++) {
        char *path = tu_path(dir, files[i]->d_name);
        int status = pgtest_psql_file(pg, DB_NAME, path);
        if (status != 0) {
            snprintf(apply_msg, sizeof apply_msg, "psql -1 -f %.200s exited with %d",
                     files[i]->d_name, status);
            applied_ok = 0;
        }
        free(path);
    }
    free(dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(su);
    for (int i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    pgtest_stop(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(files_are_plain_sql_recording_themselves),
        cmocka_unit_test(files_apply_in_order_with_psql),
        cmocka_unit_test(seed_columns_exist_as_documented),
        cmocka_unit_test(seed_keys_and_references_exist),
        cmocka_unit_test(seed_section3_indexes_exist),
        cmocka_unit_test(seed_constraints_reject_bad_rows),
        cmocka_unit_test(rbac_roles_and_permissions_are_seeded),
        cmocka_unit_test(sync_tables_reject_bad_rows),
        cmocka_unit_test(partitions_route_rows_and_drain_default),
        cmocka_unit_test(retention_archives_then_drops_old_partitions),
        cmocka_unit_test(second_application_fails_and_changes_nothing),
        cmocka_unit_test(runtime_role_sees_rows_as_rls_allows),
        cmocka_unit_test(runtime_role_writes_only_what_the_server_writes),
        cmocka_unit_test(change_feed_never_skips_late_commits),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
