/* test_http.c - the HTTP/1.1 request parser (framing, limits, smuggling refusals, keep-alive,
 * 100-continue, query parameters) and the response serializer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http.h"
#include "mem.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---- */

/* Feeds all of [s, s + len) in one call with the given limits (0 = defaults). */
static enum mw_http_result parse_n(struct mw_http_parser *p, const char *s, size_t len,
                                   size_t *consumed)
{
    return mw_http_parser_feed(p, s, len, consumed);
}

static enum mw_http_result parse(struct mw_http_parser *p, const char *s, size_t *consumed)
{
    return parse_n(p, s, strlen(s), consumed);
}

/* Parses one request that must fail, and returns the status the server would answer. */
static int error_status_n(const char *s, size_t len, size_t header_max, size_t body_max)
{
    struct mw_http_parser p;
    size_t used = 0;
    mw_http_parser_init(&p, header_max, body_max);
    enum mw_http_result r = parse_n(&p, s, len, &used);
    int status = r == MW_HTTP_ERROR ? p.status : -(int)r;
    if (r == MW_HTTP_ERROR) {
        assert_non_null(p.code);
        assert_true(p.err.msg[0] != '\0');
        /* Errors are sticky: nothing more is taken until reset. */
        size_t again = 99;
        assert_int_equal(mw_http_parser_feed(&p, "x", 1, &again), MW_HTTP_ERROR);
        assert_int_equal(again, 0);
    }
    mw_http_parser_cleanup(&p);
    return status;
}

static int error_status(const char *s)
{
    return error_status_n(s, strlen(s), 0, 0);
}

/* Parses s completely (must be one whole request) into p, already initialized. */
static void parse_ok(struct mw_http_parser *p, const char *s)
{
    size_t used = 0;
    enum mw_http_result r = parse(p, s, &used);
    if (r != MW_HTTP_DONE)
        fail_msg("expected DONE for %s, got %d (status %d: %s)", s, (int)r, p->status, p->err.msg);
    assert_int_equal(used, strlen(s));
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- requests that parse ---- */

static void test_http_get_fields(void **state)
{
    (void)state;
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, "GET /v1/sync/pull?cursor=abc&limit=10 HTTP/1.1\r\n"
                 "Host: sync.example.com:8443\r\n"
                 "User-Agent: midway-agent/0.1\r\n"
                 "Authorization: Bearer tok-EN_1.2~3+4/5==\r\n"
                 "X-Correlation-ID: 0190a4b2-7c3e-7d4f-8a1b-123456789abc\r\n"
                 "Accept: */*\r\n"
                 "\r\n");
    struct mw_http_request *r = &p.req;
    assert_int_equal(r->method, MW_HTTP_GET);
    assert_string_equal(r->method_token, "GET");
    assert_string_equal(r->path, "/v1/sync/pull");
    assert_string_equal(r->query, "cursor=abc&limit=10");
    assert_int_equal(r->version_minor, 1);
    assert_true(r->keep_alive);
    assert_false(r->expect_continue);
    assert_false(r->has_content_length);
    assert_int_equal(r->content_encoding, MW_HTTP_CODING_IDENTITY);
    assert_int_equal(r->auth, MW_HTTP_AUTH_BEARER);
    assert_string_equal(r->bearer, "tok-EN_1.2~3+4/5==");
    assert_string_equal(r->correlation_id, "0190a4b2-7c3e-7d4f-8a1b-123456789abc");
    assert_string_equal(r->host, "sync.example.com:8443");
    assert_string_equal(r->user_agent, "midway-agent/0.1");
    assert_int_equal(r->body.len, 0);
    /* Done is sticky until reset, and takes nothing more. */
    size_t used = 99;
    assert_int_equal(mw_http_parser_feed(&p, "GET", 3, &used), MW_HTTP_DONE);
    assert_int_equal(used, 0);
    mw_http_parser_cleanup(&p);
}

static void test_http_post_with_body(void **state)
{
    (void)state;
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, "POST /v1/sync/push HTTP/1.1\r\n"
                 "Host: a\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Encoding: gzip\r\n"
                 "content-LENGTH:   13  \r\n"
                 "\r\n"
                 "{\"ops\":[1,2]}");
    assert_int_equal(p.req.method, MW_HTTP_POST);
    assert_true(p.req.has_content_length);
    assert_int_equal(p.req.content_length, 13);
    assert_int_equal(p.req.content_encoding, MW_HTTP_CODING_GZIP);
    assert_int_equal(p.req.body.len, 13);
    assert_memory_equal(p.req.body.data, "{\"ops\":[1,2]}", 13);
    assert_int_equal(p.req.body.data[13], '\0');
    assert_int_equal(p.req.auth, MW_HTTP_AUTH_NONE);
    assert_string_equal(p.req.correlation_id, "");
    assert_string_equal(p.req.query, "");
    mw_http_parser_cleanup(&p);
}

static void test_http_pipelined_requests(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        "GET /c?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    };
    const char *paths[] = {"/a", "/b", "/c"};
    char in[512];
    snprintf(in, sizeof(in), "%s%s%sGET /d", reqs[0], reqs[1], reqs[2]); /* 4th incomplete */
    size_t off = 0;
    size_t total = strlen(in);
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);

    for (size_t i = 0; i < 3; i++) {
        size_t used = 0;
        assert_int_equal(mw_http_parser_feed(&p, in + off, total - off, &used), MW_HTTP_DONE);
        assert_string_equal(p.req.path, paths[i]);
        /* The parser stops exactly at the end of the request; the rest stays with us. */
        assert_int_equal(used, strlen(reqs[i]));
        if (i == 1)
            assert_memory_equal(p.req.body.data, "hello", 5);
        assert_int_equal(p.req.keep_alive, i < 2);
        off += used;
        mw_http_parser_reset(&p);
    }
    size_t used = 0;
    assert_int_equal(mw_http_parser_feed(&p, in + off, total - off, &used), MW_HTTP_NEED_MORE);
    assert_int_equal(used, total - off);
    mw_http_parser_cleanup(&p);
}

