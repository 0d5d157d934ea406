/* http.h - HTTP/1.1 for the sync endpoint: an incremental request parser shaped for a
 * non-blocking loop, and the response serializer (plain and JSON error answers).
 *
 * The parser is strict on purpose. Anything two HTTP implementations could read differently
 * (the classic request-smuggling gaps) is refused instead of guessed: bare LF or bare CR line
 * ends, obs-fold continuation lines, whitespace between a header name and its colon, control
 * characters in values, Content-Length with anything but digits, duplicate Content-Length
 * headers that disagree, Transfer-Encoding next to Content-Length. Bodies are framed by
 * Content-Length only: chunked uploads get 411, so the server never has to decode chunks.
 *
 * Memory: one parser holds at most header_max bytes of head (one line at a time) plus the
 * body, whose size is checked against body_max from Content-Length before one byte of it is
 * read or allocated. Nothing else grows.
 *
 * Thread safety: a parser and its request belong to one thread at a time. A request moved out
 * with mw_http_parser_take_request() can be handed to another thread. The response writers
 * and helpers are any thread. */
#ifndef MIDWAY_SERVER_HTTP_H
#define MIDWAY_SERVER_HTTP_H
#include "bounds.h"
#include "buf.h"
#include "midway/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default bound on a request head: request line + header lines + the empty line, CRLFs
 * included. 16 KiB holds any head a real client sends (curl's are a few hundred bytes)
 * while keeping what an idle or hostile connection can pin small. Past it: 431. */
#define MW_HTTP_HEADER_MAX 16384u

/* Default bound on a request body as sent (before gzip inflation). Past it: 413. */
#define MW_HTTP_BODY_MAX MW_PUSH_BODY_MAX

/* Header lines in one request. Real clients send about ten; past 100: 431. */
#define MW_HTTP_HEADERS_MAX 100u

/* A method token. The longest standard method (OPTIONS, CONNECT) has 7 letters; anything
 * over 16 is not a method we could implement. Past it: 501. */
#define MW_HTTP_METHOD_MAX 16u

/* The request target (path and query). Our URLs are short; a pull cursor is under 100 bytes.
 * 2 KiB leaves room without letting a target eat the head. Past it: 414. */
#define MW_HTTP_TARGET_MAX 2048u

/* X-Correlation-ID as received: a UUID is 36 bytes; 64 allows other ID schemes. It is echoed
 * in the response and written in logs, so only visible ASCII without '"' and '\' is taken.
 * Longer or other bytes: 400. */
#define MW_HTTP_CORRELATION_ID_MAX 64u

/* The bearer token's bytes. Tokens we issue are far shorter; a longer one cannot match, so
 * it is not kept (the request is marked MW_HTTP_AUTH_INVALID and the server answers 401). */
#define MW_HTTP_BEARER_MAX 256u

/* Host header value: a DNS name is at most 253 bytes, plus ":port". Longer: 400. */
#define MW_HTTP_HOST_MAX 300u

/* User-Agent is only logged, so a longer one is cut rather than refused. */
#define MW_HTTP_USER_AGENT_MAX 128u

/* What the caller writes when mw_http_parser_take_continue() says so. */
#define MW_HTTP_CONTINUE "HTTP/1.1 100 Continue\r\n\r\n"

/* "Sun, 06 Nov 1994 08:49:37 GMT" and its NUL. */
#define MW_HTTP_DATE_SIZE 30u

enum mw_http_method {
    MW_HTTP_OTHER = 0, /* any other token; the router answers 405 (see method_token) */
    MW_HTTP_GET,
    MW_HTTP_HEAD,
    MW_HTTP_POST,
};

/* Content-Encoding of the body. Any other value is refused by the parser with 415. */
enum mw_http_coding {
    MW_HTTP_CODING_IDENTITY = 0, /* absent or "identity" */
    MW_HTTP_CODING_GZIP,         /* "gzip" or "x-gzip": inflate with gunzip.h */
};

enum mw_http_auth {
    MW_HTTP_AUTH_NONE = 0, /* no Authorization header: 401 where a token is needed */
    MW_HTTP_AUTH_BEARER,   /* bearer holds the token */
    MW_HTTP_AUTH_INVALID,  /* present but not "Bearer <token68>" within bounds: 401 */
};

/* One parsed request. Every text field is NUL-terminated and already validated; all of it is
 * owned by the struct (no pointers into the caller's read buffer). */
struct mw_http_request {
    enum mw_http_method method;
    char method_token[MW_HTTP_METHOD_MAX + 1]; /* as sent, case-sensitive: "GET", "PUT" */
    char path[MW_HTTP_TARGET_MAX + 1];         /* raw (not decoded), starts with '/' */
    char query[MW_HTTP_TARGET_MAX + 1];        /* raw text after '?', "" when none */
    int version_minor;                         /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    bool keep_alive;      /* Connection header applied to the version's default */
    bool expect_continue; /* Expect: 100-continue on an HTTP/1.1 request */
    bool has_content_length;
    uint64_t content_length; /* valid when has_content_length */
    enum mw_http_coding content_encoding;
    enum mw_http_auth auth;
    /* The bearer token (MW_HTTP_AUTH_BEARER only). A credential: never log it, never copy it
     * into an error message. mw_http_request_cleanup() wipes it. */
    char bearer[MW_HTTP_BEARER_MAX + 1];
    char correlation_id[MW_HTTP_CORRELATION_ID_MAX + 1]; /* "" when the client sent none */
    char host[MW_HTTP_HOST_MAX + 1];
    char user_agent[MW_HTTP_USER_AGENT_MAX + 1]; /* cut at the bound; for logs, quoted */
    struct mw_buf body; /* exactly content_length bytes (NUL-terminated past len) */
};

enum mw_http_result {
    MW_HTTP_NEED_MORE = 0, /* every byte given was taken; feed more when they arrive */
    MW_HTTP_DONE,          /* a whole request is in parser->req */
    MW_HTTP_ERROR,         /* answer parser->status with parser->code, then close */
};

/* Decides on a complete, well-framed head before one byte of its body is allocated or read
 * (so a request that will be refused anyway costs neither memory nor a read of its body).
 * Returns 0 to go on, or the HTTP status to refuse the request with; *code and *message are
 * then the JSON error's code and text (static strings, sent to the client). */
typedef int (*mw_http_head_check_fn)(void *arg, const struct mw_http_request *req,
                                     const char **code, const char **message);

/* Caller-owned (embed it in the connection). Read req, status, code and err; the other
 * fields are the parser's own. */
struct mw_http_parser {
    struct mw_http_request req;
    int status;          /* MW_HTTP_ERROR: the HTTP status to answer (400, 411, 413, ...) */
    const char *code;    /* MW_HTTP_ERROR: machine-readable error code for the JSON body */
    struct mw_error err; /* MW_HTTP_ERROR: what was wrong, safe to send and log (no token) */

    /* internal */
    size_t header_max;
    size_t body_max;
    int state;
    struct mw_buf line; /* the head line being received, without its LF */
    size_t head_len;    /* head bytes taken so far, CRLFs included */
    size_t header_count;
    bool have_request_line;
    bool have_host;
    bool have_cid;
    bool have_encoding;
    bool have_expect;
    bool expect_other;
    bool have_te;
    bool te_chunked_last;
    bool conn_close;
    bool conn_keep_alive;
    bool continue_taken;
    mw_http_head_check_fn head_check; /* may be NULL */
    void *head_check_arg;
};

/* Prepares p for its first request. header_max and body_max of 0 mean MW_HTTP_HEADER_MAX and
 * MW_HTTP_BODY_MAX; body_max must be at most SIZE_MAX / 2. Allocates nothing. */
void mw_http_parser_init(struct mw_http_parser *p, size_t header_max, size_t body_max);

/* Installs check (NULL removes it), called for every request p parses from now on, after the
 * head passed the parser's own checks (400, 411, 413, 417 come first) and before the body.
 * A refusal ends in MW_HTTP_ERROR with the status, code and message check gave. */
void mw_http_parser_set_head_check(struct mw_http_parser *p, mw_http_head_check_fn check,
                                   void *arg);

/* Releases everything p holds (the current request included). p may be reused after init. */
void mw_http_parser_cleanup(struct mw_http_parser *p);

/* Forgets the current request (or error) so the next one can be parsed on a keep-alive
 * connection. Keeps the line buffer's memory, frees the body. */
void mw_http_parser_reset(struct mw_http_parser *p);

/* Takes up to len bytes of the connection's input. *consumed_out gets how many were used:
 * the parser never takes a byte past the end of the current request, so whatever follows a
 * MW_HTTP_DONE (a pipelined request) stays with the caller, to feed after reset.
 *  MW_HTTP_NEED_MORE: all len bytes were used; the request is not complete yet.
 *  MW_HTTP_DONE: p->req is complete. Feeding again before reset takes nothing and says DONE.
 *  MW_HTTP_ERROR: p->status / p->code / p->err say what to answer (always with
 *    Connection: close: the framing can no longer be trusted). Statuses: 400 bad syntax or
 *    framing, 411 chunked upload or POST without Content-Length, 413 Content-Length over
 *    body_max, 414 target over MW_HTTP_TARGET_MAX, 415 Content-Encoding other than gzip or
 *    identity, 417 Expect other than 100-continue, 431 head over header_max or over
 *    MW_HTTP_HEADERS_MAX lines, 501 method token too long or a transfer coding other than
 *    chunked, 505 an HTTP version other than 1.0 or 1.1, 503 out of memory (err.code
 *    MW_ENOMEM). Feeding again takes nothing and says ERROR. */
enum mw_http_result mw_http_parser_feed(struct mw_http_parser *p, const void *data, size_t len,
                                        size_t *consumed_out);

/* True exactly once per request when the client asked for 100-continue, the head was
 * accepted (so 413 and friends were not due) and the body has not all arrived: the caller
 * then writes MW_HTTP_CONTINUE before reading on. */
bool mw_http_parser_take_continue(struct mw_http_parser *p);

/* True while the head has been accepted and body bytes are still due: the time from here on
 * is the body's (the server's body-timeout), not the head's. */
bool mw_http_parser_in_body(const struct mw_http_parser *p);

/* After MW_HTTP_DONE: moves the request into *out (the body's memory goes with it) so it can
 * outlive the parser or go to another thread; the caller releases it with
 * mw_http_request_cleanup(). p is reset for the next request. */
void mw_http_parser_take_request(struct mw_http_parser *p, struct mw_http_request *out);

/* Frees the body and wipes the bearer token. NULL-safe; the request is left empty. */
void mw_http_request_cleanup(struct mw_http_request *req);

/* Finds query parameter name in req->query ("a=1&b=x%2Fy"), percent-decodes its value
 * ('+' is a space, as in HTML forms) into out (outsize bytes, NUL included). A parameter
 * given without '=' has the value "". name is compared undecoded.
 * Errors: MW_ENOTFOUND (absent; out is ""), MW_EMALFORMED (a bad %-escape, a decoded control
 * character or NUL, or the parameter given twice: which one would be meant is ambiguous),
 * MW_ETOOBIG (the decoded value needs more than outsize - 1 bytes), MW_EINVAL (outsize 0).
 * On failure out is "" (when outsize > 0) and *err says why (safe to send to the client). */
MW_NODISCARD enum mw_err mw_http_query_param(const struct mw_http_request *req, const char *name,
                                             char *out, size_t outsize, struct mw_error *err);

/* Appends a complete HTTP/1.1 response to out: status line, Date (IMF-fixdate), Content-Type
 * (left out when content_type is NULL), Content-Length, Connection (keep-alive or close),
 * X-Correlation-ID (left out when correlation_id is NULL or ""), Cache-Control: no-store,
 * then extra_headers verbatim (NULL or whole lines, each ending in "\r\n", such as
 * "Retry-After: 1\r\n"), the empty line and the body. For an answer to HEAD pass body NULL
 * with len the size GET would send: Content-Length says len and no body bytes follow.
 * Errors: MW_EINVAL (status outside 200..599, a correlation_id or content_type with bytes a
 * header cannot carry, extra_headers not ending in "\r\n"), MW_ETOOBIG (past out's limit),
 * MW_ENOMEM. On failure out is unchanged. */
MW_NODISCARD enum mw_err mw_http_response_write(struct mw_buf *out, int status,
                                                const char *content_type,
                                                const char *correlation_id, bool keep_alive,
                                                const char *extra_headers, const void *body,
                                                size_t len);

/* The same with a JSON error body {"error":{"code":"<code>","message":"<message>"}} and
 * Content-Type application/json. code and message are escaped for JSON (quotes, backslashes,
 * control characters; bytes that are not UTF-8 become U+FFFD), so text quoted from input is
 * safe in them. Same errors as mw_http_response_write. */
MW_NODISCARD enum mw_err mw_http_error_write(struct mw_buf *out, int status, const char *code,
                                             const char *message, const char *correlation_id,
                                             bool keep_alive, const char *extra_headers);

/* The reason phrase for status ("Not Found"); "Unknown" for codes not in the table. */
const char *mw_http_status_text(int status);

/* Formats unix_seconds (UTC) as an RFC 7231 IMF-fixdate into out, independent of the locale.
 * Errors: MW_EINVAL (a time gmtime cannot represent); out is "" then. */
MW_NODISCARD enum mw_err mw_http_date_format(int64_t unix_seconds, char out[MW_HTTP_DATE_SIZE]);

#endif
