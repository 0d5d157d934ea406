/* chaosproxy.c - a TLS-terminating, fault-injecting HTTP/1.1 proxy (chaosproxy.h). The client
 * side uses the server's own TLS module (server/tls.h), one struct mw_tls_server per
 * connection because its random generator must not be shared between threads; the server side
 * is libcurl, one easy handle per client connection so keep-alive carries through. */
#define _GNU_SOURCE /* accept4 */
#include "chaosproxy.h"

#include "tls.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX            (64u * 1024u)
/* Far above the server's own body limit, so the server, not the proxy, answers 413. */
#define BODY_MAX            (64u * 1024u * 1024u)
#define HANDSHAKE_MS        10000
/* An agent keeps its connection between syncs; the proxy waits as long as the test runs. */
#define IDLE_MS             (30 * 60 * 1000)
#define UPSTREAM_TIMEOUT_MS 180000L
#define MIDWAY_MIN_MS       1
#define MIDWAY_SPAN_MS      250
#define PREFIX_MAX          128

struct rule {
    int active;
    char prefix[PREFIX_MAX];
    enum chaos_fault fault;
    int skip;
    int count;
    int random;
    int permille;
    enum chaos_fault pick[CHAOS_FAULT_COUNT];
    size_t npick;
    unsigned seed;
};

struct chaosproxy {
    char *cert;
    char *key;
    char *ca;
    int target_port;
    int port;
    int listen_fd;
    int stop_pipe[2];
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rule rule;                /* guarded by mu */
    int offline;                     /* guarded by mu */
    int capturing;                   /* guarded by mu */
    char capture_prefix[PREFIX_MAX]; /* guarded by mu */
    struct chaos_request *kept;      /* guarded by mu */
    size_t n_kept;                   /* guarded by mu */
    size_t cap_kept;                 /* guarded by mu */
    int held;                        /* guarded by mu */
    unsigned release_gen;            /* guarded by mu */
    struct chaos_stats stats;        /* guarded by mu */
    int threads;                     /* guarded by mu: connection threads still running */
    int stopping;                    /* guarded by mu */
    unsigned midway_seed;            /* guarded by mu */
    int midway_min;                  /* guarded by mu */
    int midway_span;                 /* guarded by mu */
};

struct conn {
    struct chaosproxy *p;
    int fd;
    struct mw_tls_server *tls_srv;
    struct mw_tls_conn *tls;
    CURL *up;
    int graceful; /* end with a FIN after the last bytes, not a reset that could discard them */
    char *in;     /* decrypted bytes read and not consumed yet */
    size_t in_len;
    size_t in_cap;
};

/* One request as read from the client. */
struct req {
    char method[16];
    char target[1024];
    char **headers; /* forwarded lines, NULL-terminated */
    size_t n_headers;
    unsigned char *body;
    size_t len;
    int expect_continue;
    int close_after;
};

/* The server's answer. */
struct answer {
    int status;
    char *head; /* header lines to pass on, each ending in CRLF */
    size_t head_len;
    size_t head_cap;
    unsigned char *body;
    size_t len;
    size_t cap;
};

static void die(const char *what)
{
    fprintf(stderr, "chaosproxy: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc");
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

/* Appends n bytes to a growable byte array; exits when memory runs out. */
static void grow_append(void *bufp, size_t *len, size_t *cap, const void *src, size_t n)
{
    char **buf = bufp;
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            die("realloc");
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, src, n);
    *len += n;
    (*buf)[*len] = '\0';
}

const char *chaos_fault_name(enum chaos_fault f)
{
    static const char *const names[CHAOS_FAULT_COUNT] = {
        "pass",          "drop_request", "cut_answer",   "cut_midway",  "hold_answer",
        "truncate_body", "short_body",   "corrupt_body", "wrong_shape", "refuse"};
    return (int)f >= 0 && f < CHAOS_FAULT_COUNT ? names[f] : "?";
}

/* ---- client side: TLS over a non-blocking socket, waiting with poll ------------------------ */

/* 0 when fd is ready for events; -1 on stop or timeout. */
static int wait_fd(struct conn *c, short events, int timeout_ms)
{
    for (;;) {
        struct pollfd fds[2] = {{c->fd, events, 0}, {c->p->stop_pipe[0], POLLIN, 0}};
        int r = poll(fds, 2, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || fds[1].revents)
            return -1;
        return 0;
    }
}

