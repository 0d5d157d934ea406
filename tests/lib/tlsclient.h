/* tlsclient.h - a small TLS client (mbedTLS) for tests that need what libcurl does not give:
 * a body sent at a chosen pace or stopped halfway, pipelined requests, an answer read slowly
 * through a small receive window. It verifies the server with a CA file. Every call has a
 * deadline, so a server that stops answering fails the test instead of hanging it.
 * Its memory comes from the C library, not mem.h: allocation failures injected into a server
 * running in the same process (mw_mem_fail_at) do not reach the client.
 * Thread safety: one struct tlsc per thread. */
#ifndef MIDWAY_TLSCLIENT_H
#define MIDWAY_TLSCLIENT_H
#include <stddef.h>

struct tlsc;

/* Connects to 127.0.0.1:port and completes the handshake within timeout_ms, verifying the
 * server with the CA in ca_path (name "localhost"). rcvbuf > 0 sets SO_RCVBUF before the
 * connection is made, which bounds what the kernel reads ahead for a slow reader. Returns
 * NULL when the connection or the handshake failed or timed out (a server that closes at
 * once, for instance); an unreadable CA file exits(2). */
struct tlsc *tlsc_connect(int port, const char *ca_path, int rcvbuf, long timeout_ms);

/* Sends all len bytes within timeout_ms. 0, or -1 when the connection failed or timed out. */
int tlsc_send(struct tlsc *c, const void *data, size_t len, long timeout_ms);

/* Reads up to len bytes (those buffered by tlsc_read_answer first), waiting at most
 * timeout_ms for the first. Returns the count (> 0), 0 when the server closed the
 * connection (close_notify, EOF or reset), -1 on timeout. */
long tlsc_recv(struct tlsc *c, void *buf, size_t len, long timeout_ms);

/* Reads one HTTP/1.1 answer: the head, then a body of its Content-Length (none when to_head:
 * the answer to a HEAD request); interim 1xx answers are skipped. Bytes past it stay buffered for
 * the next call. Returns the status, 0 when the connection closed before a whole answer came, -1 on
 * timeout (the whole answer must arrive within timeout_ms). *body_out (may be NULL) gets the body,
 * malloc'd and NUL-terminated; *len_out (may be NULL) its length. On 0 or -1 *body_out is NULL. */
int tlsc_read_answer(struct tlsc *c, int to_head, long timeout_ms, char **body_out,
                     size_t *len_out);

/* Whether the server closes the connection within timeout_ms: what it still sends is read
 * and dropped. 1 closed, 0 still open. */
int tlsc_closed_within(struct tlsc *c, long timeout_ms);

/* Sends close_notify (best effort), closes the socket and frees c. NULL-safe. */
void tlsc_close(struct tlsc *c);

#endif
