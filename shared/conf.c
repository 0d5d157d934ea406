/* conf.c - table-driven settings from files and flags (see conf.h). */
#include "conf.h"

#include "buf.h"
#include "bounds.h"
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>
#include <unistd.h>

/* A value parsed but not yet stored: a load fills one per table entry, and the target struct
 * is written only once every line has passed, so a bad file changes nothing. */
struct pending {
    size_t line; /* where it was set (1 for flags and defaults); 0 = not set in this load */
    int64_t num;
    bool flag;
    char *str; /* owned until committed */
};

/* Where a value came from, for messages: "FILE:LINE: " for a file, else a fixed prefix ("" for
 * a flag, "default: " for a table default). */
struct where {
    const char *file; /* NULL when not from a file */
    size_t line;
    const char *prefix;
};

static enum mw_err fail_at(struct mw_error *err, enum mw_err code, const struct where *w,
                           const char *fmt, ...) MW_PRINTF(4, 5);

static enum mw_err fail_at(struct mw_error *err, enum mw_err code, const struct where *w,
                           const char *fmt, ...)
{
    char msg[MW_ERROR_MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap); /* a cut message is still the right error */
    va_end(ap);
    if (w->file)
        return mw_fail(err, code, "%s:%zu: %s", w->file, w->line, msg);
    return mw_fail(err, code, "%s%s", w->prefix, msg);
}

static int is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Index of key in table, or n. */
static size_t find_index(const struct mw_conf_entry *table, size_t n, const char *key,
                         size_t key_len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(table[i].key) == key_len && memcmp(table[i].key, key, key_len) == 0)
            return i;
    }
    return n;
}

const struct mw_conf_entry *mw_conf_find(const struct mw_conf_entry *table, size_t n,
                                         const char *key)
{
    if (!key)
        return NULL;
    size_t i = find_index(table, n, key, strlen(key));
    return i < n ? &table[i] : NULL;
}

/* Decimal digits only (at least one) into *out; 0 on anything else or overflow. */
static int parse_digits(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

struct unit {
    const char *name;
    int64_t mult;
};

static const struct unit SIZE_UNITS[] = {
    {"", 1},
    {"B", 1},
    {"KiB", 1024},
    {"MiB", 1024LL * 1024},
    {"GiB", 1024LL * 1024 * 1024},
    {"TiB", 1024LL * 1024 * 1024 * 1024},
};

/* A unit is required: "30" could mean seconds or milliseconds, and guessing wrong by 1000x
 * is the kind of error a timeout setting should not allow. */
static const struct unit DURATION_UNITS[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60LL * 1000}, {"h", 3600LL * 1000}, {"d", 86400LL * 1000},
};

/* digits followed directly by one of units. */
static int parse_with_unit(const char *s, size_t len, const struct unit *units, size_t n_units,
                           int64_t *out)
{
    size_t d = 0;
    while (d < len && s[d] >= '0' && s[d] <= '9')
        d++;
    int64_t v;
    if (!parse_digits(s, d, &v))
        return 0;
    for (size_t i = 0; i < n_units; i++) {
        if (strlen(units[i].name) == len - d && memcmp(units[i].name, s + d, len - d) == 0) {
            if (v > INT64_MAX / units[i].mult)
                return 0;
            *out = v * units[i].mult;
            return 1;
        }
    }
    return 0;
}

static int eq_nocase(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static int parse_bool(const char *s, size_t len, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (eq_nocase(s, len, yes[i])) {
            *out = true;
            return 1;
        }
        if (eq_nocase(s, len, no[i])) {
            *out = false;
            return 1;
        }
    }
    return 0;
}

static const char *unit_word(enum mw_conf_type type)
{
    switch (type) {
    case MW_CONF_SIZE:
        return " bytes";
    case MW_CONF_DURATION:
        return " ms";
    case MW_CONF_STRING:
        return " bytes long";
    default:
        return "";
    }
}

/* Validates value v (len bytes, already unquoted) for e and stores it in *p. */
static enum mw_err parse_value(const struct mw_conf_entry *e, const char *v, size_t len,
                               struct pending *p, const struct where *w, struct mw_error *err)
{
    int64_t num = 0;
    bool flag = false;
    int ok = 1;