static int tls_wait(struct conn *c, enum mw_tls_status st, int timeout_ms)
{
    return wait_fd(c, st == MW_TLS_WANT_WRITE ? POLLOUT : POLLIN, timeout_ms);
}

/* 0: bytes read; 1: the client closed; -1: failure or stop. */
static int tls_read(struct conn *c, void *buf, size_t cap, size_t *n)
{
    for (;;) {
        struct mw_error err = {0};
        enum mw_tls_status st = mw_tls_conn_read(c->tls, buf, cap, n, &err);
        if (st == MW_TLS_OK)
            return 0;
        if (st == MW_TLS_CLOSED)
            return 1;
        if (st == MW_TLS_FAILED)
            return -1;
        if (tls_wait(c, st, IDLE_MS) != 0)
            return -1;
    }
}

static int tls_write_all(struct conn *c, const void *buf, size_t len)
{
    const unsigned char *b = buf;
    while (len > 0) {
        struct mw_error err = {0};
        size_t n = 0;
        enum mw_tls_status st = mw_tls_conn_write(c->tls, b, len, &n, &err);
        if (st == MW_TLS_OK) {
            b += n;
            len -= n;
            continue;
        }
        if (st != MW_TLS_WANT_READ && st != MW_TLS_WANT_WRITE)
            return -1;
        if (tls_wait(c, st, HANDSHAKE_MS) != 0)
            return -1;
    }
    return 0;
}

/* A reset, not a FIN: what the client sees when a connection really breaks. */
static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---- reading a request ------------------------------------------------------------------- */

static void req_free(struct req *r)
{
    for (size_t i = 0; i < r->n_headers; i++)
        free(r->headers[i]);
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Reads more decrypted bytes into c->in. 0, 1 (closed) or -1. */
static int fill(struct conn *c)
{
    char buf[16384];
    size_t n = 0;
    int r = tls_read(c, buf, sizeof buf, &n);
    if (r != 0)
        return r;
    grow_append(&c->in, &c->in_len, &c->in_cap, buf, n);
    return 0;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static int header_is(const char *line, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(line, name, name_len) == 0;
}

/* Reads one request into *r. 0: a request; 1: the client closed between requests; -1: a
 * failure or a request this proxy does not handle (chunked, oversize). */
static int read_request(struct conn *c, struct req *r)
{
    memset(r, 0, sizeof *r);
    char *end = NULL;
    for (;;) {
        if (c->in_len > 0) {
            end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (end)
                break;
        }
        if (c->in_len > HEAD_MAX)
            return -1;
        int f = fill(c);
        if (f != 0)
            return c->in_len == 0 && f == 1 ? 1 : -1;
    }
    size_t head_len = (size_t)(end - c->in) + 4;
    char *head = xmalloc(head_len + 1);
    memcpy(head, c->in, head_len);
    head[head_len] = '\0';
    consume(c, head_len);

    size_t content_length = 0;
    int chunked = 0;
    char *line = head;
    char *eol = strstr(line, "\r\n");
    *eol = '\0';
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof r->method ||
        (size_t)(sp2 - sp1 - 1) >= sizeof r->target) {
        free(head);
        return -1;
    }
    memcpy(r->method, line, (size_t)(sp1 - line));
    memcpy(r->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    r->headers = xmalloc(sizeof(char *) * 128);
    for (line = eol + 2; *line && strncmp(line, "\r\n", 2) != 0; line = eol + 2) {
        eol = strstr(line, "\r\n");
        *eol = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (header_is(line, nl, "Content-Length")) {
            char *e = NULL;
            errno = 0;
            unsigned long long cl = strtoull(v, &e, 10);
            if (errno != 0 || e == v || cl > BODY_MAX) {
                free(head);
                return -1;
            }
            content_length = (size_t)cl;
        } else if (header_is(line, nl, "Transfer-Encoding")) {
            chunked = 1;
        } else if (header_is(line, nl, "Expect")) {
            r->expect_continue = strncasecmp(v, "100-continue", 12) == 0;
        } else if (header_is(line, nl, "Connection")) {
            r->close_after = strncasecmp(v, "close", 5) == 0;
        } else if (!header_is(line, nl, "Host") && r->n_headers < 126) {
            r->headers[r->n_headers++] = xstrdup(line);
        }
    }
    r->headers[r->n_headers] = NULL;
    free(head);
    if (chunked)
        return -1;
    if (r->expect_continue && content_length > 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (tls_write_all(c, cont, sizeof cont - 1) != 0)
            return -1;
    }
    while (c->in_len < content_length) {
        if (fill(c) != 0)
            return -1;
    }
    r->body = xmalloc(content_length + 1);
    memcpy(r->body, c->in, content_length);
    r->len = content_length;
    consume(c, content_length);
    return 0;
}

/* ---- the server side: libcurl ------------------------------------------------------------ */

static size_t on_up_header(char *ptr, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        a->head_len = 0; /* a new response: an interim 100 is forgotten */
        return len;
    }
    const char *colon = memchr(ptr, ':', len);
    if (!colon)
        return len; /* the blank line */
    size_t nl = (size_t)(colon - ptr);
    if (header_is(ptr, nl, "Content-Length") || header_is(ptr, nl, "Transfer-Encoding") ||
        header_is(ptr, nl, "Connection") || header_is(ptr, nl, "Keep-Alive"))
        return len;
    grow_append(&a->head, &a->head_len, &a->head_cap, ptr, len);
    return len;
}

static size_t on_up_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    grow_append(&a->body, &a->len, &a->cap, ptr, size * n);
    return size * n;
}

