/* dbrole.c - the runtime login's privileges, checked at start (see dbrole.h). */
#include "dbrole.h"

#include "db.h"

#include <stdbool.h>
#include <string.h>

/* pg_has_role(..., 'MEMBER') also covers roles reachable only with SET ROLE: a login that
 * may become a superuser or the owner is as good as one. For a superuser it is true for
 * every role, which the first column reports first. */
static const char CHECK_SQL[] =
    "SELECT current_user::text,"
    "  (SELECT min(r.rolname) FROM pg_roles r"
    "    WHERE r.rolsuper AND pg_has_role(current_user, r.oid, 'MEMBER')),"
    "  (SELECT min(r.rolname) FROM pg_roles r"
    "    WHERE r.rolbypassrls AND pg_has_role(current_user, r.oid, 'MEMBER')),"
    "  (SELECT min(o.what) FROM ("
    "     SELECT format('table %s (owner %s)', c.oid::regclass, pg_get_userbyid(c.relowner))"
    "            AS what"
    "       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "      WHERE n.nspname IN ('public', 'midway_archive') AND c.relkind IN ('r', 'p')"
    "        AND pg_has_role(current_user, c.relowner, 'MEMBER')"
    "     UNION ALL"
    "     SELECT format('schema %s (owner %s)', n.nspname, pg_get_userbyid(n.nspowner))"
    "       FROM pg_namespace n"
    "      WHERE n.nspname IN ('public', 'midway_archive')"
    "        AND pg_has_role(current_user, n.nspowner, 'MEMBER')) o)";

/* Role names are at most 63 bytes (NAMEDATALEN); the "what" text a little more. */
#define SHOWN 80

enum mw_err mw_dbrole_check_runtime(PGconn *conn, struct mw_error *err)
{
    PGresult *res = PQexecParams(conn, CHECK_SQL, 0, NULL, NULL, NULL, NULL, 0);
    enum mw_err rc = MW_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = mw_db_fail(err, conn, res, "check the database login's privileges");
        goto out;
    }
    const char *login = PQgetvalue(res, 0, 0);
    if (!PQgetisnull(res, 0, 1)) {
        const char *via = PQgetvalue(res, 0, 1);
        bool self = strcmp(via, login) == 0;
        rc = mw_fail(err, MW_EAUTH,
                     "the database login '%.*s' is %s%.*s%s: row-level security does not apply "
                     "to it. Give --db a login that is only a member of midway_runtime (docs/"
                     "schema.md, Database roles)",
                     SHOWN, login, self ? "a superuser" : "a member of superuser '",
                     self ? 0 : SHOWN, self ? "" : via, self ? "" : "'");
        goto out;
    }
    if (!PQgetisnull(res, 0, 2)) {
        const char *via = PQgetvalue(res, 0, 2);
        rc = mw_fail(err, MW_EAUTH,
                     "the database login '%.*s' has BYPASSRLS (through role '%.*s'): row-level "
                     "security does not apply to it. Run ALTER ROLE %.*s NOBYPASSRLS or use "
                     "another login",
                     SHOWN, login, SHOWN, via, SHOWN, via);
        goto out;
    }
    if (!PQgetisnull(res, 0, 3)) {
        rc = mw_fail(err, MW_EAUTH,
                     "the database login '%.*s' owns %.*s: an owner can turn row-level "
                     "security off. Serve with a login that is only a member of midway_runtime; "
                     "the owner goes in --db-owner",
                     SHOWN, login, SHOWN, PQgetvalue(res, 0, 3));
        goto out;
    }
out:
    PQclear(res);
    return rc;
}
