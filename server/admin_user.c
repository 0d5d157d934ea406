/* admin_user.c - user add and disable, role grant and revoke (see admin.h). */
#include "admin_internal.h"
#include "bounds.h"
#include "password.h"
#include "token.h"
#include "uuid.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Users.email VARCHAR(255); addresses are ASCII here, so bytes are characters. */
#define EMAIL_MAX       255u
/* RFC 5321 4.5.3.1: local part at most 64 octets, a domain label at most 63. */
#define EMAIL_LOCAL_MAX 64u
#define EMAIL_LABEL_MAX 63u
/* Roles.role_name VARCHAR(50). */
#define ROLE_NAME_MAX   50u

/* New usernames: ASCII letters, digits and . _ @ -, starting with a letter or digit, so a
 * name reads the same on every scanner screen and in every log line, and "ana" and "ana "
 * cannot both exist. */
static bool username_ok(const char *s)
{
    size_t n = strnlen(s, MW_USERNAME_MAX + 1);
    if (n == 0 || n > MW_USERNAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '@' && ch != '-')))
            return false;
    }
    return true;
}

/* A plausible address: local@domain, ASCII only (no quoted local parts, no IP literals),
 * the domain being dot-separated labels of letters, digits and inner hyphens, at least two
 * of them. Whether the mailbox exists is not ours to check. */
static bool email_ok(const char *s)
{
    size_t n = strnlen(s, EMAIL_MAX + 1);
    if (n > EMAIL_MAX)
        return false;
    const char *at = strchr(s, '@');
    if (!at || strchr(at + 1, '@'))
        return false;
    size_t local = (size_t)(at - s);
    if (local == 0 || local > EMAIL_LOCAL_MAX || s[0] == '.' || s[local - 1] == '.')
        return false;
    for (size_t i = 0; i < local; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("\"(),:;<>[\\]", ch))
            return false;
        if (ch == '.' && s[i + 1] == '.')
            return false;
    }
    const char *d = at + 1;
    size_t labels = 0;
    for (;;) {
        size_t len = 0;
        while ((d[len] >= 'A' && d[len] <= 'Z') || (d[len] >= 'a' && d[len] <= 'z') ||
               (d[len] >= '0' && d[len] <= '9') || d[len] == '-')
            len++;
        if (len == 0 || len > EMAIL_LABEL_MAX || d[0] == '-' || d[len - 1] == '-')
            return false;
        labels++;
        if (d[len] == '\0')
            break;
        if (d[len] != '.')
            return false;
        d += len + 1;
    }
    return labels >= 2;
}

/* Looking up an existing user is lenient about the characters (a DBA may have created it
 * with others); only the bounds of the column apply. */
static int check_username_ref(const struct mw_admin_cmd *c)
{
    if (!c->username)
        return mw_admin_usage(c, "--username is required (see --help)");
    if (!mw_admin_text_ok(c->username, 1, MW_USERNAME_MAX, false))
        return mw_admin_usage(c, "--username must be 1..%u bytes of text", MW_USERNAME_MAX);
    return MW_ADMIN_EXIT_OK;
}

static int check_role_ref(const struct mw_admin_cmd *c)
{
    if (!c->role)
        return mw_admin_usage(c, "--role is required (see --help)");
    if (!mw_admin_text_ok(c->role, 1, ROLE_NAME_MAX, false))
        return mw_admin_usage(c, "--role must be 1..%u bytes of text", ROLE_NAME_MAX);
    return MW_ADMIN_EXIT_OK;
}

/* Finds the role's id into role_id (text). An unknown role is bad input: the message lists
 * the roles that exist. */
