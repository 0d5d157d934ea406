/* client.c - HTTPS requests over one reused libcurl handle (see client.h). */
#include "client.h"

#include "mem.h"
#include "midway/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct mw_client {
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
    /* The request mw_client_start started, until mw_client_finish. */
    bool pending;
    bool threaded; /* it runs on `thread`; otherwise it has already run */
    pthread_t thread;
    struct mw_client_req req;
    struct mw_client_resp *resp;
    enum mw_err rc;
    struct mw_error err;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

/* curl_global_init is not thread-safe in every libcurl build; once per process, and never
 * cleaned up, because another part of the app may still use libcurl. */
static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

enum mw_err mw_client_new(struct mw_client **out, struct mw_error *err)
{
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return mw_fail(err, MW_EIO, "libcurl: %s", curl_easy_strerror(global_rc));
    struct mw_client *c = mw_calloc(1, sizeof(*c));
    if (!c)
        return mw_fail(err, MW_ENOMEM, "https client");
    c->curl = curl_easy_init();
    if (!c->curl) {
        mw_free(c);
        return mw_fail(err, MW_EIO, "libcurl: cannot make a handle");
    }
    *out = c;
    return MW_OK;
}

void mw_client_free(struct mw_client *c)
{
    if (!c)
        return;
    if (c->pending) {
        struct mw_error e = {0};
        if (mw_client_finish(c, &e) != MW_OK) {
            /* the request's outcome has no one left to tell */
        }
    }
    curl_easy_cleanup(c->curl);
    mw_free(c);
}

struct xfer {
    struct mw_client_resp *resp;
    int too_big;
    const struct mw_client_req *req;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    if (mw_buf_append(&x->resp->body, p, len) != MW_OK) {
        x->too_big = 1;
        return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
    }
    return len;
}

static int name_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char a = line[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != name[i])
            return 0;
    }
    return 1;
}

/* The value of a header line after "Name:", without surrounding blanks and the CRLF. */
static void header_value(const char *line, size_t len, size_t name_len, const char **v,
                         size_t *vlen)
{
    size_t i = name_len + 1;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t e = len;
    while (e > i && (line[e - 1] == '\r' || line[e - 1] == '\n' || line[e - 1] == ' ' ||
                     line[e - 1] == '\t'))
        e--;
    *v = line + i;
    *vlen = e - i;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    const char *v = NULL;
    size_t vlen = 0;
    /* A new status line starts a new answer (after a 100 Continue): forget the old headers. */
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        x->resp->retry_after_ms = 0;
        x->resp->correlation_id[0] = '\0';
        return len;
    }
    if (name_is(line, len, "retry-after")) {
        header_value(line, len, strlen("retry-after"), &v, &vlen);
        /* Only the delta-seconds form; an HTTP-date (rare, and clock-dependent) is ignored and
         * the caller's own backoff applies. */
        int64_t secs = 0;
        size_t i = 0;
        for (; i < vlen && i < 10 && v[i] >= '0' && v[i] <= '9'; i++)
            secs = secs * 10 + (v[i] - '0');
        if (i == vlen && vlen > 0) {
            int64_t ms = secs * 1000;
            x->resp->retry_after_ms = ms > MW_CLIENT_RETRY_AFTER_MAX_MS
                                          ? MW_CLIENT_RETRY_AFTER_MAX_MS
                                          : (ms == 0 ? 1 : ms);
        }
    } else if (name_is(line, len, "x-correlation-id")) {
        header_value(line, len, strlen("x-correlation-id"), &v, &vlen);
        if (vlen < sizeof(x->resp->correlation_id)) {
            size_t k = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] > ' ' && v[i] < 0x7f)
                    x->resp->correlation_id[k++] = v[i];
            }
            x->resp->correlation_id[k] = '\0';
        }
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct xfer *x = ud;
    return x->req->stop && x->req->stop(x->req->stop_ctx) ? 1 : 0;
}

