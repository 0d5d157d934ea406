/* chaosproxy.h - a fault-injecting HTTPS proxy for the fault tests. It listens on a free
 * loopback port and terminates TLS with the server's own certificate and key, so an agent that
 * verifies the server against its CA cannot tell the proxy from the server. It reads each
 * HTTP/1.1 request, forwards it to the real server with libcurl (verifying the server's CA),
 * and then does to that request what the test asked: pass the answer on, lose it, hold it,
 * truncate or corrupt its body, refuse the request without forwarding it, or cut the
 * connection while the server is still working. Because it sees whole requests and answers,
 * a fault lands on exactly the request the test means (the third push, every pull), and it can
 * keep copies of requests so a test can replay them later.
 * Failures of the environment (socket, thread, certificate) print and exit(2).
 * Thread safety: the control calls are for the test's threads (any thread); the proxy runs one
 * thread per client connection plus an acceptor. */
#ifndef MIDWAY_CHAOSPROXY_H
#define MIDWAY_CHAOSPROXY_H
#include <stddef.h>

/* What happens to one request. */
enum chaos_fault {
    CHAOS_PASS = 0,      /* forwarded, the answer passed on unchanged */
    CHAOS_DROP_REQUEST,  /* not forwarded: the client connection is reset after the request
                            was read, so the server never sees it */
    CHAOS_CUT_ANSWER,    /* forwarded; once the server's whole answer is in (the server has
                            committed), the client connection is reset without it */
    CHAOS_CUT_MIDWAY,    /* forwarded; after a random delay (chaosproxy_midway, by default
                            1..250 ms) the proxy gives up on the server (closing that
                            connection too) and resets the client, so the server may or may
                            not have finished */
    CHAOS_HOLD_ANSWER,   /* forwarded; once the whole answer is in, the client connection
                            stays open and silent until chaosproxy_release */
    CHAOS_TRUNCATE_BODY, /* answered with the first half of the body and a Content-Length
                            saying so: well-formed HTTP, truncated JSON */
    CHAOS_SHORT_BODY,    /* the whole body's Content-Length announced, half of it sent, then
                            the connection reset */
    CHAOS_CORRUPT_BODY,  /* same length, but bytes in the middle of the body replaced by bytes
                            that are not JSON inside or outside a string */
    CHAOS_WRONG_SHAPE,   /* the body replaced by valid JSON of the wrong shape */
    CHAOS_REFUSE,        /* not forwarded: answered 503 with Retry-After: 1, which promises
                            that nothing was applied */
    CHAOS_FAULT_COUNT
};

struct chaosproxy;

/* Starts a proxy to https://127.0.0.1:target_port. cert and key are the server's certificate
 * chain and private key (PEM; DATA/tls/server.pem and server.key), ca the CA the server is
 * verified against. The paths are copied. */
struct chaosproxy *chaosproxy_start(const char *cert, const char *key, const char *ca,
                                    int target_port);

int chaosproxy_port(const struct chaosproxy *p);

/* One rule per proxy, replacing the previous one: of the requests whose path starts with
 * path_prefix, the next `skip` pass and the `count` after them get fault (count < 0: every one
 * from then on). Requests that do not match pass. */
void chaosproxy_rule(struct chaosproxy *p, const char *path_prefix, enum chaos_fault fault,
                     int skip, int count);

/* Replaces the rule: each request whose path starts with path_prefix gets, with probability
 * permille / 1000, one of faults[0..n) chosen at random (seeded by seed); the others pass. */
void chaosproxy_random(struct chaosproxy *p, const char *path_prefix, int permille,
                       const enum chaos_fault *faults, size_t n, unsigned seed);

/* The window of CHAOS_CUT_MIDWAY: a delay of min_ms + random(0..span_ms) after forwarding. */
void chaosproxy_midway(struct chaosproxy *p, int min_ms, int span_ms);

/* No rule: everything passes. */
void chaosproxy_pass(struct chaosproxy *p);

/* Offline (on != 0): every new connection is accepted and reset at once, as when the uplink is
 * down; connections already open are reset at their next request. */
void chaosproxy_offline(struct chaosproxy *p, int on);

/* Keeps a copy of every request whose path starts with path_prefix from now on, with the
 * server's answer when there is one (NULL: stop keeping copies; the copies stay). */
void chaosproxy_capture(struct chaosproxy *p, const char *path_prefix);

/* A kept request. */
struct chaos_request {
    char method[16];
    char target[1024];   /* path and query */
    char **headers;      /* NULL-terminated "Name: value" lines as the client sent them,
                            without Host, Content-Length, Connection and Expect */
    unsigned char *body; /* as sent (gzip stays gzip) */
    size_t len;
    enum chaos_fault fault; /* what the proxy did to it */
    int status;             /* the server's answer status; 0 when it did not answer */
    char *answer;           /* the server's answer body, NUL-terminated (NULL when none) */
    size_t answer_len;
};

/* Requests kept so far. */
size_t chaosproxy_captured(struct chaosproxy *p);
/* Copies kept request i into *out (the caller's; release with chaos_request_free). Returns 0,
 * or -1 when there is no request i. */
int chaosproxy_copy(struct chaosproxy *p, size_t i, struct chaos_request *out);
void chaos_request_free(struct chaos_request *r);

/* Waits until at least n answers have been held (CHAOS_HOLD_ANSWER) since the proxy started,
 * or timeout_ms passed. Returns the number held so far. */
int chaosproxy_wait_held(struct chaosproxy *p, int n, int timeout_ms);
/* Resets every held connection: their answers are never delivered. */
void chaosproxy_release(struct chaosproxy *p);

struct chaos_stats {
    long requests;                  /* requests read from clients */
    long faults[CHAOS_FAULT_COUNT]; /* ... by what was done to them */
    long forwarded;                 /* ... sent on to the server */
    long answered;                  /* ... that the server answered (any status) */
    long connections;               /* client connections accepted */
};
void chaosproxy_stats(struct chaosproxy *p, struct chaos_stats *out);

/* The fault's name, for messages: "cut_answer", ... */
const char *chaos_fault_name(enum chaos_fault f);

/* Stops accepting, resets every connection, waits for the proxy's threads, frees p and its
 * kept requests. NULL-safe. */
void chaosproxy_stop(struct chaosproxy *p);

#endif