static int on_up_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    struct chaosproxy *p = arg;
    pthread_mutex_lock(&p->mu);
    int stop = p->stopping;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* Sends r to the server; fills *a (status 0 when no answer came). timeout_ms bounds the whole
 * exchange. */
static void forward(struct conn *c, const struct req *r, long timeout_ms, struct answer *a)
{
    struct chaosproxy *p = c->p;
    memset(a, 0, sizeof *a);
    if (!c->up) {
        c->up = curl_easy_init();
        if (!c->up)
            die("curl_easy_init");
    } else {
        curl_easy_reset(c->up); /* options only: the connection to the server is kept */
    }
    char url[1200];
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", p->target_port, r->target);
    struct curl_slist *hl = NULL;
    for (size_t i = 0; i < r->n_headers; i++)
        hl = curl_slist_append(hl, r->headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    CURL *h = c->up;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, p->ca);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_up_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_up_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_up_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, p);
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(r->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)r->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->len);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        long st = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        a->status = (int)st;
    } else {
        a->status = 0;
        a->len = 0;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(hl);
}

static void answer_free(struct answer *a)
{
    free(a->head);
    free(a->body);
    memset(a, 0, sizeof *a);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 410:
        return "Gone";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

/* Writes an answer: status, the server's headers, a Content-Length of `announce`, and then
 * len bytes of body. */
static int send_answer(struct conn *c, int status, const char *head, size_t head_len,
                       const void *body, size_t len, size_t announce, int close_after)
{
    char *out = NULL;
    size_t out_len = 0, out_cap = 0;
    char line[128];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, reason(status));
    grow_append(&out, &out_len, &out_cap, line, (size_t)n);
    if (head_len)
        grow_append(&out, &out_len, &out_cap, head, head_len);
    n = snprintf(line, sizeof line, "Content-Length: %zu\r\n%s\r\n", announce,
                 close_after ? "Connection: close\r\n" : "");
    grow_append(&out, &out_len, &out_cap, line, (size_t)n);
    if (len)
        grow_append(&out, &out_len, &out_cap, body, len);
    int rc = tls_write_all(c, out, out_len);
    free(out);
    return rc;
}

/* ---- rules, captures --------------------------------------------------------------------- */

static int matches(const char *prefix, const char *target)
{
    return strncmp(target, prefix, strlen(prefix)) == 0;
}

/* Under p->mu. */
static enum chaos_fault decide(struct chaosproxy *p, const char *target)
{
    struct rule *r = &p->rule;
    if (!r->active || !matches(r->prefix, target))
        return CHAOS_PASS;
    if (r->random) {
        int x = rand_r(&r->seed) % 1000;
        if (x >= r->permille || r->npick == 0)
            return CHAOS_PASS;
        return r->pick[(size_t)rand_r(&r->seed) % r->npick];
    }
    if (r->skip > 0) {
        r->skip--;
        return CHAOS_PASS;
    }
    if (r->count == 0)
        return CHAOS_PASS;
    if (r->count > 0)
        r->count--;
    return r->fault;
}

