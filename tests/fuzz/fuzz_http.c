/* fuzz_http.c - the HTTP/1.1 request parser (mw_http_parser_feed and friends), the first code
 * every byte from the network reaches, and mw_http_query_param.
 * The first input byte sets the run: how the stream is cut into reads (bits 0-3: 1..16
 * bytes), the head bound (bit 4: 16 KiB or 512 B) and the body bound (bit 5: 64 KiB or 16 B).
 * The rest is the connection's byte stream, which may hold several pipelined requests.
 * Checks: the stream parsed from one buffer and parsed in small reads gives the same requests
 * and the same error (an incremental parser must not depend on where reads end); every
 * request has the shape http.h promises (origin-form target of visible ASCII, body exactly
 * Content-Length bytes within the bound, token68 bearer, correlation id of visible ASCII
 * that a response can echo, and that formats to its lower-cased self when it is a UUID);
 * every error has a status and code the server can answer with; 100-continue is offered at
 * most once per request; the query parameters the routes read decode within bounds. The stream
 * is also parsed once with an allocation failing (fuzz_fail_point): 503, never a crash or leak. */
#include "buf.h"
#include "fuzz.h"
#include "http.h"
#include "uuid.h"

#include <string.h>

/* Requests checked per input: enough for pipelining, bounded so one input stays fast. */
#define MAX_REQUESTS 16

static bool visible(uint8_t c)
{
    return c > 0x20 && c < 0x7f;
}

static void check_query(const struct mw_http_request *req)
{
    static const char *const names[] = {"cursor", "limit", "since", ""};
    static const size_t sizes[] = {129, 16, 2, 1};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char out[129];
        struct mw_error err = {0};
        memset(out, 'x', sizeof out);
        enum mw_err rc = mw_http_query_param(req, names[i], out, sizes[i], &err);
        if (rc == MW_OK) {
            size_t n = strlen(out);
            FUZZ_CHECK(n < sizes[i]);
            for (size_t k = 0; k < n; k++)
                FUZZ_CHECK((uint8_t)out[k] >= 0x20 && (uint8_t)out[k] != 0x7f);
        } else {
            FUZZ_CHECK(rc == MW_ENOTFOUND || rc == MW_EMALFORMED || rc == MW_ETOOBIG);
            FUZZ_CHECK(out[0] == '\0');
            FUZZ_CHECK(err.code == rc);
        }
    }
}

