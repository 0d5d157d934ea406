/* tls.h - the server side of TLS (mbedTLS) over non-blocking sockets, for an epoll loop.
 *
 * Policy: TLS 1.2 minimum, and TLS 1.3 where the library offers it (mbedTLS 3.x built with
 * MBEDTLS_SSL_PROTO_TLS1_3; Debian 12's 2.28 is 1.2 only). Key exchange is ECDHE only
 * (X25519 or P-256) and records use AEAD only: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305
 * (for ECDSA certificates, and for RSA ones should an operator bring one). No renegotiation,
 * no session tickets (every connection does a full handshake: one ECDHE and one ECDSA P-256
 * signature; devices keep connections alive instead), no client certificates (devices
 * authenticate with bearer tokens).
 *
 * Memory: an idle established connection costs what mbedTLS keeps per mbedtls_ssl_context,
 * dominated by its input and output record buffers. Those are compile-time sizes
 * (MBEDTLS_SSL_IN_CONTENT_LEN / OUT_CONTENT_LEN, 16 KiB each in Debian's builds, and no
 * MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH), so no runtime setting shrinks them. test_tls measures
 * the heap held per idle connection: 36 KiB with mbedTLS 2.28 (TLS 1.2), 40 KiB with 3.6
 * (TLS 1.3), so 5,000 idle keep-alive connections hold about 175-200 MiB. The handshake state
 * is freed by mbedTLS once the handshake completes, and no peer certificate is kept.
 *
 * Reload (SIGHUP): mw_tls_server_reload() loads the certificate and key files again. New
 * connections get the new ones; a connection keeps the certificate, key and configuration it
 * was set up with until it is freed (mbedTLS reads them for the life of the connection), so
 * established keep-alive connections are not disturbed. A reload that fails changes nothing.
 *
 * Thread safety: a struct mw_tls_server is shared by its connections; it holds the one random
 * generator (CTR_DRBG) they all draw from and counts which connections use which certificate,
 * so every connection of one server is made, driven and freed from a single thread (the I/O
 * thread), which is also the one that calls mw_tls_server_reload(). A second I/O thread needs
 * its own struct mw_tls_server. mw_tls_server_stats() is any thread (the counters are
 * atomics). A struct mw_tls_conn belongs to the thread that drives it. */
#ifndef MIDWAY_SERVER_TLS_H
#define MIDWAY_SERVER_TLS_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

struct mw_tls_server; /* opaque: configuration, certificate, key, random generator */
struct mw_tls_conn;   /* opaque: one connection's TLS state */

/* What a non-blocking TLS step came to. On MW_TLS_WANT_READ / MW_TLS_WANT_WRITE wait for the
 * socket to become readable / writable and call the same function again (for a write: with
 * the same data, see mw_tls_conn_write). */
enum mw_tls_status {
    MW_TLS_OK = 0,     /* done: the handshake finished, or bytes were moved */
    MW_TLS_WANT_READ,  /* blocked until the socket is readable */
    MW_TLS_WANT_WRITE, /* blocked until the socket is writable */
    MW_TLS_CLOSED,     /* the peer closed (close_notify, or plain EOF): close the socket */
    MW_TLS_FAILED,     /* fatal: *err says why; close the socket without further TLS calls */
};

/* Counters for /metrics; they only grow, except conns_open. */
struct mw_tls_stats {
    uint64_t handshakes_ok;      /* handshakes that completed */
    uint64_t handshakes_failed;  /* refused: protocol version, no common cipher, bad message */
    uint64_t handshakes_aborted; /* the peer went away (EOF, reset) before finishing */
    uint64_t conns_open;         /* connections between mw_tls_conn_new and _free */
};

/* ---- server ------------------------------------------------------------------------------ */

/* Loads the certificate (PEM, the server's first, then any intermediates) and its private key
 * (PEM or DER, unencrypted) and builds the server configuration described above.
 * On success *out owns everything; free it with mw_tls_server_free after every connection.
 * Errors: MW_ENOTFOUND (a file is missing), MW_EMALFORMED (a file does not parse, or the key
 * does not match the certificate), MW_EIO (a file cannot be read; random generator), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_tls_server_new(const char *cert_path, const char *key_path,
                                           struct mw_tls_server **out, struct mw_error *err);

/* Loads cert_path and key_path again (as mw_tls_server_new checks them) for the connections
 * made from now on; existing connections keep what they have. summary (may be NULL) gets one
 * line for the log: the new certificate's subject and expiry date.
 * Errors: as mw_tls_server_new. On failure the server goes on with the certificate it had,
 * and *err says why the new files were refused. I/O thread only. */
