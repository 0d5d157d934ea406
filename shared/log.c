/* log.c - one line per event, through the sink the host installed (see midway/log.h). */
#include "midway/log.h"

#include "bounds.h"
#include "timestamp.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A formatted line lives on the caller's stack. 2 KiB holds any line we mean to write (a
 * timestamp, ids, a few quoted 128-byte fields) and stays below PIPE_BUF (4096 on Linux), so
 * one write(2) of line + "\n" reaches a pipe whole even when threads log at once. */
#define LINE_SIZE    2048
/* cid and device come from request headers; a longer one is cut to this. */
#define ID_FIELD_MAX MW_LOG_QUOTE_MAX
#define ELLIPSIS     "..."

enum mw_log_level mw_log_threshold = MW_LOG_INFO;

/* The sink and its context are read and replaced as a pair under sink_mu, so a thread never
 * calls one sink with another's context. The sink itself runs outside the lock: a slow stderr
 * must not serialize every logging thread behind it, so sinks do their own locking. */
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static mw_log_fn sink_fn; /* guarded by sink_mu */
static void *sink_ctx;    /* guarded by sink_mu */

void mw_log_set_sink(mw_log_fn fn, void *ctx)
{
    pthread_mutex_lock(&sink_mu);
    sink_fn = fn;
    sink_ctx = ctx;
    pthread_mutex_unlock(&sink_mu);
}

static void stderr_sink(void *ctx, enum mw_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    char out[LINE_SIZE + 1];
    size_t n = strnlen(line, LINE_SIZE - 1);
    memcpy(out, line, n);
    out[n++] = '\n';
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(STDERR_FILENO, out + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere left to report a failing stderr */
        done += (size_t)w;
    }
}

void mw_log_to_stderr(void)
{
    mw_log_set_sink(stderr_sink, NULL);
}

enum mw_err mw_log_level_parse(const char *name, enum mw_log_level *out)
{
    static const enum mw_log_level levels[] = {MW_LOG_ERROR, MW_LOG_WARN, MW_LOG_INFO,
                                               MW_LOG_DEBUG};
    if (!name)
        return MW_EMALFORMED;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        /* Case-insensitive so a config "level = INFO" reads like the lines it produces. */
        if (strcasecmp(name, mw_log_level_name(levels[i])) == 0) {
            *out = levels[i];
            return MW_OK;
        }
    }
    return MW_EMALFORMED;
}

const char *mw_log_level_name(enum mw_log_level level)
{
    switch (level) {
    case MW_LOG_ERROR:
        return "ERROR";
    case MW_LOG_WARN:
        return "WARN";
    case MW_LOG_INFO:
        return "INFO";
    case MW_LOG_DEBUG:
        return "DEBUG";
    }
    return "UNKNOWN";
}

/* A bounded writer into the line buffer: text that does not fit is dropped and remembered. */
struct line {
    char *buf;
    size_t len;
    size_t cap; /* bytes usable for text; the NUL is always beyond them */
    int cut;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len) {
        n = l->cap - l->len;
        l->cut = 1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* An id field (cid, device) from a header: printable ASCII without spaces, so it stays one
 * token and cannot forge the fields after it. Other bytes become '?'; cut at ID_FIELD_MAX. */
static void put_id(struct line *l, const char *id)
{
    char clean[ID_FIELD_MAX + sizeof(ELLIPSIS)];
    size_t n = 0;
    for (; n < ID_FIELD_MAX && id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        clean[n] = id[n];
        if (c <= 0x20 || c >= 0x7F)
            clean[n] = '?';
    }
    if (id[n]) {
        memcpy(clean + n, ELLIPSIS, sizeof(ELLIPSIS) - 1);
        n += sizeof(ELLIPSIS) - 1;
    }
    put(l, clean, n);
}

/* The length to keep of s[0..n) so that it does not end inside a UTF-8 sequence, so a cut
 * line stays valid UTF-8 for log shippers that reject invalid text. */
static size_t utf8_trim(const char *s, size_t n)
{
    size_t i = n;
    for (size_t back = 0; i > 0 && back < 4; back++) {
        i--;
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80) {
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
            return n - i >= need ? n : i;
        }
    }
    return n; /* not UTF-8 to begin with: nothing to protect */
}

