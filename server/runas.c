/* runas.c - giving up root (see runas.h). */
/* setgroups() is a BSD/Linux extension. */
#define _GNU_SOURCE
#include "runas.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum mw_err mw_runas_resolve(const char *name, struct mw_runas *out, struct mw_error *err)
{
    memset(out, 0, sizeof *out);
    out->uid = geteuid();
    out->gid = getegid();
    bool root = out->uid == 0;
    if (!name || !name[0]) {
        if (root)
            return mw_fail(err, MW_EAUTH,
                           "refusing to serve as root: give --user NAME (an unprivileged user "
                           "such as midway) to run as once the port is bound");
        return MW_OK;
    }
    if (strlen(name) > MW_RUNAS_NAME_MAX)
        return mw_fail(err, MW_ENOTFOUND, "--user: no such user");
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (!pw)
        return mw_fail(err, MW_ENOTFOUND, "--user %s: no such user%s%s", name,
                       errno ? ": " : "", errno ? strerror(errno) : "");
    if (pw->pw_uid == 0)
        return mw_fail(err, MW_EAUTH, "--user %s: that is root; name an unprivileged user",
                       name);
    if (!root && pw->pw_uid != out->uid)
        return mw_fail(err, MW_EAUTH,
                       "--user %s: only root can change user, and this runs as uid %u (start "
                       "it as %s, or drop --user)",
                       name, (unsigned)out->uid, name);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->uid = pw->pw_uid;
    out->gid = pw->pw_gid;
    out->drop = root;
    return MW_OK;
}

enum mw_err mw_runas_drop(const struct mw_runas *ra, struct mw_error *err)
{
    if (!ra->drop)
        return MW_OK;
    /* Groups first: after setuid there is no privilege left to change them. */
    if (setgroups(1, &ra->gid) != 0)
        return mw_fail(err, MW_EIO, "setgroups: %s", strerror(errno));
    if (setgid(ra->gid) != 0)
        return mw_fail(err, MW_EIO, "setgid %u: %s", (unsigned)ra->gid, strerror(errno));
    if (setuid(ra->uid) != 0)
        return mw_fail(err, MW_EIO, "setuid %u (%s): %s", (unsigned)ra->uid, ra->name,
                       strerror(errno));
    if (setuid(0) == 0 || geteuid() != ra->uid || getuid() != ra->uid || getegid() != ra->gid)
        return mw_fail(err, MW_EIO, "still able to become root after switching to %s", ra->name);
    return MW_OK;
}