MW_NODISCARD enum mw_err mw_tls_server_reload(struct mw_tls_server *srv, const char *cert_path,
                                              const char *key_path, char *summary,
                                              size_t summary_size, struct mw_error *err);

/* Frees the server. NULL-safe. Every connection made from it must be freed first. */
void mw_tls_server_free(struct mw_tls_server *srv);

/* Copies the counters. Any thread. */
void mw_tls_server_stats(const struct mw_tls_server *srv, struct mw_tls_stats *out);

/* The highest TLS version this build can offer: "TLSv1.2" or "TLSv1.3". */
const char *mw_tls_max_version(void);

/* ---- connections ------------------------------------------------------------------------- */

/* Wraps an accepted, non-blocking socket. The connection borrows fd (the caller closes it,
 * after mw_tls_conn_free) and srv (which must outlive it).
 * Errors: MW_ENOMEM, MW_EIO (mbedTLS refused the configuration). */
MW_NODISCARD enum mw_err mw_tls_conn_new(struct mw_tls_server *srv, int fd,
                                         struct mw_tls_conn **out, struct mw_error *err);

/* Frees the connection's TLS state (not the socket). NULL-safe. */
void mw_tls_conn_free(struct mw_tls_conn *c);

/* Advances the handshake as far as the socket allows. MW_TLS_OK once it is complete (and on
 * every later call). MW_TLS_FAILED fills *err: MW_EMALFORMED when the client was refused
 * (counted in handshakes_failed: no TLS 1.2+, no ECDHE+AEAD suite, malformed messages; an
 * alert has been sent), MW_ENET when the peer went away (handshakes_aborted), MW_ENOMEM.
 * MW_TLS_CLOSED is never returned here: a peer that leaves mid-handshake is a failure. */
MW_NODISCARD enum mw_tls_status mw_tls_conn_handshake(struct mw_tls_conn *c, struct mw_error *err);

/* Reads up to len decrypted bytes into buf (completing the handshake first if needed).
 * MW_TLS_OK with *n_out > 0 bytes; MW_TLS_WANT_*; MW_TLS_CLOSED at the peer's close_notify or
 * EOF; MW_TLS_FAILED (MW_EMALFORMED: a bad record or a fatal alert; MW_ENET: reset).
 * With edge-triggered epoll, keep reading until WANT_READ, or check mw_tls_conn_pending():
 * a record that was already read from the socket raises no new event. */
MW_NODISCARD enum mw_tls_status mw_tls_conn_read(struct mw_tls_conn *c, void *buf, size_t len,
                                                 size_t *n_out, struct mw_error *err);

/* Encrypts and sends up to len bytes from buf: MW_TLS_OK with *n_out > 0 (may be less than
 * len: at most one record, 16 KiB, per call). MW_TLS_WANT_WRITE / WANT_READ usually mean the
 * record is already encrypted and only partly sent: the next write must start with the same
 * bytes (pass the unsent rest of one output buffer, which may have grown since); the
 * connection remembers how many of them the blocked record held, as mbedTLS requires. A
 * caller that may interleave (an interim "100 Continue" and the response) therefore queues
 * everything in one output buffer.
 * MW_TLS_FAILED as for read. */
MW_NODISCARD enum mw_tls_status mw_tls_conn_write(struct mw_tls_conn *c, const void *buf,
                                                  size_t len, size_t *n_out, struct mw_error *err);

/* Sends close_notify. MW_TLS_OK once it is out, MW_TLS_WANT_WRITE when the socket is full
 * (retry, or give up: it is a courtesy), MW_TLS_FAILED when the socket is already gone.
 * Callers may ignore the result: the connection is closed either way. */
enum mw_tls_status mw_tls_conn_close_notify(struct mw_tls_conn *c, struct mw_error *err);

/* Decrypted bytes waiting in the connection: a read returns them without touching the socket. */
size_t mw_tls_conn_pending(const struct mw_tls_conn *c);

/* Nonzero when a read can make progress without the socket becoming readable: decrypted
 * bytes, or a record (or part of one) already pulled from the socket. */
int mw_tls_conn_has_buffered(const struct mw_tls_conn *c);

/* For logs, once the handshake is done: "TLSv1.2" / "TLSv1.3", and the IANA-style suite name
 * mbedTLS uses ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS1-3-AES-128-GCM-SHA256").
 * Static strings; "unknown" before the handshake. */
const char *mw_tls_conn_version(const struct mw_tls_conn *c);
const char *mw_tls_conn_ciphersuite(const struct mw_tls_conn *c);

#endif