void mw_log_write(enum mw_log_level level, const char *file, int line, const char *cid,
                  const char *device, const char *fmt, ...)
{
    if (level > __atomic_load_n(&mw_log_threshold, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&sink_mu);
    mw_log_fn fn = sink_fn;
    void *ctx = sink_ctx;
    pthread_mutex_unlock(&sink_mu);
    if (!fn)
        return;

    /* Logging must not change errno for a caller that logs, then reports errno. */
    int saved_errno = errno;
    char buf[LINE_SIZE];
    /* Room is kept for the ellipsis a cut line ends with, and for the NUL. */
    struct line l = {buf, 0, sizeof(buf) - sizeof(ELLIPSIS), 0};

    char ts[MW_TIMESTAMP_LEN];
    if (mw_timestamp_format(mw_timestamp_now_ms(), ts, NULL) != MW_OK)
        memcpy(ts, "0000-00-00T00:00:00.000Z", sizeof(ts)); /* clock outside 0001..9999 */
    put_str(&l, ts);
    put(&l, " ", 1);
    put_str(&l, mw_log_level_name(level));
    put(&l, " ", 1);
    /* __FILE__ is a full build path; the file name is what a reader looks for. */
    const char *base = file ? strrchr(file, '/') : NULL;
    put_str(&l, base ? base + 1 : file ? file : "?");
    char num[24];
    int nn = snprintf(num, sizeof(num), ":%d cid=", line);
    if (nn > 0)
        put(&l, num, (size_t)nn);
    put_id(&l, cid ? cid : "-");
    if (device) {
        put_str(&l, " device=");
        put_id(&l, device);
    }
    put(&l, " ", 1);

    size_t msg_start = l.len;
    size_t room = l.cap - l.len;
    va_list ap;
    va_start(ap, fmt);
    /* vsnprintf writes at most room bytes plus its NUL, which the reserve below cap absorbs. */
    int n = vsnprintf(buf + l.len, room + 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    } else if ((size_t)n > room) {
        n = (int)room;
        l.cut = 1;
    }
    l.len += (size_t)n;

    /* One event is one line: a newline (or any control byte) inside the message, typically
     * from a library error text, would let the rest pass for a line of its own. */
    for (size_t i = msg_start; i < l.len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c == 0x7F)
            buf[i] = ' ';
    }
    if (l.cut) {
        l.len = utf8_trim(buf, l.len);
        memcpy(buf + l.len, ELLIPSIS, sizeof(ELLIPSIS) - 1);
        l.len += sizeof(ELLIPSIS) - 1;
    } else {
        /* A trailing newline (libpq messages end with one) became blanks; drop them. */
        while (l.len > msg_start && buf[l.len - 1] == ' ')
            l.len--;
    }
    buf[l.len] = '\0';
    fn(ctx, level, buf);
    errno = saved_errno;
}

const char *mw_log_quote(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    if (!out || size == 0)
        return "";
    if (!s) {
        /* Unquoted, so it cannot pass for the text "(null)". */
        static const char null_text[] = "(null)";
        if (size < sizeof(null_text))
            out[0] = '\0';
        else
            memcpy(out, null_text, sizeof(null_text));
        return out;
    }
    /* Everything but the closing quote, "..." and the NUL must fit in front of them. */
    const size_t tail = 1 + sizeof(ELLIPSIS);
    size_t o = 0;
    size_t i = 0;
    int cut = 0;
    if (size < tail + 1) {
        out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (; s[i]; i++) {
        if (i == MW_LOG_QUOTE_MAX) {
            cut = 1;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        char esc[4];
        size_t n;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c >= 0x7F) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 0x0F];
            n = 4;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (n > size - tail - o) {
            cut = 1;
            break;
        }
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o++] = '"';
    /* The ellipsis goes after the closing quote: what is quoted is exactly a prefix of s. */
    if (cut) {
        memcpy(out + o, ELLIPSIS, sizeof(ELLIPSIS) - 1);
        o += sizeof(ELLIPSIS) - 1;
    }
    out[o] = '\0';
    return out;
}