/* libcurl's informational text at debug level. Only CURLINFO_TEXT: header and data lines
 * carry the token and the operators' ops. Control bytes are dropped and lines cut, so the
 * server's certificate fields cannot forge a log line. */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
    (void)h;
    const struct mw_client_req *req = ud;
    if (type != CURLINFO_TEXT)
        return 0;
    char line[200];
    size_t o = 0;
    for (size_t i = 0; i < size && o + 1 < sizeof(line); i++) {
        unsigned char ch = (unsigned char)data[i];
        if (ch >= 0x20 && ch != 0x7f)
            line[o++] = (char)ch;
    }
    line[o] = '\0';
    if (o > 0)
        MW_LOG(MW_LOG_DEBUG, req->correlation_id, "libcurl: %s", line);
    return 0;
}

static int printable(const char *s)
{
    for (; *s; s++) {
        if (*s <= ' ' || *s >= 0x7f)
            return 0;
    }
    return 1;
}

/* Wipes a buffer that held the token; volatile so the stores are not dropped as dead. */
static void wipe(char *p, size_t n)
{
    volatile char *v = p;
    while (n--)
        *v++ = 0;
}

static enum mw_err add_header(struct curl_slist **list, const char *h, struct mw_error *err)
{
    struct curl_slist *next = curl_slist_append(*list, h);
    if (!next)
        return mw_fail(err, MW_ENOMEM, "https request headers");
    *list = next;
    return MW_OK;
}

#define SETOPT(opt, val)                                            \
    do {                                                            \
        if (curl_easy_setopt(c->curl, (opt), (val)) != CURLE_OK) {  \
            rc = mw_fail(err, MW_EIO, "libcurl: cannot set " #opt); \
            goto fail;                                              \
        }                                                           \
    } while (0)

static enum mw_err perform(struct mw_client *c, const struct mw_client_req *req,
                           struct mw_client_resp *resp, struct mw_error *err);

enum mw_err mw_client_request(struct mw_client *c, const struct mw_client_req *req,
                              struct mw_client_resp *resp, struct mw_error *err)
{
    if (c && c->pending)
        return mw_fail(err, MW_EINVAL, "https request: another request is still running");
    return perform(c, req, resp, err);
}

static enum mw_err perform(struct mw_client *c, const struct mw_client_req *req,
                           struct mw_client_resp *resp, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    struct curl_slist *headers = NULL;
    char auth[MW_CLIENT_TOKEN_MAX + 32];
    char line[128];
    struct xfer x = {resp, 0, req};

    auth[0] = '\0';
    if (!c || !req || !resp || !req->url || !req->ca_file || !req->token || !req->correlation_id)
        return mw_fail(err, MW_EINVAL, "https request: missing argument");
    if (!req->token[0] || strlen(req->token) > MW_CLIENT_TOKEN_MAX || !printable(req->token))
        return mw_fail(err, MW_EINVAL, "https request: the token is not printable ASCII");
    if (!printable(req->correlation_id) || strlen(req->correlation_id) > 64)
        return mw_fail(err, MW_EINVAL, "https request: bad correlation id");

    resp->status = 0;
    resp->retry_after_ms = 0;
    resp->correlation_id[0] = '\0';
    resp->not_sent = 0;
    mw_buf_reset(&resp->body);
    resp->body.limit = req->answer_limit;

    /* Options are set afresh each time: curl_easy_reset would also forget the connection's
     * settings, but never the connection itself, which stays in the handle's pool. */
    curl_easy_reset(c->curl);
    c->errbuf[0] = '\0';
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "https");
    SETOPT(CURLOPT_CAINFO, req->ca_file);
    /* Only that file: libcurl also trusts a built-in CA directory unless told otherwise, and
     * any certificate authority in it could then vouch for a fake server. */
    SETOPT(CURLOPT_CAPATH, (char *)NULL);
    /* "" = no proxy, and no looking at https_proxy / ALL_PROXY: a variable exported for
     * other programs (or planted in a service's environment) must not reroute the token. */
    SETOPT(CURLOPT_PROXY, req->proxy ? req->proxy : "");
    if (MW_LOG_DEBUG <= mw_log_threshold) {
        SETOPT(CURLOPT_DEBUGFUNCTION, on_debug);
        SETOPT(CURLOPT_DEBUGDATA, (void *)req);
        SETOPT(CURLOPT_VERBOSE, 1L);
    }
    /* Verification is on unconditionally: a device that trusts any certificate hands its
     * token and its operators' work to whoever answers. */
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* No signals from libcurl (SIGALRM for DNS timeouts), so the app's handlers and threads
     * are left alone. */
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)req->request_timeout_ms);
    SETOPT(CURLOPT_USERAGENT, "midway-agent/" MW_AGENT_VERSION);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, &x);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, &x);

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", req->token);
    rc = add_header(&headers, auth, err);
    wipe(auth, sizeof(auth));
    if (rc != MW_OK)
        goto fail;
    snprintf(line, sizeof(line), "X-Correlation-ID: %s", req->correlation_id);
    rc = add_header(&headers, line, err);
    if (rc == MW_OK)
        rc = add_header(&headers, "Accept: application/json", err);
    if (rc != MW_OK)
        goto fail;
    if (req->body) {
        rc = add_header(&headers, "Content-Type: application/json", err);
        /* No "Expect: 100-continue" round trip: the body is at most a few hundred KiB. */
        if (rc == MW_OK)
            rc = add_header(&headers, "Expect:", err);
        if (rc == MW_OK && req->gzip)
            rc = add_header(&headers, "Content-Encoding: gzip", err);
        if (rc != MW_OK)
            goto fail;
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_POSTFIELDS, req->body);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else {
        SETOPT(CURLOPT_HTTPGET, 1L);
    }
    SETOPT(CURLOPT_HTTPHEADER, headers);

    CURLcode cc = curl_easy_perform(c->curl);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        resp->status = 0;
        if (x.too_big)
            rc = mw_fail(err, MW_ETOOBIG, "answer from %s is larger than %zu bytes", req->url,
                         req->answer_limit);
        else if (cc == CURLE_ABORTED_BY_CALLBACK)
            rc = mw_fail(err, MW_ENET, "request to %s stopped", req->url);
        else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                 cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION ||
                 cc == CURLE_SSL_CACERT_BADFILE) {
            /* Failed before a byte of the request went out: the server saw nothing. */
            resp->not_sent = 1;
            rc = mw_fail(err, MW_ENET, "%s: %s%s%s", req->url, curl_easy_strerror(cc),
                         c->errbuf[0] ? ": " : "", c->errbuf);
        } else {
            rc = mw_fail(err, MW_ENET, "%s: %s%s%s", req->url, curl_easy_strerror(cc),
                         c->errbuf[0] ? ": " : "", c->errbuf);
        }
        goto fail;
    }
    resp->status = status;
