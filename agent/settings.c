/* settings.c - the settings row and the device token file (see settings.h). */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700
#include "settings.h"

#include "agent_internal.h"
#include "bounds.h"
#include "mem.h"
#include "timestamp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Paths and URLs are cut to this many bytes in messages so the reason fits in mw_error. */
#define SHOWN 96

void mw_settings_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

enum mw_err mw_settings_read_token(const char *path, char *out, size_t size, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    char buf[MW_CLIENT_TOKEN_MAX + 2];
    ssize_t got = 0;
    size_t len = 0;

    if (!path || !out || size < MW_CLIENT_TOKEN_MAX + 1)
        return mw_fail(err, MW_EINVAL, "read token: bad arguments");
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return mw_fail(err, MW_ENOTFOUND, "token file %.*s does not exist", SHOWN, path);
        return mw_fail(err, MW_EIO, "token file %.*s: %s", SHOWN, path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mw_fail(err, MW_EIO, "token file %.*s: %s", SHOWN, path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mw_fail(err, MW_EIO, "token file %.*s is not a regular file", SHOWN, path);
        goto done;
    }
    if (st.st_mode & S_IROTH) {
        rc = mw_fail(err, MW_EAUTH,
                     "token file %.*s is readable by everyone (mode %04o); "
                     "run: chmod 600 %.*s",
                     SHOWN, path, (unsigned)(st.st_mode & 07777), SHOWN, path);
        goto done;
    }
    /* One byte more than a token may have, to tell "too long" from "exactly the maximum". */
    while (len < sizeof(buf)) {
        got = read(fd, buf + len, sizeof(buf) - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = mw_fail(err, MW_EIO, "token file %.*s: %s", SHOWN, path, strerror(errno));
            goto done;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    if (len == 0) {
        rc = mw_fail(err, MW_EAUTH, "token file %.*s is empty", SHOWN, path);
        goto done;
    }
    if (len > MW_CLIENT_TOKEN_MAX) {
        rc = mw_fail(err, MW_EAUTH, "token file %.*s holds more than a token (%d bytes max)", SHOWN,
                     path, MW_CLIENT_TOKEN_MAX);
        goto done;
    }
    for (size_t i = 0; i < len; i++) {
        if (buf[i] <= ' ' || buf[i] >= 0x7f) {
            rc = mw_fail(err, MW_EAUTH,
                         "token file %.*s: the token must be one line of printable ASCII", SHOWN,
                         path);
            goto done;
        }
    }
    memcpy(out, buf, len);
    out[len] = '\0';
done:
    mw_settings_wipe(buf, sizeof(buf));
    close(fd);
    return rc;
}

static int device_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MW_DEVICE_ID_MAX)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static enum mw_err check_url(const char *url, struct mw_error *err)
{
    size_t n = strlen(url);
    if (strncmp(url, "https://", 8) != 0)
        return mw_fail(err, MW_EMALFORMED,
                       "server URL %.*s: must start with https:// (the server is always "
                       "verified with the CA file)",
                       SHOWN, url);
    if (n == 8 || url[8] == '/')
        return mw_fail(err, MW_EMALFORMED, "server URL %.*s: no host", SHOWN, url);
    if (n > MW_AGENT_URL_MAX)
        return mw_fail(err, MW_EMALFORMED, "server URL: longer than %d bytes", MW_AGENT_URL_MAX);
    for (const char *p = url; *p; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '?' || *p == '#')
            return mw_fail(err, MW_EMALFORMED,
                           "server URL %.*s: only scheme, host, port and path, in printable "
                           "ASCII",
                           SHOWN, url);
    }
    return MW_OK;
}

/* The absolute, resolved form of path into out (size bytes). */
static enum mw_err absolute(const char *what, const char *path, char *out, size_t size,
                            struct mw_error *err)
{
    if (!path[0])
        return mw_fail(err, MW_EMALFORMED, "%s: empty path", what);
    char *real = realpath(path, NULL);
    if (!real) {
        if (errno == ENOENT)
            return mw_fail(err, MW_ENOTFOUND, "%s %.*s does not exist", what, SHOWN, path);
        return mw_fail(err, MW_EIO, "%s %.*s: %s", what, SHOWN, path, strerror(errno));
    }
    size_t n = strlen(real);
    if (n >= size || n < 2) {
        free(real);
        return mw_fail(err, MW_EMALFORMED, "%s %.*s: path too long", what, SHOWN, path);
    }
    memcpy(out, real, n + 1);
    free(real); /* realpath allocates with malloc */
    return MW_OK;
}

enum mw_err mw_agent_settings_set(struct mw_agent *a, const char *server_url, const char *device_id,
                                  const char *token_file, const char *ca_file, struct mw_error *err)
{
    enum mw_err rc;
    char token[MW_CLIENT_TOKEN_MAX + 1];
    struct mw_agent_settings *s = NULL;
    sqlite3_stmt *st = NULL;

    if (!a || !server_url || !device_id || !token_file || !ca_file)
        return mw_fail(err, MW_EINVAL, "settings: every argument is required");
    rc = check_url(server_url, err);
    if (rc != MW_OK)
        return rc;
    if (!device_id_valid(device_id))
        return mw_fail(err, MW_EMALFORMED,
                       "device id: 1..%u characters of A-Z a-z 0-9 . _ - (as `midway-server "
                       "device add` printed it)",
                       MW_DEVICE_ID_MAX);
    s = mw_calloc(1, sizeof(*s));
    if (!s)
        return mw_fail(err, MW_ENOMEM, "settings");
    rc = absolute("token file", token_file, s->token_file, sizeof(s->token_file), err);
    if (rc == MW_OK)
        rc = absolute("CA file", ca_file, s->ca_file, sizeof(s->ca_file), err);
    if (rc != MW_OK)
        goto fail;
    /* Read the token once now, so a world-readable or empty token file is refused at setup
     * rather than at the first sync, hours later on an unattended gateway. */
    rc = mw_settings_read_token(s->token_file, token, sizeof(token), err);
    mw_settings_wipe(token, sizeof(token));
    if (rc != MW_OK)
        goto fail;
    FILE *ca = fopen(s->ca_file, "r");
    if (!ca) {
        rc = mw_fail(err, MW_EIO, "CA file %.*s: %s", SHOWN, s->ca_file, strerror(errno));
        goto fail;
    }
    fclose(ca);
    /* A trailing slash would give "//v1/..." in request paths. */
    size_t url_len = strlen(server_url);
    while (url_len > 8 && server_url[url_len - 1] == '/')
        url_len--;
    memcpy(s->server_url, server_url, url_len);
    s->server_url[url_len] = '\0';

    rc = mw_store_begin(a->store, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_store_stmt(a->store,
                       "UPDATE settings SET server_url = ?1, device_id = ?2, token_file = ?3,"
                       " ca_file = ?4, updated_at_ms = ?5 WHERE id = 1",
                       &st, err);
    if (rc != MW_OK)
        goto fail;
    sqlite3_bind_text(st, 1, s->server_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, s->token_file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, s->ca_file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, mw_timestamp_now_ms());
    int src = sqlite3_step(st);
    if (src != SQLITE_DONE) {
        rc = mw_store_fail(a->store, src, err, "save settings");
        sqlite3_reset(st);
        goto fail;
    }
    sqlite3_reset(st);
    rc = mw_store_commit(a->store, err);
    if (rc != MW_OK)
        goto fail;
    mw_free(s);
    return MW_OK;
fail:
    mw_store_rollback(a->store);
    mw_free(s);
    return rc;
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    snprintf(out, size, "%s", v ? (const char *)v : "");
}

enum mw_err mw_settings_load(struct mw_store *s, struct mw_agent_settings *out,
                             struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof(*out));
    enum mw_err rc = mw_store_stmt(
        s, "SELECT server_url, device_id, token_file, ca_file FROM settings WHERE id = 1", &st,
        err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        copy_col(st, 0, out->server_url, sizeof(out->server_url));
        copy_col(st, 1, out->device_id, sizeof(out->device_id));
        copy_col(st, 2, out->token_file, sizeof(out->token_file));
        copy_col(st, 3, out->ca_file, sizeof(out->ca_file));
    } else if (src != SQLITE_DONE) {
        rc = mw_store_fail(s, src, err, "read settings");
    }
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_agent_settings_get(struct mw_agent *a, struct mw_agent_settings *out,
                                  struct mw_error *err)
{
    if (!a || !out)
        return mw_fail(err, MW_EINVAL, "settings: agent and out are required");
    return mw_settings_load(a->store, out, err);
}
