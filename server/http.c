/* http.c - strict incremental HTTP/1.1 request parser and response serializer (see http.h).
 *
 * The head is taken one line at a time: bytes up to the next LF go into a line buffer, and a
 * complete line is checked and parsed at once, so an error (bad version, oversized target)
 * is answered as soon as its line ends, and no byte is ever scanned twice. Only the fields
 * the server uses are kept, copied into the request; the line buffer is reused. */
#include "http.h"

#include "mem.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum parser_state {
    ST_HEAD = 0,
    ST_BODY,
    ST_DONE,
    ST_ERROR,
};

/* ---- small character classes (RFC 9110 section 5.6.2, RFC 3986) ---- */

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(uint8_t c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c - 'A' + 10;
}

static bool is_tchar(uint8_t c)
{
    return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A field value byte: HTAB, SP, VCHAR or obs-text. Everything else (NUL, CR, LF, other
 * controls, DEL) is refused: some peers treat them as separators and some do not. */
static bool is_field_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

static bool ieq(const uint8_t *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (lower(s[i]) != lower((uint8_t)lit[i]))
            return false;
    }
    return true;
}

static bool is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Trims optional whitespace on both ends of [*s, *s + *n). */
static void trim_ows(const uint8_t **s, size_t *n)
{
    while (*n > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* Copies [s, s + n) into dst (room for max bytes plus NUL). */
static void copy_text(char *dst, const uint8_t *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* memset that the optimizer may not drop: the bearer token must not outlive its request. */
static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}

/* ---- parser ---- */

static enum mw_http_result fail_with(struct mw_http_parser *p, int status, const char *code,
                                     const char *msg)
{
    p->state = ST_ERROR;
    p->status = status;
    p->code = code;
    mw_fail(&p->err, status == 503 ? MW_ENOMEM : MW_EMALFORMED, "%s", msg);
    return MW_HTTP_ERROR;
}

static enum mw_http_result bad_request(struct mw_http_parser *p, const char *msg)
{
    return fail_with(p, 400, "malformed", msg);
}

static enum mw_http_result no_memory(struct mw_http_parser *p)
{
    return fail_with(p, 503, "unavailable", "out of memory reading the request");
}

void mw_http_request_cleanup(struct mw_http_request *req)
{
    if (!req)
        return;
    mw_buf_free(&req->body);
    wipe(req->bearer, sizeof(req->bearer));
    memset(req, 0, sizeof(*req));
    mw_buf_init(&req->body, 0);
}

static void parser_clear_request_state(struct mw_http_parser *p)
{
    mw_http_request_cleanup(&p->req);
    p->status = 0;
    p->code = NULL;
    mw_error_clear(&p->err);
    p->state = ST_HEAD;
    if (p->line.data)
        wipe(p->line.data, p->line.len);
    mw_buf_reset(&p->line);
    p->head_len = 0;
    p->header_count = 0;
    p->have_request_line = false;
    p->have_host = false;
    p->have_cid = false;
    p->have_encoding = false;
    p->have_expect = false;
    p->expect_other = false;
    p->have_te = false;
    p->te_chunked_last = false;
    p->conn_close = false;
    p->conn_keep_alive = false;
    p->continue_taken = false;
}

void mw_http_parser_init(struct mw_http_parser *p, size_t header_max, size_t body_max)
{
    memset(p, 0, sizeof(*p));
    p->header_max = header_max ? header_max : MW_HTTP_HEADER_MAX;
    p->body_max = body_max ? body_max : MW_HTTP_BODY_MAX;
    assert(p->body_max <= SIZE_MAX / 2); /* mw_buf's ceiling */
    mw_buf_init(&p->line, p->header_max);
    mw_buf_init(&p->req.body, 0);
    parser_clear_request_state(p);
}

void mw_http_parser_set_head_check(struct mw_http_parser *p, mw_http_head_check_fn check, void *arg)
{
    p->head_check = check;
    p->head_check_arg = arg;
}

void mw_http_parser_cleanup(struct mw_http_parser *p)
{
    if (!p)
        return;
    parser_clear_request_state(p);
    mw_buf_free(&p->line);
}

void mw_http_parser_reset(struct mw_http_parser *p)
{
    parser_clear_request_state(p);
}

void mw_http_parser_take_request(struct mw_http_parser *p, struct mw_http_request *out)
{
    *out = p->req;
    /* The body's memory now belongs to *out; forget it here before clearing. */
    mw_buf_init(&p->req.body, 0);
    parser_clear_request_state(p);
}

bool mw_http_parser_take_continue(struct mw_http_parser *p)
{
    if (p->state != ST_BODY || !p->req.expect_continue || p->continue_taken)
        return false;
    p->continue_taken = true;
    return true;
}

bool mw_http_parser_in_body(const struct mw_http_parser *p)
{
    return p->state == ST_BODY;
}

/* request-line = method SP request-target SP HTTP-version, single spaces, nothing else. */
static enum mw_http_result parse_request_line(struct mw_http_parser *p, const uint8_t *s, size_t n)
{
    struct mw_http_request *req = &p->req;
    const uint8_t *sp1 = memchr(s, ' ', n);
    if (!sp1)
        return bad_request(p, "request line: expected 'METHOD /path HTTP/1.1'");
    size_t mlen = (size_t)(sp1 - s);
    if (mlen == 0)
        return bad_request(p, "request line: empty method");
    for (size_t i = 0; i < mlen; i++) {
        if (!is_tchar(s[i]))
            return bad_request(p, "request line: method is not a token");
    }
    if (mlen > MW_HTTP_METHOD_MAX)
        return fail_with(p, 501, "not_implemented", "method not implemented");

    const uint8_t *t = sp1 + 1;
    size_t rest = n - mlen - 1;
    const uint8_t *sp2 = memchr(t, ' ', rest);
    if (!sp2)
        return bad_request(p, "request line: expected 'METHOD /path HTTP/1.1'");
    size_t tlen = (size_t)(sp2 - t);
    const uint8_t *v = sp2 + 1;
    size_t vlen = rest - tlen - 1;

    if (tlen == 0)
        return bad_request(p, "request line: empty target");
    /* Origin-form only: absolute-form is for proxies and "*" for OPTIONS, neither of which
     * this server is; accepting them would give one request two possible hosts. */
    if (t[0] != '/')
        return bad_request(p, "request line: target must start with '/'");
    if (tlen > MW_HTTP_TARGET_MAX)
        return fail_with(p, 414, "uri_too_long", "request target too long");
    size_t qpos = tlen;
    for (size_t i = 0; i < tlen; i++) {
        uint8_t c = t[i];
        /* Visible ASCII only; '#' never belongs in a request (fragments stay client-side). */
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return bad_request(p, "request line: invalid byte in target");
        if (c == '%' && (i + 2 >= tlen || !is_hex(t[i + 1]) || !is_hex(t[i + 2])))
            return bad_request(p, "request line: bad percent-escape in target");
        if (c == '?' && qpos == tlen)
            qpos = i;
    }

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive. */
    if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit(v[5]) || v[6] != '.' ||
        !is_digit(v[7]))
        return bad_request(p, "request line: bad HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail_with(p, 505, "version_not_supported", "only HTTP/1.0 and HTTP/1.1");

    copy_text(req->method_token, s, mlen);
    if (mlen == 3 && memcmp(s, "GET", 3) == 0)
        req->method = MW_HTTP_GET;
    else if (mlen == 4 && memcmp(s, "HEAD", 4) == 0)
        req->method = MW_HTTP_HEAD;
    else if (mlen == 4 && memcmp(s, "POST", 4) == 0)
        req->method = MW_HTTP_POST;
    else
        req->method = MW_HTTP_OTHER;
    copy_text(req->path, t, qpos);
    if (qpos < tlen)
        copy_text(req->query, t + qpos + 1, tlen - qpos - 1);
    else
        req->query[0] = '\0';
    req->version_minor = v[7] - '0';
    p->have_request_line = true;
    return MW_HTTP_NEED_MORE;
}

/* Content-Length = 1*DIGIT. Sign, spaces, hex, lists ("5, 5") and overflow are refused:
 * two parsers reading one value differently is how bodies get smuggled. */
static enum mw_http_result parse_content_length(struct mw_http_parser *p, const uint8_t *s,
                                                size_t n)
{
    if (n == 0)
        return bad_request(p, "Content-Length: empty");
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return bad_request(p, "Content-Length: not a decimal number");
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return bad_request(p, "Content-Length: out of range");
        v = v * 10 + d;
    }
    if (p->req.has_content_length && p->req.content_length != v)
        return bad_request(p, "Content-Length: given twice with different values");
    p->req.has_content_length = true;
    p->req.content_length = v;
    return MW_HTTP_NEED_MORE;
}

/* Calls fn on each comma-separated element of a list header, OWS trimmed, empty ones
 * skipped (RFC 9110 section 5.6.1). */
static void for_each_element(const uint8_t *s, size_t n, struct mw_http_parser *p,
                             void (*fn)(struct mw_http_parser *, const uint8_t *, size_t))
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == ',') {
            const uint8_t *e = s + start;
            size_t elen = i - start;
            trim_ows(&e, &elen);
            if (elen > 0)
                fn(p, e, elen);
            start = i + 1;
        }
    }
}

