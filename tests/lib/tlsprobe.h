/* tlsprobe.h - a small blocking TLS client (mbedTLS) for tests that must control the bytes on
 * the wire, which libcurl does not let them: a request head without its body, the certificate
 * the server presented on one connection, a request on a connection opened from a given
 * loopback address, a ClientHello to replay in a flood. It verifies nothing: tests compare
 * the presented certificate themselves where that matters.
 * Thread safety: one struct tlsprobe per thread; the functions without one are any thread. */
#ifndef MIDWAY_TLSPROBE_H
#define MIDWAY_TLSPROBE_H
#include <stddef.h>

struct tlsprobe;

/* A TCP connection to 127.0.0.1:port, from source address src ("127.0.0.2"; NULL for the
 * kernel's choice), blocking. Returns the socket, or -1 (errno says why). */
int tlsprobe_tcp_connect(int port, const char *src);

/* Connects and completes the TLS handshake within timeout_ms. NULL when either failed. */
struct tlsprobe *tlsprobe_open(int port, const char *src, int timeout_ms);
void tlsprobe_close(struct tlsprobe *c); /* NULL-safe */

/* Sends all len bytes. Returns 0, or -1 when the connection failed. */
int tlsprobe_send(struct tlsprobe *c, const void *buf, size_t len);

/* Reads one HTTP response (its head, then Content-Length bytes of body) within timeout_ms.
 * Returns its status, or 0 on timeout, EOF or a TLS error before the response was whole.
 * *text_out (may be NULL) gets everything read, head and body, NUL-terminated (malloc'd). */
int tlsprobe_response(struct tlsprobe *c, int timeout_ms, char **text_out);

/* SHA-256 of the DER of the certificate the server presented. */
void tlsprobe_peer_fingerprint(const struct tlsprobe *c, unsigned char out[32]);

/* SHA-256 of the DER of the first certificate in a PEM file; exits the test when it does not
 * parse. */
void tlsprobe_file_fingerprint(const char *pem_path, unsigned char out[32]);

/* The first flight of a handshake as this client sends it (a ClientHello), into buf. Returns
 * its length. A server answers every copy with a full handshake's first half: one ECDHE key
 * and one signature, the expensive part, for the sender's price of a send(). */
size_t tlsprobe_client_hello(unsigned char *buf, size_t cap);

#endif