    switch (e->type) {
    case MW_CONF_STRING:
        num = (int64_t)len;
        break;
    case MW_CONF_INT:
        if (len > 0 && v[0] == '-') {
            ok = parse_digits(v + 1, len - 1, &num);
            num = -num; /* cannot overflow: num <= INT64_MAX; INT64_MIN is not needed */
        } else {
            ok = parse_digits(v, len, &num);
        }
        if (!ok)
            return fail_at(err, MW_EMALFORMED, w, "expected an integer for '%s'", e->key);
        break;
    case MW_CONF_BOOL:
        if (!parse_bool(v, len, &flag))
            return fail_at(err, MW_EMALFORMED, w,
                           "expected true/false, yes/no, on/off or 1/0 for '%s'", e->key);
        break;
    case MW_CONF_SIZE:
        if (!parse_with_unit(v, len, SIZE_UNITS, sizeof(SIZE_UNITS) / sizeof(SIZE_UNITS[0]), &num))
            return fail_at(err, MW_EMALFORMED, w,
                           "expected a size like 512, 64KiB, 8MiB or 2GiB for '%s'", e->key);
        break;
    case MW_CONF_DURATION:
        if (!parse_with_unit(v, len, DURATION_UNITS,
                             sizeof(DURATION_UNITS) / sizeof(DURATION_UNITS[0]), &num))
            return fail_at(err, MW_EMALFORMED, w,
                           "expected a duration like 250ms, 30s, 5m, 2h or 7d for '%s'", e->key);
        break;
    default:
        return mw_fail(err, MW_EINVAL, "conf: entry '%s' has an unknown type", e->key);
    }
    if (e->type != MW_CONF_BOOL && (e->min != 0 || e->max != 0) && (num < e->min || num > e->max))
        return fail_at(err, MW_EMALFORMED, w, "'%s' must be between %lld and %lld%s", e->key,
                       (long long)e->min, (long long)e->max, unit_word(e->type));

    if (e->type == MW_CONF_STRING) {
        char *s = mw_strndup(v, len);
        if (!s)
            return mw_fail(err, MW_ENOMEM, "conf: out of memory for '%s'", e->key);
        mw_free(p->str);
        p->str = s;
    }
    p->num = num;
    p->flag = flag;
    return MW_OK;
}

static struct pending *pending_new(size_t n)
{
    return mw_calloc(n, sizeof(struct pending));
}

static void pending_free(struct pending *p, size_t n)
{
    if (!p)
        return;
    for (size_t i = 0; i < n; i++)
        mw_free(p[i].str);
    mw_free(p);
}

/* Writes every pending value into target. Cannot fail, which is what makes loads atomic. */
static void commit(const struct mw_conf_entry *table, size_t n, void *target, struct pending *p)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].line == 0)
            continue;
        char *field = (char *)target + table[i].offset;
        switch (table[i].type) {
        case MW_CONF_STRING: {
            char *old;
            memcpy(&old, field, sizeof(old));
            mw_free(old);
            memcpy(field, &p[i].str, sizeof(p[i].str));
            p[i].str = NULL;
            break;
        }
        case MW_CONF_BOOL:
            memcpy(field, &p[i].flag, sizeof(p[i].flag));
            break;
        default:
            memcpy(field, &p[i].num, sizeof(p[i].num));
            break;
        }
    }
}

/* Rejects control bytes: in a config file they are an editor accident or an attack on whoever
 * reads the value back in a log or a terminal. Tab is whitespace. */
static enum mw_err check_bytes(const char *s, size_t len, const struct where *w,
                               struct mw_error *err)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return fail_at(err, MW_EMALFORMED, w, "control byte 0x%02x", c);
    }
    return MW_OK;
}

/* Parses one line (without its line end) into pend. scratch holds MW_CONF_LINE_MAX bytes. */
static enum mw_err parse_line(const struct mw_conf_entry *table, size_t n, struct pending *pend,
                              const char *s, size_t len, char *scratch, const struct where *w,
                              struct mw_error *err)
{
    enum mw_err rc = check_bytes(s, len, w, err);
    if (rc != MW_OK)
        return rc;
    size_t i = 0;
    while (i < len && is_blank(s[i]))
        i++;
    if (i == len || s[i] == '#')
        return MW_OK;

    size_t key_start = i;
    while (i < len && is_key_char(s[i]))
        i++;
    size_t key_len = i - key_start;
    if (i < len && !is_blank(s[i]) && s[i] != '=')
        return fail_at(err, MW_EMALFORMED, w, "invalid character in key (keys are [a-z0-9_.-])");
    if (key_len == 0)
        return fail_at(err, MW_EMALFORMED, w, "expected a key");
    if (key_len > MW_CONF_KEY_MAX)
        return fail_at(err, MW_EMALFORMED, w, "key longer than %u bytes", MW_CONF_KEY_MAX);
    /* The key is now known to be short and of safe characters, so messages can quote it. */
    char key[MW_CONF_KEY_MAX + 1];
    memcpy(key, s + key_start, key_len);
    key[key_len] = '\0';