static void connection_token(struct mw_http_parser *p, const uint8_t *s, size_t n)
{
    if (ieq(s, n, "close"))
        p->conn_close = true;
    else if (ieq(s, n, "keep-alive"))
        p->conn_keep_alive = true;
}

/* Only whether the last coding is chunked matters: that decides 411 against 501. */
static void te_coding(struct mw_http_parser *p, const uint8_t *s, size_t n)
{
    p->te_chunked_last = ieq(s, n, "chunked");
}

/* credentials = "Bearer" 1*SP token68; token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~"
 * / "+" / "/" ) *"=". Anything else is kept only as "invalid" (401 later, not 400: the head
 * itself is fine, and auth failures must look alike to the client). */
static void parse_authorization(struct mw_http_request *req, const uint8_t *s, size_t n)
{
    req->auth = MW_HTTP_AUTH_INVALID;
    if (n < 7 || !ieq(s, 6, "bearer") || s[6] != ' ')
        return;
    size_t i = 7;
    while (i < n && s[i] == ' ')
        i++;
    const uint8_t *tok = s + i;
    size_t tlen = n - i;
    if (tlen == 0 || tlen > MW_HTTP_BEARER_MAX)
        return;
    size_t k = 0;
    while (k < tlen &&
           (is_alpha(tok[k]) || is_digit(tok[k]) || (tok[k] != 0 && strchr("-._~+/", tok[k]))))
        k++;
    if (k == 0)
        return;
    while (k < tlen && tok[k] == '=')
        k++;
    if (k != tlen)
        return;
    copy_text(req->bearer, tok, tlen);
    req->auth = MW_HTTP_AUTH_BEARER;
}