static void check_request(const struct mw_http_request *req, size_t body_max)
{
    size_t mlen = strlen(req->method_token);
    FUZZ_CHECK(mlen >= 1 && mlen <= MW_HTTP_METHOD_MAX);
    FUZZ_CHECK(req->path[0] == '/');
    size_t plen = strlen(req->path);
    size_t qlen = strlen(req->query);
    FUZZ_CHECK(plen + (qlen ? qlen + 1 : 0) <= MW_HTTP_TARGET_MAX);
    for (size_t i = 0; i < plen; i++)
        FUZZ_CHECK(visible((uint8_t)req->path[i]) && req->path[i] != '?' && req->path[i] != '#');
    for (size_t i = 0; i < qlen; i++)
        FUZZ_CHECK(visible((uint8_t)req->query[i]) && req->query[i] != '#');
    FUZZ_CHECK(req->version_minor == 0 || req->version_minor == 1);
    FUZZ_CHECK(req->expect_continue ? req->version_minor == 1 : true);
    if (req->method == MW_HTTP_POST)
        FUZZ_CHECK(req->has_content_length);
    if (!req->has_content_length)
        FUZZ_CHECK(req->content_length == 0);
    FUZZ_CHECK(req->content_length <= body_max);
    FUZZ_CHECK(req->body.len == (size_t)req->content_length);
    if (req->body.len)
        FUZZ_CHECK(req->body.data[req->body.len] == '\0');
    FUZZ_CHECK(req->content_encoding == MW_HTTP_CODING_IDENTITY ||
               req->content_encoding == MW_HTTP_CODING_GZIP);

    size_t blen = strlen(req->bearer);
    if (req->auth == MW_HTTP_AUTH_BEARER) {
        FUZZ_CHECK(blen >= 1 && blen <= MW_HTTP_BEARER_MAX);
        /* token68: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="s. */
        size_t k = strspn(req->bearer, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789-._~+/");
        FUZZ_CHECK(k >= 1);
        FUZZ_CHECK(strspn(req->bearer + k, "=") == blen - k);
    } else {
        FUZZ_CHECK(blen == 0);
    }

    size_t clen = strlen(req->correlation_id);
    FUZZ_CHECK(clen <= MW_HTTP_CORRELATION_ID_MAX);
    for (size_t i = 0; i < clen; i++) {
        uint8_t c = (uint8_t)req->correlation_id[i];
        FUZZ_CHECK(visible(c) && c != '"' && c != '\\');
    }
    /* The server keeps a client's UUID as its canonical lower-case text. */
    struct mw_uuid u;
    if (mw_uuid_parse(req->correlation_id, clen, &u) == MW_OK) {
        char text[MW_UUID_STR_SIZE];
        mw_uuid_format(&u, text);
        for (size_t i = 0; i < clen; i++) {
            char c = req->correlation_id[i];
            FUZZ_CHECK(text[i] == ((c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c));
        }
    }
    size_t hlen = strlen(req->host);
    FUZZ_CHECK(hlen <= MW_HTTP_HOST_MAX);
    for (size_t i = 0; i < hlen; i++)
        FUZZ_CHECK(visible((uint8_t)req->host[i]));
    FUZZ_CHECK(strlen(req->user_agent) <= MW_HTTP_USER_AGENT_MAX);

    /* Whatever correlation id the parser let through, a response can carry it back. */
    struct mw_buf out;
    mw_buf_init(&out, 1u << 20);
    FUZZ_CHECK(mw_http_response_write(&out, 200, "application/json", req->correlation_id,
                                      req->keep_alive, NULL, req->body.data,
                                      req->body.len) == MW_OK);
    mw_buf_free(&out);
    check_query(req);
}

static void check_error(const struct mw_http_parser *p)
{
    static const int statuses[] = {400, 411, 413, 414, 415, 417, 431, 501, 503, 505};
    bool known = false;
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        known = known || p->status == statuses[i];
    FUZZ_CHECK(known);
    FUZZ_CHECK(p->code != NULL && p->code[0] != '\0');
    FUZZ_CHECK(p->err.code != MW_OK && p->err.msg[0] != '\0');
    /* Never the credential in an error text: it goes to the client and the log. (A token of
     * a few bytes could match ordinary words of a message by chance.) */
    if (strlen(p->req.bearer) >= 12)
        FUZZ_CHECK(strstr(p->err.msg, p->req.bearer) == NULL);
    struct mw_buf out;
    mw_buf_init(&out, 1u << 16);
    FUZZ_CHECK(mw_http_error_write(&out, p->status, p->code, p->err.msg, NULL, false, NULL) ==
               MW_OK);
    mw_buf_free(&out);
}

/* Appends what a request or an error was to sum, so two runs can be compared. */
static void summarize_request(struct mw_buf *sum, const struct mw_http_request *r)
{
    FUZZ_CHECK(mw_buf_printf(
                   sum, "REQ %s|%d|%s|%s|%d|%d|%d|%d|%llu|%d|%d|%s|%s|%s|%s|%zu:", r->method_token,
                   (int)r->method, r->path, r->query, r->version_minor, r->keep_alive,
                   r->expect_continue, r->has_content_length, (unsigned long long)r->content_length,
                   (int)r->content_encoding, (int)r->auth, r->bearer, r->correlation_id, r->host,
                   r->user_agent, r->body.len) == MW_OK);
    if (r->body.len)
        FUZZ_CHECK(mw_buf_append(sum, r->body.data, r->body.len) == MW_OK);
    FUZZ_CHECK(mw_buf_append(sum, "\n", 1) == MW_OK);
}

/* Parses data[0..len) feeding at most step bytes per call (0: all at once). */
static void run(const uint8_t *data, size_t len, size_t step, size_t header_max, size_t body_max,
                struct mw_buf *sum)
{
    struct mw_http_parser p;
    size_t off = 0;
    size_t requests = 0;
    int continues = 0;
    mw_http_parser_init(&p, header_max, body_max);
    for (;;) {
        size_t give = len - off;
        if (step && give > step)
            give = step;
        size_t used = 0;
        enum mw_http_result r = mw_http_parser_feed(&p, data + off, give, &used);
        FUZZ_CHECK(used <= give);
        off += used;
        if (r == MW_HTTP_NEED_MORE) {
            FUZZ_CHECK(used == give);
            if (mw_http_parser_take_continue(&p)) {
                FUZZ_CHECK(p.req.expect_continue);
                continues++;
                FUZZ_CHECK(continues == 1);
                FUZZ_CHECK(!mw_http_parser_take_continue(&p));
            }
            if (off == len) {
                FUZZ_CHECK(mw_buf_append_str(sum, "MORE\n") == MW_OK);
                break;
            }
            continue;
        }
        if (r == MW_HTTP_ERROR) {
            check_error(&p);
            FUZZ_CHECK(mw_buf_printf(sum, "ERR %d %s\n", p.status, p.code) == MW_OK);
            /* Feeding again takes nothing and says ERROR. */
            FUZZ_CHECK(mw_http_parser_feed(&p, data, len, &used) == MW_HTTP_ERROR && used == 0);
            break;
        }
        FUZZ_CHECK(r == MW_HTTP_DONE);
        FUZZ_CHECK(mw_http_parser_feed(&p, data, len, &used) == MW_HTTP_DONE && used == 0);
        struct mw_http_request req;
        mw_http_parser_take_request(&p, &req);
        check_request(&req, body_max);
        summarize_request(sum, &req);
        mw_http_request_cleanup(&req);
        continues = 0;
        if (++requests == MAX_REQUESTS || off == len)
            break;
    }
    mw_http_parser_cleanup(&p);
}

/* The whole stream once more with one allocation failing (the line buffer or a body): the
 * parser must answer 503 for it, or parse as before, and leak nothing. */
static void run_without_memory(const uint8_t *data, size_t len, size_t header_max, size_t body_max,
                               long fail_at)
{
    struct mw_http_parser p;
    size_t off = 0;
    mw_http_parser_init(&p, header_max, body_max);
    mw_mem_fail_at(fail_at);
    for (size_t n = 0; n < MAX_REQUESTS && off < len; n++) {
        size_t used = 0;
        enum mw_http_result r = mw_http_parser_feed(&p, data + off, len - off, &used);
        off += used;
        if (r == MW_HTTP_ERROR) {
            if (p.status == 503)
                FUZZ_CHECK(mw_mem_fail_fired() && p.err.code == MW_ENOMEM);
            break;
        }
        if (r != MW_HTTP_DONE)
            break;
        struct mw_http_request req;
        mw_http_parser_take_request(&p, &req);
        FUZZ_CHECK(req.body.len == (size_t)req.content_length);
        mw_http_request_cleanup(&req);
    }
    mw_mem_fail_reset();
    mw_http_parser_cleanup(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 0x0f) + 1;
    size_t header_max = (data[0] & 0x10) ? 512 : 0;
    size_t body_max = (data[0] & 0x20) ? 16 : 65536;
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    struct mw_buf whole;
    struct mw_buf pieces;
    mw_buf_init(&whole, SIZE_MAX / 4);
    mw_buf_init(&pieces, SIZE_MAX / 4);
    run(in, len, 0, header_max, body_max, &whole);
    run(in, len, step, header_max, body_max, &pieces);
    if (whole.len != pieces.len || memcmp(whole.data, pieces.data, whole.len) != 0) {
        fprintf(stderr, "one buffer:\n%s\nreads of %zu bytes:\n%s\n", (const char *)whole.data,
                step, (const char *)pieces.data);
        fprintf(stderr, "the outcome depends on how the stream was cut\n");
        abort();
    }
    mw_buf_free(&pieces);
    mw_buf_free(&whole);
    run_without_memory(in, len, header_max, body_max, fuzz_fail_point(in, len) % 8 + 1);
    return 0;
}
