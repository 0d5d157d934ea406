/* faultproxy.h - a TCP proxy on a free loopback port that forwards bytes to a target port and
 * can lose an answer on purpose: armed, it lets a request through to the server and cuts both
 * connections as soon as the server starts answering, so the client never reads a response the
 * server has already committed. TLS passes through untouched (the proxy sees only bytes), so the
 * client still verifies the real server's certificate.
 * Thread safety: the control calls are for the test's main thread; the proxy runs its own
 * threads. */
#ifndef MIDWAY_FAULTPROXY_H
#define MIDWAY_FAULTPROXY_H
#include <stddef.h>

struct faultproxy;

/* Starts forwarding 127.0.0.1:<free port> to 127.0.0.1:target_port. Exits(2) on failure. */
struct faultproxy *faultproxy_start(int target_port);

int faultproxy_port(const struct faultproxy *p);

/* Arms one cut: on the first connection whose client has sent more than client_bytes bytes
 * (the TLS handshake is well under 2 KiB; a push with its body is more), the server's next
 * bytes are dropped and both sockets closed. Disarms itself after one cut. */
void faultproxy_cut_after_request(struct faultproxy *p, size_t client_bytes);

/* Plain forwarding again. */
void faultproxy_pass(struct faultproxy *p);

/* Answers lost so far. */
int faultproxy_cuts(struct faultproxy *p);

/* Stops accepting, closes every connection, joins the threads, frees p. NULL-safe. */
void faultproxy_stop(struct faultproxy *p);

#endif