static enum mw_http_result parse_header_line(struct mw_http_parser *p, uint8_t *line, size_t n)
{
    struct mw_http_request *req = &p->req;

    if (++p->header_count > MW_HTTP_HEADERS_MAX)
        return fail_with(p, 431, "headers_too_large", "too many header lines");
    /* obs-fold: a line starting with whitespace continues the previous one in old HTTP;
     * RFC 9112 lets a server refuse it, and the joined value is a smuggling vector. */
    if (is_ows(line[0]))
        return bad_request(p, "header: line folding (obs-fold) is not accepted");
    size_t nlen = 0;
    while (nlen < n && is_tchar(line[nlen]))
        nlen++;
    if (nlen == 0 || nlen == n || line[nlen] != ':')
        return bad_request(p, "header: expected 'Name: value' (no space before ':')");
    const uint8_t *name = line;
    const uint8_t *val = line + nlen + 1;
    size_t vlen = n - nlen - 1;
    for (size_t i = 0; i < vlen; i++) {
        if (!is_field_char(val[i]))
            return bad_request(p, "header: control character in value");
    }
    trim_ows(&val, &vlen);

    if (ieq(name, nlen, "content-length"))
        return parse_content_length(p, val, vlen);
    if (ieq(name, nlen, "transfer-encoding")) {
        p->have_te = true;
        for_each_element(val, vlen, p, te_coding);
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "connection")) {
        for_each_element(val, vlen, p, connection_token);
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "host")) {
        if (p->have_host)
            return bad_request(p, "Host: given twice");
        if (vlen > MW_HTTP_HOST_MAX)
            return bad_request(p, "Host: too long");
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] <= 0x20 || val[i] >= 0x7f)
                return bad_request(p, "Host: invalid byte");
        }
        p->have_host = true;
        copy_text(req->host, val, vlen);
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "authorization")) {
        if (req->auth != MW_HTTP_AUTH_NONE)
            return bad_request(p, "Authorization: given twice");
        parse_authorization(req, val, vlen);
        /* The line buffer held the credential; do not leave it lying in reused memory. */
        wipe(line, n);
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "x-correlation-id")) {
        if (p->have_cid)
            return bad_request(p, "X-Correlation-ID: given twice");
        if (vlen > MW_HTTP_CORRELATION_ID_MAX)
            return bad_request(p, "X-Correlation-ID: longer than 64 bytes");
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] <= 0x20 || val[i] >= 0x7f || val[i] == '"' || val[i] == '\\')
                return bad_request(p, "X-Correlation-ID: only visible ASCII without '\"' "
                                      "and '\\'");
        }
        p->have_cid = true;
        copy_text(req->correlation_id, val, vlen);
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "content-encoding")) {
        /* A second header, or a list, means stacked codings, which we do not undo. */
        if (p->have_encoding)
            return fail_with(p, 415, "unsupported_encoding", "Content-Encoding: one coding only");
        p->have_encoding = true;
        if (vlen == 0 || ieq(val, vlen, "identity"))
            req->content_encoding = MW_HTTP_CODING_IDENTITY;
        else if (ieq(val, vlen, "gzip") || ieq(val, vlen, "x-gzip"))
            req->content_encoding = MW_HTTP_CODING_GZIP;
        else
            return fail_with(p, 415, "unsupported_encoding",
                             "Content-Encoding: only gzip or identity");
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "expect")) {
        if (ieq(val, vlen, "100-continue") && !p->have_expect)
            p->have_expect = true;
        else
            p->expect_other = true;
        return MW_HTTP_NEED_MORE;
    }
    if (ieq(name, nlen, "user-agent")) {
        size_t keep = vlen < MW_HTTP_USER_AGENT_MAX ? vlen : MW_HTTP_USER_AGENT_MAX;
        copy_text(req->user_agent, val, keep);
        return MW_HTTP_NEED_MORE;
    }
    return MW_HTTP_NEED_MORE;
}