static void test_http_one_byte_at_a_time(void **state)
{
    (void)state;
    const char *in = "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: c1\r\n"
                     "Content-Length: 10\r\n\r\n0123456789";
    size_t n = strlen(in);
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);
    for (size_t i = 0; i < n; i++) {
        size_t used = 0;
        enum mw_http_result r = mw_http_parser_feed(&p, in + i, 1, &used);
        assert_int_equal(used, 1);
        assert_int_equal(r, i + 1 == n ? MW_HTTP_DONE : MW_HTTP_NEED_MORE);
    }
    assert_string_equal(p.req.correlation_id, "c1");
    assert_int_equal(p.req.body.len, 10);
    assert_memory_equal(p.req.body.data, "0123456789", 10);
    mw_http_parser_cleanup(&p);
}

/* Feeds in[0, len) in pieces of the given sizes (cycled), taking requests as they complete,
 * the way the I/O loop does. Returns how many requests completed; paths go into seen. */
static size_t drive(const char *in, size_t len, const size_t *pieces, size_t npieces,
                    char seen[][16], size_t max_seen)
{
    struct mw_http_parser p;
    size_t done = 0;
    size_t off = 0;
    size_t k = 0;
    mw_http_parser_init(&p, 0, 0);
    while (off < len) {
        size_t n = pieces[k++ % npieces];
        if (n > len - off)
            n = len - off;
        /* A piece may hold the end of one request and the start of the next. */
        size_t piece_end = off + n;
        while (off < piece_end) {
            size_t used = 0;
            enum mw_http_result r = mw_http_parser_feed(&p, in + off, piece_end - off, &used);
            assert_int_not_equal(r, MW_HTTP_ERROR);
            assert_true(used <= piece_end - off);
            off += used;
            if (r == MW_HTTP_DONE) {
                assert_true(done < max_seen);
                snprintf(seen[done++], 16, "%.8s:%zu", p.req.path, p.req.body.len);
                mw_http_parser_reset(&p);
            } else {
                assert_int_equal(off, piece_end);
            }
        }
    }
    mw_http_parser_cleanup(&p);
    return done;
}

static void test_http_every_split(void **state)
{
    (void)state;
    const char *in = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                     "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                     "\r\n" /* a stray CRLF between requests is ignored */
                     "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx";
    size_t len = strlen(in);
    char seen[8][16];

    for (size_t cut = 1; cut < len; cut++) {
        size_t pieces[2] = {cut, len};
        assert_int_equal(drive(in, len, pieces, 2, seen, 8), 3);
        assert_string_equal(seen[0], "/a:0");
        assert_string_equal(seen[1], "/b:5");
        assert_string_equal(seen[2], "/c:1");
    }
    for (size_t step = 1; step < 12; step++) {
        size_t pieces[3] = {step, step + 5, 1};
        assert_int_equal(drive(in, len, pieces, 3, seen, 8), 3);
        assert_string_equal(seen[2], "/c:1");
    }
}

/* Random bytes and mangled requests must end in a clean answer, never a crash or a read
 * past the input (run under AddressSanitizer). */
static void test_http_random_input(void **state)
{
    (void)state;
    const char *base = "POST /v1/sync/push?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                       "Authorization: Bearer abc\r\nX-Correlation-ID: c\r\n\r\nbody";
    size_t blen = strlen(base);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0;
        uint8_t buf[256];
        if (iter % 2 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            n = (size_t)(x % sizeof(buf));
            for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t)x;
            }
        } else {
            memcpy(buf, base, blen);
            n = blen;
            for (int m = 0; m < 3; m++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[(x >> 8) % n] = (uint8_t)x;
            }
        }
        struct mw_http_parser p;
        mw_http_parser_init(&p, 512, 64);
        size_t off = 0;
        enum mw_http_result r = MW_HTTP_NEED_MORE;
        while (off < n && r == MW_HTTP_NEED_MORE) {
            size_t piece = 1 + (size_t)((x >> (off % 32)) % 7);
            if (piece > n - off)
                piece = n - off;
            uint8_t *copy = malloc(piece); /* exact-size copy: ASan sees any over-read */
            assert_non_null(copy);
            memcpy(copy, buf + off, piece);
            size_t used = 0;
            r = mw_http_parser_feed(&p, copy, piece, &used);
            free(copy);
            assert_true(used <= piece);
            off += used;
        }
        if (r == MW_HTTP_ERROR) {
            assert_true(p.status >= 400 && p.status <= 505);
            assert_non_null(p.code);
        }
        mw_http_parser_cleanup(&p);
    }
}

static void test_http_keep_alive_rules(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive,close\r\n\r\n", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_http_parser p;
        mw_http_parser_init(&p, 0, 0);
        parse_ok(&p, cases[i].req);
        if (p.req.keep_alive != cases[i].keep_alive)
            fail_msg("case %zu: keep_alive %d", i, p.req.keep_alive);
        mw_http_parser_cleanup(&p);
    }
}