static int find_role(const struct mw_admin_cmd *c, PGconn *conn, char role_id[24])
{
    PGresult *bad = NULL;
    const char *params[1] = {c->role};
    PGresult *res = mw_admin_query(conn,
                                   "SELECT role_id::text,"
                                   " (SELECT string_agg(role_name, ', ' ORDER BY role_name)"
                                   "    FROM roles)"
                                   " FROM (SELECT NULL) AS one"
                                   " LEFT JOIN roles ON role_name = $1",
                                   1, params, &bad);
    int rc = MW_ADMIN_EXIT_OK;
    if (!res) {
        rc = mw_admin_db_failed(c, conn, bad, "look up role");
    } else if (PQntuples(res) != 1) {
        rc = mw_admin_failed(c, "look up role: unexpected result");
    } else if (PQgetisnull(res, 0, 0)) {
        char shown[64];
        rc = mw_admin_usage(c, "no role named '%s' (roles: %s)",
                            mw_admin_printable(c->role, shown, sizeof shown),
                            PQgetisnull(res, 0, 1) ? "none" : PQgetvalue(res, 0, 1));
    } else {
        size_t n = (size_t)PQgetlength(res, 0, 0);
        if (n >= 24) {
            rc = mw_admin_failed(c, "look up role: unexpected result");
        } else {
            memcpy(role_id, PQgetvalue(res, 0, 0), n + 1);
        }
    }
    PQclear(res);
    PQclear(bad);
    return rc;
}

/* Finds the user's id (text UUID); a missing user fails the command (exit 1). *active_out
 * (may be NULL) gets is_active. */
static int find_user(const struct mw_admin_cmd *c, PGconn *conn, char user_id[MW_UUID_STR_SIZE],
                     bool *active_out)
{
    PGresult *bad = NULL;
    const char *params[1] = {c->username};
    PGresult *res = mw_admin_query(
        conn, "SELECT user_id::text, is_active FROM users WHERE username = $1", 1, params, &bad);
    int rc = MW_ADMIN_EXIT_OK;
    if (!res) {
        rc = mw_admin_db_failed(c, conn, bad, "look up user");
    } else if (PQntuples(res) == 0) {
        char shown[64];
        rc = mw_admin_failed(c, "no user named '%s'",
                             mw_admin_printable(c->username, shown, sizeof shown));
    } else if (PQgetlength(res, 0, 0) != MW_UUID_STR_LEN) {
        rc = mw_admin_failed(c, "look up user: unexpected result");
    } else {
        memcpy(user_id, PQgetvalue(res, 0, 0), MW_UUID_STR_SIZE);
        if (active_out)
            *active_out = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    }
    PQclear(res);
    PQclear(bad);
    return rc;
}