/* The empty line arrived: decide framing and every refusal that needs no body. */
static enum mw_http_result finish_head(struct mw_http_parser *p)
{
    struct mw_http_request *req = &p->req;

    if (req->version_minor == 1 && !p->have_host)
        return bad_request(p, "Host header missing (required in HTTP/1.1)");
    if (p->have_te && req->has_content_length)
        return bad_request(p, "both Transfer-Encoding and Content-Length");
    if (p->have_te) {
        if (p->te_chunked_last)
            return fail_with(p, 411, "length_required",
                             "chunked upload not accepted: send Content-Length");
        return fail_with(p, 501, "not_implemented", "Transfer-Encoding not implemented");
    }
    if (req->method == MW_HTTP_POST && !req->has_content_length)
        return fail_with(p, 411, "length_required", "Content-Length required");
    if (req->content_length > p->body_max)
        return fail_with(p, 413, "too_large", "request body too large");
    /* RFC 9110 section 10.1.1: an HTTP/1.0 client cannot expect 100, so ignore it there. */
    if (req->version_minor == 1 && p->expect_other)
        return fail_with(p, 417, "expectation_failed", "only Expect: 100-continue");

    if (req->version_minor == 1)
        req->keep_alive = !p->conn_close;
    else
        req->keep_alive = p->conn_keep_alive && !p->conn_close;
    req->expect_continue = req->version_minor == 1 && p->have_expect && req->content_length > 0;

    if (p->head_check) {
        const char *code = "refused", *message = "request refused";
        int status = p->head_check(p->head_check_arg, req, &code, &message);
        if (status != 0)
            return fail_with(p, status, code, message);
    }
    if (req->content_length == 0) {
        p->state = ST_DONE;
        return MW_HTTP_DONE;
    }
    /* One allocation of the announced size (already bounded by body_max), so the body never
     * grows by doubling past what was announced. */
    size_t clen = (size_t)req->content_length;
    mw_buf_init(&req->body, clen);
    if (mw_buf_reserve(&req->body, clen) != MW_OK)
        return no_memory(p);
    p->state = ST_BODY;
    return MW_HTTP_NEED_MORE;
}

/* One whole line (its LF already taken) is in p->line. */
static enum mw_http_result process_line(struct mw_http_parser *p)
{
    uint8_t *s = p->line.data;
    size_t n = p->line.len;

