/* fuzz_auth.c - the two request headers that carry identity: Authorization (the device's
 * bearer token) and X-Correlation-ID (the id that ties log lines on both sides together).
 * The input is "<Authorization value>\n<X-Correlation-ID value>".
 * Checks: mw_auth_parse_bearer accepts only a well-formed token (and then copies exactly it)
 * and otherwise fails with the one rejection message and an empty token. When both values
 * can stand in a header, they are sent through the HTTP parser too, which must agree with
 * mw_auth_parse_bearer on the same (OWS-trimmed) value: both accept with the same token or
 * neither yields a usable one; it must accept the correlation id exactly when it is 0..64
 * visible ASCII bytes without '"' and '\', and a correlation id that is a UUID must format
 * to its lower-cased self, as the server logs it. */
#include "auth.h"
#include "fuzz.h"
#include "http.h"
#include "token.h"
#include "uuid.h"

#include <string.h>

static bool is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* What a header value may hold at all: HTAB, SP, VCHAR, obs-text. */
static bool field_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!(s[i] == '\t' || (s[i] >= 0x20 && s[i] != 0x7f)))
            return false;
    }
    return true;
}

static void trim(const uint8_t **s, size_t *n)
{
    while (*n > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

static bool cid_ok(const uint8_t *s, size_t n)
{
    if (n > MW_HTTP_CORRELATION_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
            return false;
    }
    return true;
}

static bool contains(const uint8_t *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    }
    return false;
}

/* mw_auth_parse_bearer on value[0..n), with its contract checked. Returns whether it took it. */
static bool parse_bearer(const uint8_t *value, size_t n, char token[MW_TOKEN_SIZE])
{
    struct mw_error err = {0};
    memset(token, 'x', MW_TOKEN_SIZE);
    enum mw_err rc = mw_auth_parse_bearer((const char *)value, n, token, &err);
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EAUTH);
        FUZZ_CHECK(strcmp(err.msg, MW_AUTH_REJECTED_MSG) == 0);
        FUZZ_CHECK(token[0] == '\0');
        return false;
    }
    size_t tlen = strlen(token);
    FUZZ_CHECK(tlen == MW_TOKEN_LEN);
    FUZZ_CHECK(mw_token_well_formed(token, tlen));
    /* The token is the value's own bytes, after the scheme. */
    FUZZ_CHECK(n >= 7 + tlen);
    FUZZ_CHECK(contains(value + 7, n - 7, token, tlen));
    return true;
}

static void through_http(const uint8_t *auth, size_t alen, const uint8_t *cid, size_t clen)
{
    static const char head[] = "GET /v1/sync/pull?cursor=0 HTTP/1.1\r\nHost: sync.example\r\n"
                               "Authorization: ";
    struct mw_buf req;
    mw_buf_init(&req, MW_HTTP_HEADER_MAX);
    FUZZ_CHECK(mw_buf_append_str(&req, head) == MW_OK);
    FUZZ_CHECK(mw_buf_append(&req, auth, alen) == MW_OK);
    FUZZ_CHECK(mw_buf_append_str(&req, "\r\nX-Correlation-ID: ") == MW_OK);
    FUZZ_CHECK(mw_buf_append(&req, cid, clen) == MW_OK);
    FUZZ_CHECK(mw_buf_append_str(&req, "\r\n\r\n") == MW_OK);

    struct mw_http_parser p;
    size_t used = 0;
    mw_http_parser_init(&p, 0, 0);
    enum mw_http_result r = mw_http_parser_feed(&p, req.data, req.len, &used);

    const uint8_t *tc = cid;
    size_t tclen = clen;
    trim(&tc, &tclen);
    if (!cid_ok(tc, tclen)) {
        FUZZ_CHECK(r == MW_HTTP_ERROR && p.status == 400);
        FUZZ_CHECK(strstr(p.err.msg, "X-Correlation-ID") != NULL);
        mw_http_parser_cleanup(&p);
        mw_buf_free(&req);
        return;
    }
    FUZZ_CHECK(r == MW_HTTP_DONE && used == req.len);
    struct mw_http_request rq;
    mw_http_parser_take_request(&p, &rq);

    FUZZ_CHECK(strlen(rq.correlation_id) == tclen && memcmp(rq.correlation_id, tc, tclen) == 0);
    struct mw_uuid u;
    if (mw_uuid_parse(rq.correlation_id, tclen, &u) == MW_OK) {
        char text[MW_UUID_STR_SIZE];
        mw_uuid_format(&u, text);
        for (size_t i = 0; i < tclen; i++) {
            uint8_t c = tc[i];
            FUZZ_CHECK((uint8_t)text[i] == ((c >= 'A' && c <= 'F') ? c - 'A' + 'a' : c));
        }
    }

    /* The HTTP layer trims OWS around the value before it looks at it; give
     * mw_auth_parse_bearer the same bytes. */
    const uint8_t *ta = auth;
    size_t talen = alen;
    trim(&ta, &talen);
    char token[MW_TOKEN_SIZE];
    bool direct = parse_bearer(ta, talen, token);
    bool via_http =
        rq.auth == MW_HTTP_AUTH_BEARER && mw_token_well_formed(rq.bearer, strlen(rq.bearer));
    FUZZ_CHECK(direct == via_http);
    if (direct)
        FUZZ_CHECK(strcmp(token, rq.bearer) == 0);
    if (rq.auth != MW_HTTP_AUTH_BEARER)
        FUZZ_CHECK(rq.bearer[0] == '\0');
    /* Any bytes can be the value; a missing header is never what arrives here. */
    FUZZ_CHECK(rq.auth != MW_HTTP_AUTH_NONE);

    mw_http_request_cleanup(&rq);
    mw_http_parser_cleanup(&p);
    mw_buf_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t alen = nl ? (size_t)(nl - data) : size;
    const uint8_t *cid = nl ? nl + 1 : data + size;
    size_t clen = nl ? size - alen - 1 : 0;
    char token[MW_TOKEN_SIZE];

    (void)parse_bearer(data, alen, token);
    FUZZ_CHECK(!parse_bearer(NULL, 0, token));
    if (field_ok(data, alen) && field_ok(cid, clen) && alen + clen < 8192)
        through_http(data, alen, cid, clen);
    return 0;
}