int mw_admin_user_add(const struct mw_admin_cmd *c)
{
    char password[MW_PASSWORD_MAX + 1];
    size_t password_len = 0;
    char hash[MW_PASSWORD_HASH_SIZE] = "";
    char role_id[24];
    char user_id[MW_UUID_STR_SIZE];
    struct mw_admin_db db = {0};
    struct mw_error err = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    int rc;

    if (!c->username)
        return mw_admin_usage(c, "--username is required (see --help)");
    if (!username_ok(c->username))
        return mw_admin_usage(c,
                              "--username must be 1..%u of A-Z, a-z, 0-9, '.', '_', '@' and "
                              "'-', starting with a letter or digit",
                              MW_USERNAME_MAX);
    if (!c->email)
        return mw_admin_usage(c, "--email is required (see --help)");
    if (!email_ok(c->email))
        return mw_admin_usage(c,
                              "--email must look like name@example.com (ASCII, at most %u "
                              "bytes)",
                              EMAIL_MAX);
    rc = check_role_ref(c);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;

    bool tty = isatty(STDIN_FILENO);
    if (tty) {
        fprintf(stderr, "Password for %s: ", c->username);
        fflush(stderr);
    }
    enum mw_err prc = mw_password_read(STDIN_FILENO, password, &password_len, &err);
    if (tty)
        fputc('\n', stderr); /* the Enter the terminal did not echo */
    if (prc != MW_OK)
        return prc == MW_EIO ? mw_admin_failed(c, "%s", err.msg)
                             : mw_admin_usage(c,
                                              "%s (the password is the first line of "
                                              "standard input)",
                                              err.msg);

    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;
    rc = find_role(c, db.conn, role_id);
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;

    struct mw_uuid uid;
    if (mw_uuid_v7(&uid, &err) != MW_OK ||
        mw_password_hash(password, password_len, hash, &err) != MW_OK) {
        rc = mw_admin_failed(c, "%s", err.msg);
        goto done;
    }
    mw_uuid_format(&uid, user_id);
    mw_token_wipe(password, sizeof password);

    /* One statement, so the user never exists without their role. */
    const char *params[5] = {user_id, c->username, c->email, hash, role_id};
    res = mw_admin_query(db.conn,
                         "WITH u AS ("
                         "  INSERT INTO users (user_id, username, email, password_hash)"
                         "  VALUES ($1, $2, $3, $4) RETURNING user_id"
                         ") INSERT INTO userroles (user_id, role_id)"
                         " SELECT user_id, $5::int FROM u",
                         5, params, &bad);
    if (!res) {
        const char *constraint = mw_admin_constraint(bad);
        if (strcmp(mw_admin_sqlstate(bad), "23505") == 0 &&
            strcmp(constraint, "users_username_key") == 0)
            rc = mw_admin_usage(c, "username '%s' is taken", c->username);
        else if (strcmp(mw_admin_sqlstate(bad), "23505") == 0 &&
                 strcmp(constraint, "users_email_key") == 0)
            rc = mw_admin_usage(c, "email '%s' is already used by another user", c->email);
        else
            rc = mw_admin_db_failed(c, db.conn, bad, "insert user");
        goto done;
    }

    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        cJSON *roles = NULL;
        if (out && cJSON_AddStringToObject(out, "user_id", user_id) &&
            cJSON_AddStringToObject(out, "username", c->username) &&
            cJSON_AddStringToObject(out, "email", c->email))
            roles = cJSON_AddArrayToObject(out, "roles");
        cJSON *role = roles ? cJSON_CreateString(c->role) : NULL;
        if (role && !cJSON_AddItemToArray(roles, role)) {
            cJSON_Delete(role);
            role = NULL;
        }
        if (!role) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else {
        printf("User %s added with role %s (user_id %s).\n", c->username, c->role, user_id);
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    mw_token_wipe(password, sizeof password);
    mw_token_wipe(hash, sizeof hash);
    return rc;
}

int mw_admin_user_disable(const struct mw_admin_cmd *c)
{
    struct mw_admin_db db = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    char user_id[MW_UUID_STR_SIZE];
    bool active = false;
    int rc = check_username_ref(c);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    rc = find_user(c, db.conn, user_id, &active);
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;
    bool already = !active;
    if (active) {
        const char *params[1] = {user_id};
        res = mw_admin_query(db.conn,
                             "UPDATE users SET is_active = false"
                             " WHERE user_id = $1::uuid AND is_active RETURNING 1",
                             1, params, &bad);
        if (!res) {
            rc = mw_admin_db_failed(c, db.conn, bad, "disable user");
            goto done;
        }
        /* Someone else disabled the user between the lookup and here. */
        already = PQntuples(res) == 0;
    }
    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "user_id", user_id) ||
                    !cJSON_AddStringToObject(out, "username", c->username) ||
                    !cJSON_AddBoolToObject(out, "is_active", false) ||
                    !cJSON_AddBoolToObject(out, "already_disabled", already))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else {
        char shown[64];
        printf(already ? "User %s was already disabled.\n"
                       : "User %s disabled: every permission is gone from now on.\n",
               mw_admin_printable(c->username, shown, sizeof shown));
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}