    /* CRLF only. A bare LF or a CR elsewhere is read as a line end by some servers and
     * proxies and not by others; refusing both keeps our view of the framing the only one. */
    if (n == 0 || s[n - 1] != '\r')
        return bad_request(p, "line not terminated by CRLF");
    n--;
    if (memchr(s, '\r', n))
        return bad_request(p, "bare CR in request head");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0')
            return bad_request(p, "NUL in request head");
    }

    if (n == 0) {
        /* RFC 9112 section 2.2: ignore empty lines before the request line (some clients
         * send a stray CRLF after a body); they still count towards header_max. */
        if (!p->have_request_line)
            return MW_HTTP_NEED_MORE;
        return finish_head(p);
    }
    if (!p->have_request_line)
        return parse_request_line(p, s, n);
    return parse_header_line(p, s, n);
}

static enum mw_http_result feed_head(struct mw_http_parser *p, const uint8_t *data, size_t len,
                                     size_t *used)
{
    size_t i = 0;
    while (i < len && p->state == ST_HEAD) {
        const uint8_t *lf = memchr(data + i, '\n', len - i);
        size_t seg = lf ? (size_t)(lf - (data + i)) + 1 : len - i;
        if (seg > p->header_max - p->head_len) {
            *used = i;
            return fail_with(p, 431, "headers_too_large", "request head too large");
        }
        size_t take = lf ? seg - 1 : seg; /* the LF itself is not stored */
        if (mw_buf_append(&p->line, data + i, take) != MW_OK) {
            *used = i;
            return no_memory(p);
        }
        p->head_len += seg;
        i += seg;
        if (!lf)
            break;
        enum mw_http_result r = process_line(p);
        mw_buf_reset(&p->line);
        if (r != MW_HTTP_NEED_MORE) {
            *used = i;
            return r;
        }
    }
    *used = i;
    return MW_HTTP_NEED_MORE;
}

enum mw_http_result mw_http_parser_feed(struct mw_http_parser *p, const void *data, size_t len,
                                        size_t *consumed_out)
{
    const uint8_t *in = data;
    size_t used = 0;
    enum mw_http_result r = MW_HTTP_NEED_MORE;

    *consumed_out = 0;
    if (p->state == ST_DONE)
        return MW_HTTP_DONE;
    if (p->state == ST_ERROR)
        return MW_HTTP_ERROR;

    if (p->state == ST_HEAD) {
        r = feed_head(p, in, len, &used);
        if (r != MW_HTTP_NEED_MORE) {
            *consumed_out = used;
            return r;
        }
    }
    if (p->state == ST_BODY) {
        struct mw_buf *body = &p->req.body;
        size_t want = (size_t)p->req.content_length - body->len;
        size_t take = len - used < want ? len - used : want;
        /* Cannot fail: the whole body was reserved in finish_head. */
        if (mw_buf_append(body, in + used, take) != MW_OK) {
            *consumed_out = used;
            return no_memory(p);
        }
        used += take;
        if (body->len == (size_t)p->req.content_length) {
            p->state = ST_DONE;
            r = MW_HTTP_DONE;
        }
    }
    *consumed_out = used;
    return r;
}

/* ---- query parameters ---- */

/* Decodes [s, s + n) into out. Returns MW_OK, MW_EMALFORMED or MW_ETOOBIG. */
static enum mw_err decode_value(const char *s, size_t n, char *out, size_t outsize,
                                struct mw_error *err)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3 || !is_hex((uint8_t)s[i + 1]) || !is_hex((uint8_t)s[i + 2]))
                return mw_fail(err, MW_EMALFORMED, "query: bad percent-escape");
            c = (uint8_t)(hex_value((uint8_t)s[i + 1]) * 16 + hex_value((uint8_t)s[i + 2]));
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return mw_fail(err, MW_EMALFORMED, "query: control character in value");
        if (o + 1 >= outsize)
            return mw_fail(err, MW_ETOOBIG, "query: value longer than %zu bytes", outsize - 1);
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return MW_OK;
}