static void test_http_accepted_variants(void **state)
{
    (void)state;
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);

    /* Equal duplicate Content-Length is allowed (RFC 9110 section 8.6). */
    parse_ok(&p, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 003\r\n"
                 "\r\nabc");
    assert_int_equal(p.req.content_length, 3);
    mw_http_parser_reset(&p);

    /* A stray CRLF before the request line is ignored. */
    parse_ok(&p, "\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_string_equal(p.req.path, "/y");
    mw_http_parser_reset(&p);

    /* HTTP/1.0 needs no Host; unknown and lower-case methods are OTHER with their token. */
    parse_ok(&p, "DELETE /z HTTP/1.0\r\n\r\n");
    assert_int_equal(p.req.method, MW_HTTP_OTHER);
    assert_string_equal(p.req.method_token, "DELETE");
    assert_int_equal(p.req.version_minor, 0);
    mw_http_parser_reset(&p);
    parse_ok(&p, "get / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(p.req.method, MW_HTTP_OTHER);
    mw_http_parser_reset(&p);
    parse_ok(&p, "HEAD /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(p.req.method, MW_HTTP_HEAD);
    mw_http_parser_reset(&p);

    /* A GET may carry a body; it is framed and consumed like any other. */
    parse_ok(&p, "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
    assert_int_equal(p.req.body.len, 2);
    mw_http_parser_reset(&p);

    /* Content-Length: 0 on POST completes without a body; obs-text (UTF-8) in a value is
     * fine; a long User-Agent is cut, not refused. */
    char *ua = repeat('u', 300);
    char req[1024];
    snprintf(req, sizeof(req),
             "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Note: caf\xc3\xa9\r\n"
             "User-Agent: %s\r\n\r\n",
             ua);
    parse_ok(&p, req);
    assert_int_equal(p.req.body.len, 0);
    assert_int_equal(strlen(p.req.user_agent), MW_HTTP_USER_AGENT_MAX);
    free(ua);
    mw_http_parser_reset(&p);

    /* Empty Content-Encoding and identity mean no coding; x-gzip is gzip. */
    parse_ok(&p, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Encoding: identity\r\n"
                 "Content-Length: 1\r\n\r\nx");
    assert_int_equal(p.req.content_encoding, MW_HTTP_CODING_IDENTITY);
    mw_http_parser_reset(&p);
    parse_ok(&p, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Encoding: X-Gzip\r\n"
                 "Content-Length: 1\r\n\r\nx");
    assert_int_equal(p.req.content_encoding, MW_HTTP_CODING_GZIP);
    mw_http_parser_cleanup(&p);
}

static void test_http_authorization_forms(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        enum mw_http_auth auth;
        const char *bearer;
    } cases[] = {
        {"Bearer abc", MW_HTTP_AUTH_BEARER, "abc"},
        {"bearer  abc==", MW_HTTP_AUTH_BEARER, "abc=="},
        {"Basic dXNlcjpwdw==", MW_HTTP_AUTH_INVALID, ""},
        {"Bearer", MW_HTTP_AUTH_INVALID, ""},
        {"Bearer ", MW_HTTP_AUTH_INVALID, ""},
        {"Bearer a b", MW_HTTP_AUTH_INVALID, ""},
        {"Bearer =abc", MW_HTTP_AUTH_INVALID, ""},
        {"Bearer ab=c", MW_HTTP_AUTH_INVALID, ""},
        {"Bearerabc", MW_HTTP_AUTH_INVALID, ""},
        {"", MW_HTTP_AUTH_INVALID, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[512];
        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: %s\r\n\r\n",
                 cases[i].value);
        struct mw_http_parser p;
        mw_http_parser_init(&p, 0, 0);
        parse_ok(&p, req);
        if (p.req.auth != cases[i].auth || strcmp(p.req.bearer, cases[i].bearer) != 0)
            fail_msg("case %zu (%s): auth %d bearer '%s'", i, cases[i].value, p.req.auth,
                     p.req.bearer);
        mw_http_parser_cleanup(&p);
    }

    /* The longest token kept, and one byte more. */
    char *tok = repeat('t', MW_HTTP_BEARER_MAX + 1);
    char req[1024];
    for (size_t extra = 0; extra < 2; extra++) {
        snprintf(req, sizeof(req),
                 "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %.*s\r\n\r\n",
                 (int)(MW_HTTP_BEARER_MAX + extra), tok);
        struct mw_http_parser p;
        mw_http_parser_init(&p, 0, 0);
        parse_ok(&p, req);
        assert_int_equal(p.req.auth, extra ? MW_HTTP_AUTH_INVALID : MW_HTTP_AUTH_BEARER);
        assert_int_equal(strlen(p.req.bearer), extra ? 0 : MW_HTTP_BEARER_MAX);
        mw_http_parser_cleanup(&p);
        assert_string_equal(p.req.bearer, ""); /* wiped */
    }
    free(tok);
}

/* ---- limits ---- */

/* A GET whose head is exactly size bytes. */
static char *head_of_size(size_t size)
{
    const char *pre = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    const char *post = "\r\n\r\n";
    size_t fixed = strlen(pre) + strlen(post);
    assert_true(size > fixed);
    char *s = malloc(size + 1);
    assert_non_null(s);
    memcpy(s, pre, strlen(pre));
    memset(s + strlen(pre), 'p', size - fixed);
    memcpy(s + size - strlen(post), post, strlen(post) + 1);
    assert_int_equal(strlen(s), size);
    return s;
}

static void test_http_header_max_boundary(void **state)
{
    (void)state;
    char *at = head_of_size(MW_HTTP_HEADER_MAX);
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, at);
    mw_http_parser_cleanup(&p);
    free(at);

    char *over = head_of_size(MW_HTTP_HEADER_MAX + 1);
    assert_int_equal(error_status(over), 431);
    free(over);
    /* Refused when byte header_max + 1 arrives, without waiting for the end of the head. */
    over = head_of_size(MW_HTTP_HEADER_MAX + 100);
    assert_int_equal(error_status_n(over, MW_HTTP_HEADER_MAX + 1, 0, 0), 431);
    assert_int_equal(error_status_n(over, MW_HTTP_HEADER_MAX, 0, 0), -(int)MW_HTTP_NEED_MORE);
    free(over);

    /* A configured bound works the same way. */
    char *small = head_of_size(200);
    assert_int_equal(error_status_n(small, 200, 200, 0), -(int)MW_HTTP_DONE);
    assert_int_equal(error_status_n(small, 200, 199, 0), 431);
    free(small);

    /* A request line alone over the bound. */
    char *line = repeat('a', MW_HTTP_HEADER_MAX + 10);
    memcpy(line, "GET /", 5);
    assert_int_equal(error_status(line), 431);
    free(line);
}

static void test_http_header_count(void **state)
{
    (void)state;
    char *req = malloc(8192);
    assert_non_null(req);
    for (size_t n = MW_HTTP_HEADERS_MAX; n <= MW_HTTP_HEADERS_MAX + 1; n++) {
        size_t off = (size_t)snprintf(req, 8192, "GET / HTTP/1.1\r\nHost: h\r\n");
        for (size_t i = 1; i < n; i++)
            off += (size_t)snprintf(req + off, 8192 - off, "X-H%zu: v\r\n", i);
        snprintf(req + off, 8192 - off, "\r\n");
        int st = error_status(req);
        assert_int_equal(st, n == MW_HTTP_HEADERS_MAX ? -(int)MW_HTTP_DONE : 431);
    }
    free(req);
}

static void test_http_body_max_decided_before_body(void **state)
{
    (void)state;
    char req[256];
    struct mw_http_parser p;
    size_t used = 0;

    /* Default bound: only the head is sent, and the answer is already known. */
    snprintf(req, sizeof(req),
             "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n",
             MW_PUSH_BODY_MAX + 1u);
    mw_http_parser_init(&p, 0, 0);
    assert_int_equal(parse(&p, req, &used), MW_HTTP_ERROR);
    assert_int_equal(p.status, 413);
    assert_string_equal(p.code, "too_large");
    assert_int_equal(used, strlen(req));
    assert_null(p.req.body.data); /* nothing was allocated for it */
    mw_http_parser_cleanup(&p);

    /* Huge values that still fit in 64 bits are 413, not 400. */
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                  "18446744073709551615\r\n\r\n"),
                     413);

    /* A configured bound: exactly at it is fine, one more is refused. */
    snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n");
    mw_http_parser_init(&p, 0, 100);
    assert_int_equal(parse(&p, req, &used), MW_HTTP_NEED_MORE);
    char body[100];
    memset(body, 'b', sizeof(body));
    assert_int_equal(mw_http_parser_feed(&p, body, sizeof(body), &used), MW_HTTP_DONE);
    assert_int_equal(p.req.body.len, 100);
    assert_true(p.req.body.cap <= 101); /* one allocation of the announced size */
    mw_http_parser_cleanup(&p);
    assert_int_equal(error_status_n(req, strlen(req), 0, 99), 413);
}

