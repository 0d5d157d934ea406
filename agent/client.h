/* client.h - the agent's HTTPS client (libcurl): one easy handle kept for the agent's life, so
 * every request of a sync (and of later syncs) goes over the same TLS connection while the
 * server keeps it open. The server is always verified against the configured CA file, and
 * only against it: peer and host verification are set on every request and there is no option
 * to turn them off, and libcurl's built-in CA directory (CURLOPT_CAPATH, /etc/ssl/certs on
 * Debian) is cleared, so a certificate from some public CA is not enough. A proxy is used
 * only when configured: the environment's proxy variables are ignored. At debug log level,
 * libcurl's informational lines (connection, TLS, "CAfile:" and "CApath:") go to the log;
 * headers and bodies never do.
 * Answers are read into a buffer with a ceiling, so a hostile or broken server cannot grow the
 * agent's memory.
 * Thread safety: one struct mw_client per thread (a curl easy handle is not shared); a request
 * started with mw_client_start runs on a thread of its own until mw_client_finish. */
#ifndef MIDWAY_AGENT_CLIENT_H
#define MIDWAY_AGENT_CLIENT_H
#include "buf.h"
#include "midway/agent.h"
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

/* Bearer tokens are printable ASCII; anything longer than this is not one of ours. */
#define MW_CLIENT_TOKEN_MAX          1024
/* Retry-After values above this are treated as this: a server asking a gateway to wait more
 * than an hour is misconfigured, and the daemon's own interval takes over. */
#define MW_CLIENT_RETRY_AFTER_MAX_MS 3600000

struct mw_client;

/* A request. Every pointer is borrowed for the duration of mw_client_request. */
struct mw_client_req {
    const char *url;            /* full https URL */
    const char *ca_file;        /* PEM bundle the server's certificate must chain to, and the
                                   only one: no CA directory, no system bundle */
    const char *proxy;          /* proxy URL, or NULL: connect directly, whatever the
                                   environment's proxy variables say */
    const char *token;          /* bearer token; sent only in the Authorization header */
    const char *correlation_id; /* sent as X-Correlation-ID */
    const void *body;           /* POST body, or NULL for a GET */
    size_t body_len;
    int gzip;            /* body is gzip: send Content-Encoding: gzip */
    size_t answer_limit; /* ceiling on the answer body */
    int32_t connect_timeout_ms;
    int32_t request_timeout_ms;
    mw_agent_stop_fn stop; /* may be NULL; asked during the transfer, non-zero aborts it */
    void *stop_ctx;
};

/* The answer. body is the caller's buffer: mw_client_request resets it and sets its limit. */
struct mw_client_resp {
    long status;             /* HTTP status; 0 when no answer came */
    struct mw_buf body;      /* the answer body (NUL-terminated) */
    int64_t retry_after_ms;  /* Retry-After (seconds form), 0 when absent */
    char correlation_id[65]; /* the X-Correlation-ID the server echoed, "" when absent */
    int not_sent;            /* on MW_ENET: 1 when the request certainly never reached the
                                server (no connection, TLS handshake failed), 0 when it may
                                have been received and acted on */
};

/* Makes a client. Errors: MW_ENOMEM, MW_EIO (libcurl could not be initialised). */
MW_NODISCARD enum mw_err mw_client_new(struct mw_client **out, struct mw_error *err);

/* Closes the connection and frees c, after waiting for a started request. NULL does nothing. */
void mw_client_free(struct mw_client *c);

/* Sends req and reads the whole answer into resp. Any HTTP status is MW_OK (the caller decides
 * what it means); resp->status tells it.
 * Errors: MW_ENET (no connection, TLS failure including a certificate the CA does not vouch
 * for, timeout, connection cut, or stopped by req->stop), MW_ETOOBIG (the answer passed
 * answer_limit), MW_EINVAL (a NULL field, a token that is not printable ASCII), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_client_request(struct mw_client *c, const struct mw_client_req *req,
                                           struct mw_client_resp *resp, struct mw_error *err);

/* Starts req on a thread of its own and returns at once; mw_client_finish waits for it and
 * returns what mw_client_request would have returned. Meanwhile the caller can work on the next
 * batch while the server works on this one. req (copied, but its pointers borrowed) and resp
 * stay the caller's until mw_client_finish, and c takes no other request until then. Signals
 * are blocked on that thread, so the caller's thread keeps receiving them. When no thread can
 * be made, the request runs here and now, and mw_client_finish returns its result.
 * Errors: MW_EINVAL (a NULL argument, or a request already started). */
MW_NODISCARD enum mw_err mw_client_start(struct mw_client *c, const struct mw_client_req *req,
                                         struct mw_client_resp *resp, struct mw_error *err);

/* Waits for the request mw_client_start started; its result and error, as mw_client_request.
 * MW_EINVAL when none was started. */
MW_NODISCARD enum mw_err mw_client_finish(struct mw_client *c, struct mw_error *err);

#endif