/* Under p->mu. Returns the index of the new copy, or -1 when not capturing this target. */
static long keep(struct chaosproxy *p, const struct req *r, enum chaos_fault f)
{
    if (!p->capturing || !matches(p->capture_prefix, r->target))
        return -1;
    if (p->n_kept == p->cap_kept) {
        size_t cap = p->cap_kept ? p->cap_kept * 2 : 16;
        struct chaos_request *k = realloc(p->kept, cap * sizeof *k);
        if (!k)
            die("realloc");
        p->kept = k;
        p->cap_kept = cap;
    }
    struct chaos_request *k = &p->kept[p->n_kept];
    memset(k, 0, sizeof *k);
    snprintf(k->method, sizeof k->method, "%s", r->method);
    snprintf(k->target, sizeof k->target, "%s", r->target);
    k->headers = xmalloc(sizeof(char *) * (r->n_headers + 1));
    for (size_t i = 0; i < r->n_headers; i++)
        k->headers[i] = xstrdup(r->headers[i]);
    k->headers[r->n_headers] = NULL;
    k->body = xmalloc(r->len + 1);
    memcpy(k->body, r->body, r->len);
    k->len = r->len;
    k->fault = f;
    return (long)p->n_kept++;
}

static void keep_answer(struct chaosproxy *p, long idx, const struct answer *a)
{
    if (idx < 0)
        return;
    pthread_mutex_lock(&p->mu);
    struct chaos_request *k = &p->kept[idx];
    k->status = a->status;
    if (a->status > 0) {
        k->answer = xmalloc(a->len + 1);
        memcpy(k->answer, a->body ? (const char *)a->body : "", a->len);
        k->answer[a->len] = '\0';
        k->answer_len = a->len;
    }
    pthread_mutex_unlock(&p->mu);
}

