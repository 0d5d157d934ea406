/* dbrole.h - what the server's database login may do, checked before it serves.
 * Row-level security and the grants of midway_runtime (docs/schema.md, "Database roles and
 * grants") hold only for a login that is not a superuser, has no BYPASSRLS and owns nothing
 * of the schema: such a login could read across users, turn the policies off or drop the
 * tables. A server pointed at one refuses to start rather than run with none of it.
 * Thread safety: any thread, on a connection it holds. */
#ifndef MIDWAY_SERVER_DBROLE_H
#define MIDWAY_SERVER_DBROLE_H
#include "midway/err.h"

#include <libpq-fe.h>

/* Checks the connection's login (current_user) and every role it is a member of.
 * Errors: MW_EAUTH (a superuser, BYPASSRLS, or the owner of a table or schema of Midway's;
 * the message names the role, the problem and the fix), MW_EDB (the query failed). */
MW_NODISCARD enum mw_err mw_dbrole_check_runtime(PGconn *conn, struct mw_error *err);

#endif
