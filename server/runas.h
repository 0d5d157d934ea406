/* runas.h - the OS user `serve` runs as. Started as root (to bind a port below 1024, or by a
 * script), it needs to be told a user (--user NAME) and becomes that user once the listener
 * is bound and the files only root may read (TLS key, database passwords) are loaded: a
 * flaw in the TLS or HTTP code then yields that user's rights, not root's.
 * Thread safety: mw_runas_resolve main thread only (getpwnam); mw_runas_drop applies to
 * every thread of the process (glibc's setuid and friends change all threads). */
#ifndef MIDWAY_SERVER_RUNAS_H
#define MIDWAY_SERVER_RUNAS_H
#include "midway/err.h"

#include <stdbool.h>
#include <sys/types.h>

#define MW_RUNAS_NAME_MAX 64

struct mw_runas {
    bool drop; /* root now, name later */
    uid_t uid;
    gid_t gid;
    char name[MW_RUNAS_NAME_MAX + 1];
};

/* Decides from the effective uid and name (may be NULL: none given).
 * As root: name is required and must be a user other than root; out->drop is set.
 * Not root: name may be omitted or must be the current user (nothing to drop).
 * Errors: MW_EAUTH (root without a name, or with root; a name other than ours when not
 * root; the message says what to do), MW_ENOTFOUND (no such user). */
MW_NODISCARD enum mw_err mw_runas_resolve(const char *name, struct mw_runas *out,
                                          struct mw_error *err);

/* When ra->drop: supplementary groups become ra->gid alone, then the gid, then the uid, and
 * regaining root must fail. Nothing to do otherwise.
 * Errors: MW_EIO (a call failed, or root could be regained: the process must not go on). */
MW_NODISCARD enum mw_err mw_runas_drop(const struct mw_runas *ra, struct mw_error *err);

#endif