/* Keeps the client connection open and silent until chaosproxy_release or stop. */
static void hold(struct chaosproxy *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned gen = p->release_gen;
    p->held++;
    pthread_cond_broadcast(&p->cv);
    while (p->release_gen == gen && !p->stopping)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- one client connection ------------------------------------------------------------- */

/* Serves one request. Returns 0 to keep the connection for the next one, -1 to reset it. */
static int serve_one(struct conn *c, struct req *r)
{
    struct chaosproxy *p = c->p;
    pthread_mutex_lock(&p->mu);
    int offline = p->offline;
    enum chaos_fault f = offline ? CHAOS_DROP_REQUEST : decide(p, r->target);
    long idx = keep(p, r, f);
    p->stats.requests++;
    p->stats.faults[f]++;
    long midway =
        p->midway_min + (p->midway_span > 0 ? rand_r(&p->midway_seed) % p->midway_span : 0);
    pthread_mutex_unlock(&p->mu);

    if (f == CHAOS_DROP_REQUEST)
        return -1;
    if (f == CHAOS_REFUSE) {
        static const char body[] = "{\"error\":{\"code\":\"unavailable\",\"message\":\"refused "
                                   "by the test proxy\"}}";
        static const char head[] = "Content-Type: application/json\r\nRetry-After: 1\r\n";
        return send_answer(c, 503, head, sizeof head - 1, body, sizeof body - 1, sizeof body - 1,
                           r->close_after) == 0 &&
                       !r->close_after
                   ? 0
                   : -1;
    }

    struct answer a;
    forward(c, r, f == CHAOS_CUT_MIDWAY ? midway : UPSTREAM_TIMEOUT_MS, &a);
    pthread_mutex_lock(&p->mu);
    p->stats.forwarded++;
    if (a.status > 0)
        p->stats.answered++;
    pthread_mutex_unlock(&p->mu);
    keep_answer(p, idx, &a);

    int rc = -1;
    if (a.status == 0) {
        /* The server did not answer (it is down, or CUT_MIDWAY gave up): forget the upstream
         * connection, it may be half-used, and reset the client like a broken link would. */
        curl_easy_cleanup(c->up);
        c->up = NULL;
        goto done;
    }
    switch (f) {
    case CHAOS_CUT_ANSWER:
    case CHAOS_CUT_MIDWAY:
        goto done;
    case CHAOS_HOLD_ANSWER:
        hold(p);
        goto done;
    case CHAOS_TRUNCATE_BODY:
        rc = send_answer(c, a.status, a.head, a.head_len, a.body, a.len / 2, a.len / 2,
                         r->close_after);
        break;
    case CHAOS_SHORT_BODY:
        if (send_answer(c, a.status, a.head, a.head_len, a.body, a.len / 2, a.len, 0) == 0)
            c->graceful = 1;
        goto done;
    case CHAOS_CORRUPT_BODY: {
        /* "\q" is a bad escape inside a string and a stray character outside one; repeated, one
         * of the pairs stays a pair whatever byte precedes the span. */
        static const char bad[] = "\\q\\q\\q\\q";
        if (a.len >= 2 * sizeof bad)
            memcpy(a.body + a.len / 2, bad, sizeof bad - 1);
        else if (a.len > 0)
            memset(a.body, '\\', a.len);
        rc = send_answer(c, a.status, a.head, a.head_len, a.body, a.len, a.len, r->close_after);
        break;
    }
    case CHAOS_WRONG_SHAPE: {
        static const char shape[] = "{\"changes\":42,\"results\":\"none\",\"cursor\":[]}";
        rc = send_answer(c, a.status, a.head, a.head_len, shape, sizeof shape - 1, sizeof shape - 1,
                         r->close_after);
        break;
    }
    default:
        rc = send_answer(c, a.status, a.head, a.head_len, a.body, a.len, a.len, r->close_after);
        break;
    }
    if (rc == 0 && r->close_after)
        rc = -1;
done:
    answer_free(&a);
    return rc;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct chaosproxy *p = c->p;
    struct mw_error err = {0};
    if (mw_tls_server_new(p->cert, p->key, &c->tls_srv, &err) != MW_OK ||
        mw_tls_conn_new(c->tls_srv, c->fd, &c->tls, &err) != MW_OK) {
        fprintf(stderr, "chaosproxy: TLS setup: %s\n", err.msg);
        goto done;
    }
    for (;;) {
        enum mw_tls_status st = mw_tls_conn_handshake(c->tls, &err);
        if (st == MW_TLS_OK)
            break;
        if (st != MW_TLS_WANT_READ && st != MW_TLS_WANT_WRITE)
            goto done;
        if (tls_wait(c, st, HANDSHAKE_MS) != 0)
            goto done;
    }
    for (;;) {
        struct req r;
        int got = read_request(c, &r);
        if (got != 0) {
            req_free(&r);
            break;
        }
        int keep_open = serve_one(c, &r) == 0;
        req_free(&r);
        if (!keep_open)
            break;
    }
done:
    mw_tls_conn_free(c->tls);
    mw_tls_server_free(c->tls_srv);
    if (c->up)
        curl_easy_cleanup(c->up);
    if (c->graceful)
        close(c->fd);
    else
        reset_close(c->fd);
    free(c->in);
    free(c);
    pthread_mutex_lock(&p->mu);
    p->threads--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct chaosproxy *p = arg;
    for (;;) {
        struct pollfd fds[2] = {{p->listen_fd, POLLIN, 0}, {p->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (fds[1].revents)
            return NULL;
        int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&p->mu);
        int offline = p->offline;
        p->stats.connections++;
        if (!offline)
            p->threads++;
        pthread_mutex_unlock(&p->mu);
        if (offline) {
            reset_close(fd);
            continue;
        }
        /* Answers go out as several TLS records; Nagle would hold the last one back for the
         * client's delayed ACK (40 ms a request). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->p = p;
        c->fd = fd;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        if (pthread_create(&t, &at, conn_main, c) != 0)
            die("pthread_create");
        pthread_attr_destroy(&at);
    }
}

/* ---- control ----------------------------------------------------------------------------- */

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct chaosproxy *chaosproxy_start(const char *cert, const char *key, const char *ca,
                                    int target_port)
{
    static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
    pthread_once(&curl_once, curl_init_once);
    struct chaosproxy *p = calloc(1, sizeof *p);
    if (!p)
        die("calloc");
    p->cert = xstrdup(cert);
    p->key = xstrdup(key);
    p->ca = xstrdup(ca);
    p->target_port = target_port;
    p->midway_seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    p->midway_min = MIDWAY_MIN_MS;
    p->midway_span = MIDWAY_SPAN_MS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pipe(p->stop_pipe) != 0)
        die("pipe");
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listen_fd < 0)
        die("socket");
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listen_fd, 64) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&sa, &len) != 0)
        die("listen");
    p->port = ntohs(sa.sin_port);
    if (pthread_create(&p->acceptor, NULL, acceptor_main, p) != 0)
        die("pthread_create");
    return p;
}