/* role grant (grant true) and role revoke. */
static int change_role(const struct mw_admin_cmd *c, bool grant)
{
    struct mw_admin_db db = {0};
    PGresult *res = NULL;
    PGresult *bad = NULL;
    char user_id[MW_UUID_STR_SIZE];
    char role_id[24];
    bool changed = false;
    int rc = check_username_ref(c);
    if (rc == MW_ADMIN_EXIT_OK)
        rc = check_role_ref(c);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    rc = mw_admin_connect(c, &db);
    if (rc != MW_ADMIN_EXIT_OK)
        return rc;
    /* The role first: naming a role that does not exist is bad input (exit 2) whoever the
     * user is. */
    rc = find_role(c, db.conn, role_id);
    if (rc == MW_ADMIN_EXIT_OK)
        rc = find_user(c, db.conn, user_id, NULL);
    if (rc != MW_ADMIN_EXIT_OK)
        goto done;

    const char *params[2] = {user_id, role_id};
    if (grant) {
        /* Pull pages carry a user's roles and refuse more than MW_USER_ROLES_MAX; the count
         * is checked in the statement that inserts. */
        res = mw_admin_query(db.conn,
                             "SELECT EXISTS (SELECT 1 FROM userroles"
                             "                WHERE user_id = $1::uuid AND role_id = $2::int),"
                             " (SELECT count(*) FROM userroles WHERE user_id = $1::uuid)",
                             2, params, &bad);
        if (!res || PQntuples(res) != 1) {
            rc = mw_admin_db_failed(c, db.conn, bad, "grant role");
            goto done;
        }
        bool held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        int64_t count = 0;
        (void)mw_admin_parse_int(PQgetvalue(res, 0, 1), 0, INT64_MAX, &count);
        PQclear(res);
        res = NULL;
        if (!held && count >= (int64_t)MW_USER_ROLES_MAX) {
            rc = mw_admin_usage(c, "the user already holds %u roles, the most a user may hold",
                                MW_USER_ROLES_MAX);
            goto done;
        }
        if (!held) {
            res = mw_admin_query(db.conn,
                                 "INSERT INTO userroles (user_id, role_id)"
                                 " VALUES ($1::uuid, $2::int) ON CONFLICT DO NOTHING RETURNING 1",
                                 2, params, &bad);
            if (!res) {
                rc = mw_admin_db_failed(c, db.conn, bad, "grant role");
                goto done;
            }
            changed = PQntuples(res) == 1;
        }
    } else {
        res = mw_admin_query(db.conn,
                             "DELETE FROM userroles WHERE user_id = $1::uuid AND role_id = $2::int"
                             " RETURNING 1",
                             2, params, &bad);
        if (!res) {
            rc = mw_admin_db_failed(c, db.conn, bad, "revoke role");
            goto done;
        }
        changed = PQntuples(res) == 1;
    }

    if (c->json) {
        cJSON *out = cJSON_CreateObject();
        if (out && (!cJSON_AddStringToObject(out, "user_id", user_id) ||
                    !cJSON_AddStringToObject(out, "username", c->username) ||
                    !cJSON_AddStringToObject(out, "role", c->role) ||
                    !cJSON_AddBoolToObject(out, "changed", changed))) {
            cJSON_Delete(out);
            out = NULL;
        }
        rc = mw_admin_print_json(c, out);
    } else {
        char user[64], role[64];
        mw_admin_printable(c->username, user, sizeof user);
        mw_admin_printable(c->role, role, sizeof role);
        if (grant)
            printf(changed ? "User %s now holds role %s.\n" : "User %s already holds role %s.\n",
                   user, role);
        else
            printf(changed ? "User %s no longer holds role %s.\n"
                           : "User %s did not hold role %s.\n",
                   user, role);
    }

done:
    PQclear(res);
    PQclear(bad);
    mw_admin_disconnect(&db);
    return rc;
}

int mw_admin_user_grant(const struct mw_admin_cmd *c)
{
    return change_role(c, true);
}

int mw_admin_user_ungrant(const struct mw_admin_cmd *c)
{
    return change_role(c, false);
}