enum mw_err mw_http_query_param(const struct mw_http_request *req, const char *name, char *out,
                                size_t outsize, struct mw_error *err)
{
    if (outsize == 0)
        return mw_fail(err, MW_EINVAL, "query: no room for the value");
    out[0] = '\0';
    size_t name_len = strlen(name);
    const char *q = req->query;
    const char *found = NULL;
    size_t found_len = 0;

    while (*q) {
        const char *amp = strchr(q, '&');
        size_t plen = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        if (plen > 0 && klen == name_len && memcmp(q, name, klen) == 0) {
            if (found)
                return mw_fail(err, MW_EMALFORMED, "query: parameter '%s' given twice", name);
            found = eq ? eq + 1 : q + plen;
            found_len = eq ? plen - klen - 1 : 0;
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    if (!found)
        return mw_fail(err, MW_ENOTFOUND, "query: no parameter '%s'", name);
    enum mw_err rc = decode_value(found, found_len, out, outsize, err);
    if (rc != MW_OK)
        out[0] = '\0';
    return rc;
}

/* ---- responses ---- */

/* RFC 9110 section 15 phrases (413 and 422 under their RFC 9110 names). */
static const struct {
    int status;
    const char *text;
} status_texts[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *mw_http_status_text(int status)
{
    for (size_t i = 0; i < sizeof(status_texts) / sizeof(status_texts[0]); i++) {
        if (status_texts[i].status == status)
            return status_texts[i].text;
    }
    return "Unknown";
}

/* Writes v (0 <= v < 10^width) as width decimal digits, zero-padded. */
static void put_digits(char *dst, int v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        dst[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

enum mw_err mw_http_date_format(int64_t unix_seconds, char out[MW_HTTP_DATE_SIZE])
{
    /* Names spelled out rather than strftime("%a"), which follows the locale. */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t t = (time_t)unix_seconds;

    out[0] = '\0';
    if ((int64_t)t != unix_seconds || !gmtime_r(&t, &tm))
        return MW_EINVAL;
    if (tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 ||
        tm.tm_sec < 0 || tm.tm_sec > 60 || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
        return MW_EINVAL;
    /* Fixed layout "Www, DD Mon YYYY HH:MM:SS GMT"; every field was range-checked above. */
    int year = tm.tm_year + 1900;
    memcpy(out, "Www, DD Mon YYYY HH:MM:SS GMT", MW_HTTP_DATE_SIZE);
    memcpy(out, days[tm.tm_wday], 3);
    put_digits(out + 5, tm.tm_mday, 2);
    memcpy(out + 8, months[tm.tm_mon], 3);
    put_digits(out + 12, year, 4);
    put_digits(out + 17, tm.tm_hour, 2);
    put_digits(out + 20, tm.tm_min, 2);
    put_digits(out + 23, tm.tm_sec, 2);
    return MW_OK;
}

/* A header value we write ourselves: visible ASCII and spaces, no CR/LF to split lines. */
static bool header_safe(const char *s)
{
    for (; *s; s++) {
        uint8_t c = (uint8_t)*s;
        if (c < 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

static bool extra_headers_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0)
        return true;
    if (n < 2 || h[n - 2] != '\r' || h[n - 1] != '\n')
        return false;
    /* Every LF must end a CRLF and no line may be empty (that would end the head early). */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)h[i];
        if (c == '\n' && (i == 0 || h[i - 1] != '\r'))
            return false;
        if (c == '\r' && (i + 1 >= n || h[i + 1] != '\n'))
            return false;
        if (c == '\r' && (i == 0 || h[i - 1] == '\n'))
            return false;
        if (c != '\r' && c != '\n' && c != '\t' && (c < 0x20 || c == 0x7f))
            return false;
    }
    return true;
}

enum mw_err mw_http_response_write(struct mw_buf *out, int status, const char *content_type,
                                   const char *correlation_id, bool keep_alive,
                                   const char *extra_headers, const void *body, size_t len)
{
    size_t start = out->len;
    enum mw_err rc = MW_OK;
    char date[MW_HTTP_DATE_SIZE];

    if (status < 200 || status > 599)
        return MW_EINVAL;
    if (content_type && !header_safe(content_type))
        return MW_EINVAL;
    if (correlation_id && (!header_safe(correlation_id) || strchr(correlation_id, ' ')))
        return MW_EINVAL;
    if (extra_headers && !extra_headers_ok(extra_headers))
        return MW_EINVAL;
    if (mw_http_date_format((int64_t)time(NULL), date) != MW_OK)
        return MW_EINVAL;

    rc = mw_buf_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, mw_http_status_text(status),
                       date);
    if (rc == MW_OK && content_type)
        rc = mw_buf_printf(out, "Content-Type: %s\r\n", content_type);
    /* 204 carries no body and must not announce one (RFC 9110 section 8.6). */
    if (rc == MW_OK && status != 204)
        rc = mw_buf_printf(out, "Content-Length: %zu\r\n", len);
    if (rc == MW_OK)
        rc = mw_buf_append_str(out,
                               keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (rc == MW_OK && correlation_id && correlation_id[0])
        rc = mw_buf_printf(out, "X-Correlation-ID: %s\r\n", correlation_id);
    /* API answers are per device and per moment: no cache may keep or replay them. */
    if (rc == MW_OK)
        rc = mw_buf_append_str(out, "Cache-Control: no-store\r\n");
    if (rc == MW_OK && extra_headers)
        rc = mw_buf_append_str(out, extra_headers);
    if (rc == MW_OK)
        rc = mw_buf_append(out, "\r\n", 2);
    if (rc == MW_OK && body && len > 0 && status != 204)
        rc = mw_buf_append(out, body, len);
    if (rc != MW_OK) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return rc;
}

/* Appends s as the inside of a JSON string. Control characters are escaped, and bytes that do
 * not form UTF-8 become U+FFFD, so the body is valid JSON whatever text went in. */
static enum mw_err json_escape(struct mw_buf *b, const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str);
    enum mw_err rc = MW_OK;

    for (size_t i = 0; i < n && rc == MW_OK;) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            rc = mw_buf_append(b, esc, 2);
            i++;
        } else if (c == '\n') {
            rc = mw_buf_append(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            rc = mw_buf_append(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            rc = mw_buf_append(b, "\\t", 2);
            i++;
        } else if (c < 0x20) {
            rc = mw_buf_printf(b, "\\u%04x", (unsigned)c);
            i++;
        } else if (c < 0x80) {
            rc = mw_buf_append(b, &s[i], 1);
            i++;
        } else {
            /* Well-formed UTF-8 only (RFC 3629): no overlongs, no surrogates, <= U+10FFFF. */
            size_t need = 0;
            uint32_t cp = 0;
            uint32_t min = 0;
            if (c >= 0xc2 && c <= 0xdf) {
                need = 1;
                cp = c & 0x1fu;
                min = 0x80;
            } else if (c >= 0xe0 && c <= 0xef) {
                need = 2;
                cp = c & 0x0fu;
                min = 0x800;
            } else if (c >= 0xf0 && c <= 0xf4) {
                need = 3;
                cp = c & 0x07u;
                min = 0x10000;
            }
            size_t k = 0;
            if (need > 0 && n - i > need) {
                for (k = 1; k <= need; k++) {
                    if ((s[i + k] & 0xc0u) != 0x80u)
                        break;
                    cp = (cp << 6) | (s[i + k] & 0x3fu);
                }
            }
            if (need > 0 && k == need + 1 && cp >= min && cp <= 0x10ffff &&
                !(cp >= 0xd800 && cp <= 0xdfff)) {
                rc = mw_buf_append(b, &s[i], need + 1);
                i += need + 1;
            } else {
                rc = mw_buf_append_str(b, "\\ufffd");
                i++;
            }
        }
    }
    return rc;
}

enum mw_err mw_http_error_write(struct mw_buf *out, int status, const char *code,
                                const char *message, const char *correlation_id, bool keep_alive,
                                const char *extra_headers)
{
    struct mw_buf body;
    enum mw_err rc;

    /* The body is built first because the head announces its length. Its own ceiling is the
     * output's: an answer that cannot fit there fails the same way either way. */
    mw_buf_init(&body, out->limit);
    rc = mw_buf_append_str(&body, "{\"error\":{\"code\":\"");
    if (rc == MW_OK)
        rc = json_escape(&body, code);
    if (rc == MW_OK)
        rc = mw_buf_append_str(&body, "\",\"message\":\"");
    if (rc == MW_OK)
        rc = json_escape(&body, message);
    if (rc == MW_OK)
        rc = mw_buf_append_str(&body, "\"}}");
    if (rc == MW_OK)
        rc = mw_http_response_write(out, status, "application/json", correlation_id, keep_alive,
                                    extra_headers, body.data, body.len);
    mw_buf_free(&body);
    return rc;
}