    while (i < len && is_blank(s[i]))
        i++;
    if (i == len || s[i] != '=')
        return fail_at(err, MW_EMALFORMED, w, "expected '=' after '%s'", key);
    i++;
    size_t idx = find_index(table, n, key, key_len);
    if (idx == n)
        return fail_at(err, MW_EMALFORMED, w, "unknown key '%s'", key);
    if (pend[idx].line != 0)
        return fail_at(err, MW_EMALFORMED, w, "'%s' already set on line %zu", key, pend[idx].line);
    while (i < len && is_blank(s[i]))
        i++;

    const char *value;
    size_t value_len = 0;
    if (i < len && s[i] == '"') {
        i++;
        int closed = 0;
        while (i < len) {
            char c = s[i++];
            if (c == '"') {
                closed = 1;
                break;
            }
            if (c == '\\') {
                if (i == len || (s[i] != '"' && s[i] != '\\'))
                    return fail_at(err, MW_EMALFORMED, w,
                                   "unknown escape in the value of '%s' (only \\\" and \\\\)", key);
                c = s[i++];
            }
            scratch[value_len++] = c; /* cannot overrun: the value is shorter than the line */
        }
        if (!closed)
            return fail_at(err, MW_EMALFORMED, w, "missing closing quote in the value of '%s'",
                           key);
        while (i < len && is_blank(s[i]))
            i++;
        if (i < len && s[i] != '#')
            return fail_at(err, MW_EMALFORMED, w, "unexpected text after the closing quote of '%s'",
                           key);
        value = scratch;
    } else {
        size_t end = i;
        while (end < len && !(s[end] == '#' && is_blank(s[end - 1])))
            end++;
        while (end > i && is_blank(s[end - 1]))
            end--;
        value = s + i;
        value_len = end - i;
    }
    rc = parse_value(&table[idx], value, value_len, &pend[idx], w, err);
    if (rc != MW_OK)
        return rc;
    pend[idx].line = w->line;
    return MW_OK;
}

