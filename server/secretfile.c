/* secretfile.c - secrets read from their own files (see secretfile.h). */
#include "secretfile.h"

#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Paths are cut to this many bytes in messages so the reason fits in mw_error. */
#define SHOWN 96

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

void mw_secretfile_free(char *s)
{
    if (!s)
        return;
    wipe(s, strlen(s));
    mw_free(s);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

enum mw_err mw_secretfile_read(const char *path, char **out, struct mw_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return mw_fail(err, MW_ENOTFOUND, "%.*s does not exist", SHOWN, path);
        return mw_fail(err, MW_EIO, "open %.*s: %s", SHOWN, path, strerror(errno));
    }
    enum mw_err rc = MW_OK;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mw_fail(err, MW_EIO, "stat %.*s: %s", SHOWN, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mw_fail(err, MW_EIO, "%.*s is not a regular file", SHOWN, path);
        goto out;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
        rc = mw_fail(err, MW_EAUTH,
                     "%.*s holds a password but %s may %s it (mode %04o): chmod 600 %.*s",
                     SHOWN, path, (st.st_mode & (S_IROTH | S_IWOTH)) ? "everyone" : "its group",
                     (st.st_mode & S_IROTH) ? "read" : "change", (unsigned)(st.st_mode & 07777),
                     SHOWN, path);
        goto out;
    }
    buf = mw_malloc(MW_SECRETFILE_MAX + 2);
    if (!buf) {
        rc = mw_fail(err, MW_ENOMEM, "out of memory");
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, MW_SECRETFILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mw_fail(err, MW_EIO, "read %.*s: %s", SHOWN, path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > MW_SECRETFILE_MAX) {
            rc = mw_fail(err, MW_ETOOBIG, "%.*s is longer than %d bytes", SHOWN, path,
                         MW_SECRETFILE_MAX);
            goto out;
        }
    }
    size_t start = 0;
    while (start < len && blank(buf[start]))
        start++;
    while (len > start && blank(buf[len - 1]))
        len--;
    if (len == start) {
        rc = mw_fail(err, MW_EMALFORMED, "%.*s is empty", SHOWN, path);
        goto out;
    }
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            rc = mw_fail(err, MW_EMALFORMED, "%.*s: expected one line of text", SHOWN, path);
            goto out;
        }
    }
    memmove(buf, buf + start, len - start);
    wipe(buf + (len - start), MW_SECRETFILE_MAX + 2 - (len - start)); /* also the NUL */
    *out = buf;
    buf = NULL;
out:
    if (buf) {
        wipe(buf, MW_SECRETFILE_MAX + 2);
        mw_free(buf);
    }
    close(fd);
    return rc;
}