static void test_http_chunked_and_transfer_codings(void **state)
{
    (void)state;
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                                  "\r\n5\r\nhello\r\n0\r\n\r\n"),
                     411);
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, "
                                  "Chunked\r\n\r\n"),
                     411);
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\n\r\n"), 411);
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
                     501);
    assert_int_equal(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, "
                                  "gzip\r\n\r\n"),
                     501);
}

static void test_http_smuggling_and_syntax_refused(void **state)
{
    (void)state;
#define CASE(s, st)          \
    {                        \
        s, sizeof(s) - 1, st \
    }
    static const struct {
        const char *req;
        size_t len;
        int status;
    } cases[] = {
        /* framing ambiguities */
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
             "\r\n",
             400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"
             "\r\n",
             400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n", 400),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\n", 400),
        /* line ends */
        CASE("GET / HTTP/1.1\nHost: h\n\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n", 400),
        CASE("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        /* obs-fold, names, values */
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\tc\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX(A): v\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\0c\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x01\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x7f\r\n\r\n", 400),
        CASE("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        /* request line */
        CASE("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
        CASE(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET /\r\nHost: h\r\n\r\n", 400),
        CASE("GET / http/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
        CASE("GET / HTTP/1\r\nHost: h\r\n\r\n", 400),
        CASE("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET /a%4 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET /a# HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        CASE("GET /a\x80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        /* headers the server relies on */
        CASE("GET / HTTP/1.1\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n"
             "\r\n",
             400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: a\r\nX-Correlation-ID: b\r\n\r\n",
             400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: a\"b\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: a b\r\n\r\n", 400),
        CASE("GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: "
             "0123456789012345678901234567890123456789012345678901234567890123X\r\n\r\n",
             400),
        /* other statuses */
        CASE("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        CASE("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
        CASE("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
        CASE("ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
             415),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip, gzip\r\nContent-Length: 1\r\n"
             "\r\nx",
             415),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\n"
             "Content-Length: 1\r\n\r\nx",
             415),
        CASE("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    };
#undef CASE
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = error_status_n(cases[i].req, cases[i].len, 0, 0);
        if (st != cases[i].status)
            fail_msg("case %zu: expected %d, got %d for: %.*s", i, cases[i].status, st,
                     (int)cases[i].len, cases[i].req);
    }
    /* A correlation ID of exactly 64 bytes is kept. */
    struct mw_http_parser p;
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, "GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: "
                 "0123456789012345678901234567890123456789012345678901234567890123\r\n\r\n");
    assert_int_equal(strlen(p.req.correlation_id), MW_HTTP_CORRELATION_ID_MAX);
    mw_http_parser_cleanup(&p);
}

static void test_http_target_bound(void **state)
{
    (void)state;
    char *req = malloc(MW_HTTP_TARGET_MAX + 64);
    assert_non_null(req);
    for (size_t n = MW_HTTP_TARGET_MAX; n <= MW_HTTP_TARGET_MAX + 1; n++) {
        char *target = repeat('a', n);
        target[0] = '/';
        snprintf(req, MW_HTTP_TARGET_MAX + 64, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target);
        int st = error_status(req);
        assert_int_equal(st, n == MW_HTTP_TARGET_MAX ? -(int)MW_HTTP_DONE : 414);
        free(target);
    }
    free(req);
}

static void test_http_expect_continue(void **state)
{
    (void)state;
    struct mw_http_parser p;
    size_t used = 0;
    const char *head = "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                       "Content-Length: 4\r\n\r\n";

    mw_http_parser_init(&p, 0, 0);
    assert_false(mw_http_parser_take_continue(&p));
    assert_int_equal(parse(&p, head, &used), MW_HTTP_NEED_MORE);
    assert_true(p.req.expect_continue);
    assert_true(mw_http_parser_take_continue(&p));
    assert_false(mw_http_parser_take_continue(&p)); /* once */
    assert_int_equal(mw_http_parser_feed(&p, "body", 4, &used), MW_HTTP_DONE);
    assert_false(mw_http_parser_take_continue(&p));
    assert_string_equal(MW_HTTP_CONTINUE, "HTTP/1.1 100 Continue\r\n\r\n");

    /* Body already here with the head: no 100 is due. */
    mw_http_parser_reset(&p);
    char whole[256];
    snprintf(whole, sizeof(whole), "%sbody", head);
    assert_int_equal(parse(&p, whole, &used), MW_HTTP_DONE);
    assert_false(mw_http_parser_take_continue(&p));

    /* Too large: the answer is 413, never 100. */
    mw_http_parser_cleanup(&p);
    mw_http_parser_init(&p, 0, 3);
    assert_int_equal(parse(&p, head, &used), MW_HTTP_ERROR);
    assert_int_equal(p.status, 413);
    assert_false(mw_http_parser_take_continue(&p));

    /* HTTP/1.0 cannot expect 100 (RFC 9110 section 10.1.1). */
    mw_http_parser_cleanup(&p);
    mw_http_parser_init(&p, 0, 0);
    assert_int_equal(
        parse(&p, "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", &used),
        MW_HTTP_NEED_MORE);
    assert_false(p.req.expect_continue);
    assert_false(mw_http_parser_take_continue(&p));
    mw_http_parser_cleanup(&p);
}

/* The body's time starts when the head is in, with or without 100-continue. */
static void test_http_in_body(void **state)
{
    (void)state;
    struct mw_http_parser p;
    size_t used = 0;

    mw_http_parser_init(&p, 0, 0);
    assert_false(mw_http_parser_in_body(&p));
    assert_int_equal(parse(&p, "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nContent-Le", &used),
                     MW_HTTP_NEED_MORE);
    assert_false(mw_http_parser_in_body(&p)); /* still the head */
    assert_int_equal(parse(&p, "ngth: 4\r\n\r\nbo", &used), MW_HTTP_NEED_MORE);
    assert_true(mw_http_parser_in_body(&p));
    assert_int_equal(parse(&p, "dy", &used), MW_HTTP_DONE);
    assert_false(mw_http_parser_in_body(&p));

    /* No body, or a refused head: never in a body. */
    mw_http_parser_reset(&p);
    assert_int_equal(parse(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &used), MW_HTTP_DONE);
    assert_false(mw_http_parser_in_body(&p));
    mw_http_parser_reset(&p);
    assert_int_equal(
        parse(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n", &used),
        MW_HTTP_ERROR);
    assert_false(mw_http_parser_in_body(&p));
    mw_http_parser_cleanup(&p);
}

static void test_http_take_request(void **state)
{
    (void)state;
    struct mw_http_parser p;
    struct mw_http_request req;
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer secret\r\n"
                 "Content-Length: 3\r\n\r\nabc");
    mw_http_parser_take_request(&p, &req);
    /* The parser is ready for the next request and no longer holds the body or token. */
    assert_null(p.req.body.data);
    assert_string_equal(p.req.bearer, "");
    assert_string_equal(p.req.path, "");
    parse_ok(&p, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_string_equal(p.req.path, "/next");
    mw_http_parser_cleanup(&p);
    /* The request outlives the parser. */
    assert_string_equal(req.path, "/v1/sync/push");
    assert_string_equal(req.bearer, "secret");
    assert_memory_equal(req.body.data, "abc", 3);
    mw_http_request_cleanup(&req);
    assert_null(req.body.data);
    assert_string_equal(req.bearer, "");
    mw_http_request_cleanup(NULL);
}

/* ---- query parameters ---- */

static void test_http_query_param(void **state)
{
    (void)state;
    struct mw_http_request req;
    struct mw_error err = {0};
    char out[16];

    memset(&req, 0, sizeof(req));
    snprintf(req.query, sizeof(req.query),
             "cursor=a%%2Fb%%3D+c&limit=10&empty=&flag&cursorx=no&&pct=%%41%%4a%%4A&"
             "bad1=%%zz&bad2=%%4&bad3=%%00&bad4=%%0a&utf=caf%%C3%%A9&dup=1&dup=2&"
             "long=0123456789abcdef&fit=0123456789abcde");

    assert_int_equal(mw_http_query_param(&req, "cursor", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "a/b= c");
    assert_int_equal(mw_http_query_param(&req, "limit", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "10");
    assert_int_equal(mw_http_query_param(&req, "empty", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "");
    assert_int_equal(mw_http_query_param(&req, "flag", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "");
    assert_int_equal(mw_http_query_param(&req, "pct", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "AJJ");
    assert_int_equal(mw_http_query_param(&req, "utf", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "caf\xc3\xa9");
    assert_int_equal(mw_http_query_param(&req, "fit", out, sizeof(out), &err), MW_OK);
    assert_string_equal(out, "0123456789abcde");

    static const struct {
        const char *name;
        enum mw_err rc;
    } bad[] = {
        {"bad1", MW_EMALFORMED},   {"bad2", MW_EMALFORMED}, {"bad3", MW_EMALFORMED},
        {"bad4", MW_EMALFORMED},   {"dup", MW_EMALFORMED},  {"long", MW_ETOOBIG},
        {"missing", MW_ENOTFOUND}, {"curs", MW_ENOTFOUND},  {"", MW_ENOTFOUND},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        memcpy(out, "junk", 5);
        enum mw_err rc = mw_http_query_param(&req, bad[i].name, out, sizeof(out), &err);
        if (rc != bad[i].rc)
            fail_msg("param '%s': expected %d, got %d", bad[i].name, bad[i].rc, rc);
        assert_string_equal(out, "");
        assert_int_equal(err.code, bad[i].rc);
    }
    mw_error_clear(&err);
    assert_int_equal(mw_http_query_param(&req, "limit", out, 0, &err), MW_EINVAL);

    /* No query at all. */
    req.query[0] = '\0';
    assert_int_equal(mw_http_query_param(&req, "cursor", out, sizeof(out), NULL), MW_ENOTFOUND);
}

static void test_http_query_from_parsed_request(void **state)
{
    (void)state;
    struct mw_http_parser p;
    char cursor[64];
    mw_http_parser_init(&p, 0, 0);
    parse_ok(&p, "GET /v1/sync/pull?cursor=1700000000%3A42&limit=500 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(mw_http_query_param(&p.req, "cursor", cursor, sizeof(cursor), NULL), MW_OK);
    assert_string_equal(cursor, "1700000000:42");
    mw_http_parser_cleanup(&p);
}

/* ---- responses ---- */

/* Checks the framing of a serialized response the way a client would read it, and returns
 * its head (malloc'd, without the empty line) and where the body starts. */
static char *check_response_framing(const struct mw_buf *out, size_t *body_off, long *clen)
{
    const char *s = (const char *)out->data;
    const char *end = strstr(s, "\r\n\r\n");
    assert_non_null(end);
    size_t head_len = (size_t)(end - s) + 2;
    *body_off = head_len + 2;
    char *head = malloc(head_len + 1);
    assert_non_null(head);
    memcpy(head, s, head_len);
    head[head_len] = '\0';
    /* Every line ends in CRLF and holds no bare CR/LF. */
    for (size_t i = 0; i < head_len; i++) {
        if (head[i] == '\n')
            assert_true(i > 0 && head[i - 1] == '\r');
        if (head[i] == '\r')
            assert_true(head[i + 1] == '\n');
    }
    *clen = -1;
    const char *cl = strstr(head, "\r\nContent-Length: ");
    if (cl) {
        char *e = NULL;
        *clen = strtol(cl + strlen("\r\nContent-Length: "), &e, 10);
        assert_true(e[0] == '\r');
    }
    return head;
}

/* Replaces the Date line's value (which depends on the clock) with "<date>" after checking
 * it is the IMF-fixdate of a second between before and after. */
static void check_and_mask_date(char *head, time_t before, time_t after)
{
    char *d = strstr(head, "\r\nDate: ");
    assert_non_null(d);
    d += strlen("\r\nDate: ");
    char *e = strstr(d, "\r\n");
    assert_non_null(e);
    assert_int_equal((size_t)(e - d), MW_HTTP_DATE_SIZE - 1);
    bool matched = false;
    for (time_t t = before; t <= after; t++) {
        char want[MW_HTTP_DATE_SIZE];
        assert_int_equal(mw_http_date_format((int64_t)t, want), MW_OK);
        if (memcmp(d, want, MW_HTTP_DATE_SIZE - 1) == 0)
            matched = true;
    }
    assert_true(matched);
    memmove(d + 6, e, strlen(e) + 1);
    memcpy(d, "<date>", 6);
}

static void test_http_response_write_exact(void **state)
{
    (void)state;
    struct mw_buf out;
    mw_buf_init(&out, 1 << 20);
    const char *body = "{\"ok\":true}";

    time_t before = time(NULL);
    assert_int_equal(mw_http_response_write(&out, 200, "application/json", "cid-1", true,
                                            "Retry-After: 1\r\nX-Other: y\r\n", body, strlen(body)),
                     MW_OK);
    time_t after = time(NULL);
    size_t body_off = 0;
    long clen = 0;
    char *head = check_response_framing(&out, &body_off, &clen);
    check_and_mask_date(head, before, after);
    assert_string_equal(head, "HTTP/1.1 200 OK\r\n"
                              "Date: <date>\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 11\r\n"
                              "Connection: keep-alive\r\n"
                              "X-Correlation-ID: cid-1\r\n"
                              "Cache-Control: no-store\r\n"
                              "Retry-After: 1\r\n"
                              "X-Other: y\r\n");
    assert_int_equal(clen, (long)(out.len - body_off));
    assert_memory_equal(out.data + body_off, body, strlen(body));
    free(head);

    /* Appends after what is there; no type, no correlation ID, close, empty body. */
    size_t first = out.len;
    assert_int_equal(mw_http_response_write(&out, 503, NULL, "", false, NULL, NULL, 0), MW_OK);
    struct mw_buf second = {.data = out.data + first, .len = out.len - first};
    before = after;
    after = time(NULL);
    head = check_response_framing(&second, &body_off, &clen);
    check_and_mask_date(head, before, after);
    assert_string_equal(head, "HTTP/1.1 503 Service Unavailable\r\n"
                              "Date: <date>\r\n"
                              "Content-Length: 0\r\n"
                              "Connection: close\r\n"
                              "Cache-Control: no-store\r\n");
    assert_int_equal(body_off, second.len);
    free(head);
    mw_buf_free(&out);
}

static void test_http_response_head_and_204(void **state)
{
    (void)state;
    struct mw_buf out;
    size_t body_off = 0;
    long clen = 0;
    mw_buf_init(&out, 4096);

    /* HEAD: the length GET would send, and no body bytes. */
    assert_int_equal(mw_http_response_write(&out, 200, "text/plain", NULL, true, NULL, NULL, 42),
                     MW_OK);
    char *head = check_response_framing(&out, &body_off, &clen);
    assert_int_equal(clen, 42);
    assert_int_equal(body_off, out.len);
    free(head);

    mw_buf_reset(&out);
    assert_int_equal(mw_http_response_write(&out, 204, NULL, "c", true, NULL, "x", 1), MW_OK);
    head = check_response_framing(&out, &body_off, &clen);
    assert_int_equal(clen, -1);
    assert_int_equal(body_off, out.len);
    free(head);
    mw_buf_free(&out);
}

static void test_http_response_refuses_bad_arguments(void **state)
{
    (void)state;
    struct mw_buf out;
    mw_buf_init(&out, 4096);
    assert_int_equal(mw_buf_append_str(&out, "prefix"), MW_OK);

    assert_int_equal(mw_http_response_write(&out, 100, NULL, NULL, true, NULL, NULL, 0), MW_EINVAL);
    assert_int_equal(mw_http_response_write(&out, 600, NULL, NULL, true, NULL, NULL, 0), MW_EINVAL);
    assert_int_equal(
        mw_http_response_write(&out, 200, NULL, "a\r\nSet-Cookie: x", true, NULL, NULL, 0),
        MW_EINVAL);
    assert_int_equal(mw_http_response_write(&out, 200, NULL, "a b", true, NULL, NULL, 0),
                     MW_EINVAL);
    assert_int_equal(
        mw_http_response_write(&out, 200, "text/plain\r\nX: y", NULL, true, NULL, NULL, 0),
        MW_EINVAL);
    assert_int_equal(mw_http_response_write(&out, 200, NULL, NULL, true, "Retry-After: 1", NULL, 0),
                     MW_EINVAL);
    assert_int_equal(mw_http_response_write(&out, 200, NULL, NULL, true, "\r\n", NULL, 0),
                     MW_EINVAL);
    assert_int_equal(
        mw_http_response_write(&out, 200, NULL, NULL, true, "A: 1\r\n\r\nB: 2\r\n", NULL, 0),
        MW_EINVAL);
    assert_int_equal(mw_http_response_write(&out, 200, NULL, NULL, true, "A: 1\nB: 2\r\n", NULL, 0),
                     MW_EINVAL);
    assert_int_equal(out.len, 6);

    /* Past the buffer's limit: nothing is left half-written. */
    struct mw_buf small;
    mw_buf_init(&small, 100);
    assert_int_equal(mw_buf_append_str(&small, "keep"), MW_OK);
    char body[201];
    memset(body, 'x', sizeof(body) - 1);
    body[200] = '\0';
    assert_int_equal(mw_http_response_write(&small, 200, NULL, NULL, true, NULL, body, 200),
                     MW_ETOOBIG);
    assert_int_equal(small.len, 4);
    assert_string_equal((char *)small.data, "keep");
    assert_int_equal(mw_http_error_write(&small, 400, "bad_request", body, NULL, false, NULL),
                     MW_ETOOBIG);
    assert_string_equal((char *)small.data, "keep");
    mw_buf_free(&small);
    mw_buf_free(&out);
}

static void test_http_error_json_escaped(void **state)
{
    (void)state;
    struct mw_buf out;
    size_t body_off = 0;
    long clen = 0;
    mw_buf_init(&out, 4096);
    const char *msg = "say \"hi\" \\ path\nline\ttab\x01 caf\xc3\xa9 \xff end \xe2\x82";

    assert_int_equal(
        mw_http_error_write(&out, 413, "body_too_large", msg, "cid-9", false, "Retry-After: 2\r\n"),
        MW_OK);
    char *head = check_response_framing(&out, &body_off, &clen);
    assert_non_null(strstr(head, "HTTP/1.1 413 Content Too Large\r\n"));
    assert_non_null(strstr(head, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(head, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(head, "\r\nX-Correlation-ID: cid-9\r\n"));
    assert_non_null(strstr(head, "\r\nRetry-After: 2\r\n"));
    free(head);

    const char *body = (const char *)out.data + body_off;
    size_t body_len = out.len - body_off;
    assert_int_equal(clen, (long)body_len);
    const char *want = "{\"error\":{\"code\":\"body_too_large\",\"message\":\"say \\\"hi\\\" \\\\ "
                       "path\\nline\\ttab\\u0001 caf\xc3\xa9 \\ufffd end \\ufffd\\ufffd\"}}";
    assert_int_equal(body_len, strlen(want));
    assert_memory_equal(body, want, body_len);

    /* A JSON parser reads it back to the same text (invalid bytes as U+FFFD). */
    cJSON *root = cJSON_ParseWithLength(body, body_len);
    assert_non_null(root);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    assert_true(cJSON_IsString(code) && cJSON_IsString(m));
    assert_string_equal(code->valuestring, "body_too_large");
    assert_string_equal(m->valuestring, "say \"hi\" \\ path\nline\ttab\x01 caf\xc3\xa9 "
                                        "\xef\xbf\xbd end \xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(root);

    /* Overlong encodings and surrogates are not UTF-8 either. */
    mw_buf_reset(&out);
    assert_int_equal(mw_http_error_write(&out, 400, "c",
                                         "\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80"
                                         "\xf0\x9f\x98\x80",
                                         NULL, true, NULL),
                     MW_OK);
    const char *b = strstr((const char *)out.data, "\r\n\r\n") + 4;
    assert_string_equal(b, "{\"error\":{\"code\":\"c\",\"message\":\"\\ufffd\\ufffd\\ufffd\\ufffd"
                           "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\xf0\x9f\x98\x80\"}}");
    mw_buf_free(&out);
}

static void test_http_status_text_and_date(void **state)
{
    (void)state;
    assert_string_equal(mw_http_status_text(200), "OK");
    assert_string_equal(mw_http_status_text(400), "Bad Request");
    assert_string_equal(mw_http_status_text(401), "Unauthorized");
    assert_string_equal(mw_http_status_text(411), "Length Required");
    assert_string_equal(mw_http_status_text(413), "Content Too Large");
    assert_string_equal(mw_http_status_text(429), "Too Many Requests");
    assert_string_equal(mw_http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(mw_http_status_text(505), "HTTP Version Not Supported");
    assert_string_equal(mw_http_status_text(299), "Unknown");

    char d[MW_HTTP_DATE_SIZE];
    assert_int_equal(mw_http_date_format(784111777, d), MW_OK);
    assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT"); /* RFC 9110's example */
    assert_int_equal(mw_http_date_format(0, d), MW_OK);
    assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_int_equal(mw_http_date_format(951868799, d), MW_OK);
    assert_string_equal(d, "Tue, 29 Feb 2000 23:59:59 GMT");
    assert_int_equal(mw_http_date_format(INT64_C(4102444800), d), MW_OK);
    assert_string_equal(d, "Fri, 01 Jan 2100 00:00:00 GMT");
    assert_int_equal(mw_http_date_format(INT64_MAX, d), MW_EINVAL);
    assert_string_equal(d, "");
}

/* ---- allocation failures ---- */

static void test_http_allocation_failures(void **state)
{
    (void)state;
    const char *req = "POST /v1/sync/push HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: c\r\n"
                      "Authorization: Bearer t\r\nContent-Length: 5\r\n\r\nhello";
    bool done = false;
    for (long i = 1; i < 1000 && !done; i++) {
        struct mw_http_parser p;
        struct mw_buf out;
        size_t used = 0;
        mw_http_parser_init(&p, 0, 0);
        mw_buf_init(&out, 1 << 16);
        mw_mem_fail_at(i);
        enum mw_http_result r = parse(&p, req, &used);
        enum mw_err rc = MW_ENOMEM;
        if (r == MW_HTTP_DONE)
            rc = mw_http_error_write(&out, 400, "bad_request", "x", p.req.correlation_id,
                                     p.req.keep_alive, NULL);
        bool fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (r == MW_HTTP_ERROR) {
            assert_int_equal(p.status, 503);
            assert_int_equal(p.err.code, MW_ENOMEM);
            assert_true(fired);
        } else {
            assert_int_equal(r, MW_HTTP_DONE);
            if (rc != MW_OK) {
                assert_int_equal(rc, MW_ENOMEM);
                assert_int_equal(out.len, 0);
                assert_true(fired);
            } else {
                assert_false(fired);
                done = true;
            }
        }
        mw_buf_free(&out);
        mw_http_parser_cleanup(&p);
    }
    assert_true(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_get_fields),
        cmocka_unit_test(test_http_post_with_body),
        cmocka_unit_test(test_http_pipelined_requests),
        cmocka_unit_test(test_http_one_byte_at_a_time),
        cmocka_unit_test(test_http_every_split),
        cmocka_unit_test(test_http_random_input),
        cmocka_unit_test(test_http_keep_alive_rules),
        cmocka_unit_test(test_http_accepted_variants),
        cmocka_unit_test(test_http_authorization_forms),
        cmocka_unit_test(test_http_header_max_boundary),
        cmocka_unit_test(test_http_header_count),
        cmocka_unit_test(test_http_body_max_decided_before_body),
        cmocka_unit_test(test_http_chunked_and_transfer_codings),
        cmocka_unit_test(test_http_smuggling_and_syntax_refused),
        cmocka_unit_test(test_http_target_bound),
        cmocka_unit_test(test_http_expect_continue),
        cmocka_unit_test(test_http_in_body),
        cmocka_unit_test(test_http_take_request),
        cmocka_unit_test(test_http_query_param),
        cmocka_unit_test(test_http_query_from_parsed_request),
        cmocka_unit_test(test_http_response_write_exact),
        cmocka_unit_test(test_http_response_head_and_204),
        cmocka_unit_test(test_http_response_refuses_bad_arguments),
        cmocka_unit_test(test_http_error_json_escaped),
        cmocka_unit_test(test_http_status_text_and_date),
        cmocka_unit_test(test_http_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