static enum mw_err load_text(const struct mw_conf_entry *table, size_t n, void *target,
                             const char *name, const char *text, size_t len, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    struct where w = {name ? name : "<string>", 0, ""};
    char *scratch = NULL;
    struct pending *pend = NULL;

    if (len > MW_CONF_FILE_MAX) {
        rc = mw_fail(err, MW_ETOOBIG, "%s: larger than %u bytes", w.file, MW_CONF_FILE_MAX);
        goto fail;
    }
    pend = pending_new(n);
    scratch = mw_malloc(MW_CONF_LINE_MAX);
    if (!pend || !scratch) {
        rc = mw_fail(err, MW_ENOMEM, "%s: out of memory", w.file);
        goto fail;
    }
    size_t pos = 0;
    /* Editors on Windows start UTF-8 files with a byte order mark. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    for (size_t lineno = 1; pos < len; lineno++) {
        w.line = lineno;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t line_len = end - pos;
        if (line_len > 0 && text[end - 1] == '\r')
            line_len--;
        if (line_len > MW_CONF_LINE_MAX) {
            rc = fail_at(err, MW_ETOOBIG, &w, "line longer than %u bytes", MW_CONF_LINE_MAX);
            goto fail;
        }
        rc = parse_line(table, n, pend, text + pos, line_len, scratch, &w, err);
        if (rc != MW_OK)
            goto fail;
        pos = end + 1;
    }
    commit(table, n, target, pend);
fail:
    mw_free(scratch);
    pending_free(pend, n);
    return rc;
}

enum mw_err mw_conf_load_string(const struct mw_conf_entry *table, size_t n, void *target,
                                const char *name, const char *text, size_t len,
                                struct mw_error *err)
{
    if (!text && len > 0)
        return mw_fail(err, MW_EINVAL, "conf: no text");
    return load_text(table, n, target, name, text ? text : "", len, err);
}

enum mw_err mw_conf_load_file(const struct mw_conf_entry *table, size_t n, void *target,
                              const char *path, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    struct mw_buf b;
    int fd = -1;

    mw_buf_init(&b, MW_CONF_FILE_MAX);
    /* Any readable file will do (a pipe such as /dev/stdin too): the buffer's ceiling bounds
     * what is read, whatever the file claims its size is. */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            rc = mw_fail(err, MW_ENOTFOUND, "%s: no such file", path);
        else
            rc = mw_fail(err, MW_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* A config file names the database, the TLS key and where data goes: one that its
     * group or everyone may change hands all of that to them. Pipes and other non-regular
     * files (/dev/stdin) are the caller's own. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mw_fail(err, MW_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISREG(st.st_mode) && (st.st_mode & (S_IWGRP | S_IWOTH))) {
        rc = mw_fail(err, MW_EAUTH,
                     "%s: refusing a config file that %s may change (mode %04o): run chmod go-w %s",
                     path, (st.st_mode & S_IWOTH) ? "everyone" : "its group",
                     (unsigned)(st.st_mode & 07777), path);
        goto fail;
    }
    for (;;) {
        char chunk[4096];
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mw_fail(err, MW_EIO, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        rc = mw_buf_append(&b, chunk, (size_t)r);
        if (rc == MW_ETOOBIG) {
            rc = mw_fail(err, rc, "%s: larger than %u bytes", path, MW_CONF_FILE_MAX);
            goto fail;
        }
        if (rc != MW_OK) {
            rc = mw_fail(err, rc, "%s: out of memory", path);
            goto fail;
        }
    }
    rc = load_text(table, n, target, path, (const char *)b.data, b.len, err);
fail:
    if (fd >= 0)
        close(fd);
    mw_buf_free(&b);
    return rc;
}

enum mw_err mw_conf_set(const struct mw_conf_entry *table, size_t n, void *target, const char *key,
                        const char *value, struct mw_error *err)
{
    struct where w = {NULL, 0, ""};
    if (!key || !value)
        return mw_fail(err, MW_EINVAL, "conf: no key or value");
    size_t key_len = strnlen(key, MW_CONF_KEY_MAX + 1);
    size_t idx = find_index(table, n, key, key_len);
    if (idx == n || key[key_len] != '\0') {
        /* Echo the key only when it is short and plain: it comes from the command line. */
        for (size_t i = 0; i < key_len; i++) {
            if (!is_key_char(key[i]))
                return mw_fail(err, MW_EMALFORMED, "unknown key");
        }
        if (key[key_len] != '\0')
            return mw_fail(err, MW_EMALFORMED, "unknown key (longer than %u bytes)",
                           MW_CONF_KEY_MAX);
        return mw_fail(err, MW_EMALFORMED, "unknown key '%s'", key);
    }
    size_t len = strnlen(value, MW_CONF_LINE_MAX + 1);
    if (len > MW_CONF_LINE_MAX)
        return mw_fail(err, MW_ETOOBIG, "value of '%s' longer than %u bytes", table[idx].key,
                       MW_CONF_LINE_MAX);
    enum mw_err rc = check_bytes(value, len, &w, err);
    if (rc != MW_OK)
        return mw_fail(err, rc, "value of '%s'", table[idx].key);

    struct pending p = {0};
    rc = parse_value(&table[idx], value, len, &p, &w, err);
    if (rc != MW_OK)
        return rc;
    p.line = 1;
    /* commit() walks a whole table; give it a one-entry view of this key. */
    commit(&table[idx], 1, target, &p);
    return MW_OK;
}

enum mw_err mw_conf_init(const struct mw_conf_entry *table, size_t n, void *target,
                         struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    struct where w = {NULL, 0, "default: "};
    struct pending *pend = pending_new(n);
    if (!pend)
        return mw_fail(err, MW_ENOMEM, "conf: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!table[i].def)
            continue;
        rc = parse_value(&table[i], table[i].def, strlen(table[i].def), &pend[i], &w, err);
        if (rc != MW_OK)
            goto fail;
        pend[i].line = 1;
    }
    commit(table, n, target, pend);
fail:
    pending_free(pend, n);
    return rc;
}

void mw_conf_free(const struct mw_conf_entry *table, size_t n, void *target)
{
    if (!target)
        return;
    for (size_t i = 0; i < n; i++) {
        if (table[i].type != MW_CONF_STRING)
            continue;
        char *field = (char *)target + table[i].offset;
        char *old;
        memcpy(&old, field, sizeof(old));
        mw_free(old);
        old = NULL;
        memcpy(field, &old, sizeof(old));
    }
}