int chaosproxy_port(const struct chaosproxy *p)
{
    return p->port;
}

void chaosproxy_rule(struct chaosproxy *p, const char *path_prefix, enum chaos_fault fault,
                     int skip, int count)
{
    pthread_mutex_lock(&p->mu);
    memset(&p->rule, 0, sizeof p->rule);
    p->rule.active = 1;
    snprintf(p->rule.prefix, sizeof p->rule.prefix, "%s", path_prefix);
    p->rule.fault = fault;
    p->rule.skip = skip;
    p->rule.count = count;
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_random(struct chaosproxy *p, const char *path_prefix, int permille,
                       const enum chaos_fault *faults, size_t n, unsigned seed)
{
    pthread_mutex_lock(&p->mu);
    memset(&p->rule, 0, sizeof p->rule);
    p->rule.active = 1;
    p->rule.random = 1;
    snprintf(p->rule.prefix, sizeof p->rule.prefix, "%s", path_prefix);
    p->rule.permille = permille;
    for (size_t i = 0; i < n && i < CHAOS_FAULT_COUNT; i++)
        p->rule.pick[p->rule.npick++] = faults[i];
    p->rule.seed = seed;
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_midway(struct chaosproxy *p, int min_ms, int span_ms)
{
    pthread_mutex_lock(&p->mu);
    p->midway_min = min_ms > 0 ? min_ms : 1;
    p->midway_span = span_ms > 0 ? span_ms : 0;
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_pass(struct chaosproxy *p)
{
    pthread_mutex_lock(&p->mu);
    memset(&p->rule, 0, sizeof p->rule);
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_offline(struct chaosproxy *p, int on)
{
    pthread_mutex_lock(&p->mu);
    p->offline = on;
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_capture(struct chaosproxy *p, const char *path_prefix)
{
    pthread_mutex_lock(&p->mu);
    p->capturing = path_prefix != NULL;
    snprintf(p->capture_prefix, sizeof p->capture_prefix, "%s", path_prefix ? path_prefix : "");
    pthread_mutex_unlock(&p->mu);
}

size_t chaosproxy_captured(struct chaosproxy *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n_kept;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int chaosproxy_copy(struct chaosproxy *p, size_t i, struct chaos_request *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    if (i >= p->n_kept) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    const struct chaos_request *k = &p->kept[i];
    *out = *k;
    size_t nh = 0;
    while (k->headers[nh])
        nh++;
    out->headers = xmalloc(sizeof(char *) * (nh + 1));
    for (size_t h = 0; h < nh; h++)
        out->headers[h] = xstrdup(k->headers[h]);
    out->headers[nh] = NULL;
    out->body = xmalloc(k->len + 1);
    memcpy(out->body, k->body, k->len);
    out->answer = NULL;
    if (k->answer) {
        out->answer = xmalloc(k->answer_len + 1);
        memcpy(out->answer, k->answer, k->answer_len + 1);
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void chaos_request_free(struct chaos_request *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        free(r->headers[i]);
    free(r->headers);
    free(r->body);
    free(r->answer);
    memset(r, 0, sizeof *r);
}

int chaosproxy_wait_held(struct chaosproxy *p, int n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (p->held < n) {
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT)
            break;
    }
    int held = p->held;
    pthread_mutex_unlock(&p->mu);
    return held;
}

void chaosproxy_release(struct chaosproxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->release_gen++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_stats(struct chaosproxy *p, struct chaos_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->stats;
    pthread_mutex_unlock(&p->mu);
}

void chaosproxy_stop(struct chaosproxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (write(p->stop_pipe[1], "x", 1) != 1)
        die("stop");
    pthread_join(p->acceptor, NULL);
    pthread_mutex_lock(&p->mu);
    while (p->threads > 0)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    close(p->listen_fd);
    close(p->stop_pipe[0]);
    close(p->stop_pipe[1]);
    for (size_t i = 0; i < p->n_kept; i++)
        chaos_request_free(&p->kept[i]);
    free(p->kept);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->cert);
    free(p->key);
    free(p->ca);
    free(p);
}