fail:
    /* The header list held the token: the handle must not keep pointing at freed memory. */
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(headers);
    return rc;
}

/* ---- a request on a thread of its own ----------------------------------------------------- */

static void *run_started(void *arg)
{
    struct mw_client *c = arg;
    c->rc = perform(c, &c->req, c->resp, &c->err);
    return NULL;
}

enum mw_err mw_client_start(struct mw_client *c, const struct mw_client_req *req,
                            struct mw_client_resp *resp, struct mw_error *err)
{
    if (!c || !req || !resp)
        return mw_fail(err, MW_EINVAL, "https request: missing argument");
    if (c->pending)
        return mw_fail(err, MW_EINVAL, "https request: another request is still running");
    c->req = *req;
    c->resp = resp;
    c->rc = MW_OK;
    memset(&c->err, 0, sizeof(c->err));
    c->pending = true;
    /* The thread starts with every signal blocked, so a SIGTERM for the app reaches the app's
     * own thread, where its handler and its sleeps are. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    c->threaded = pthread_create(&c->thread, NULL, run_started, c) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!c->threaded)
        c->rc = perform(c, &c->req, c->resp, &c->err); /* no thread to spare: here and now */
    return MW_OK;
}

enum mw_err mw_client_finish(struct mw_client *c, struct mw_error *err)
{
    if (!c || !c->pending)
        return mw_fail(err, MW_EINVAL, "https request: none was started");
    if (c->threaded)
        pthread_join(c->thread, NULL);
    c->pending = false;
    c->threaded = false;
    if (c->rc != MW_OK && err)
        *err = c->err;
    return c->rc;
}
