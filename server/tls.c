/* tls.c - server TLS over non-blocking sockets with mbedTLS 2.28 or 3.x (see tls.h). */
#include "tls.h"

#include "mem.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h> /* MBEDTLS_ERR_NET_*: what our I/O callbacks return */
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Certificate chain and key files are operator configuration; ours are ~1 KiB and a chain of
 * a few certificates is under 10 KiB. A file larger than this is the wrong file. */
#define CONFIG_FILE_MAX (256 * 1024)

static const char PERSONALIZATION[] = "midway-tls-server";

/* The callbacks return byte counts as int; mbedTLS never asks for more than one record. */
#define IO_CHUNK_MAX ((size_t)1 << 30)

/* ---- mbedTLS 2.28 / 3.x differences, all of them ------------------------------------- */

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#if defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
#define HAVE_TLS13 1
#endif

/* Groups are IANA numbers in 3.x. X25519 first: the cheapest, and what most clients send a
 * key share for, so a TLS 1.3 handshake needs no HelloRetryRequest. */
static const uint16_t GROUPS[] = {
    MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_NONE,
};

static void conf_versions_and_groups(mbedtls_ssl_config *conf)
{
    mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#if defined(HAVE_TLS13)
    mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_3);
    /* (EC)DHE only: without session tickets or external PSKs, the PSK modes have nothing to
     * resume, and pure-PSK would give up forward secrecy. */
    mbedtls_ssl_conf_tls13_key_exchange_modes(conf, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL);
#else
    mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#endif
    mbedtls_ssl_conf_groups(conf, GROUPS);
}

/* 3.x uses the random generator for blinding while it parses and checks EC keys. */
static int parse_keyfile(mbedtls_pk_context *pk, const char *path, mbedtls_ctr_drbg_context *drbg)
{
    return mbedtls_pk_parse_keyfile(pk, path, NULL, mbedtls_ctr_drbg_random, drbg);
}

static int check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv,
                      mbedtls_ctr_drbg_context *drbg)
{
    return mbedtls_pk_check_pair(pub, prv, mbedtls_ctr_drbg_random, drbg);
}

/* TLS 1.3 in 3.x runs its key schedule through PSA crypto, which must be initialised first.
 * Idempotent, and thread-safe with MBEDTLS_THREADING_C. */
static int crypto_init(void)
{
#if defined(MBEDTLS_PSA_CRYPTO_C)
    return psa_crypto_init() == PSA_SUCCESS ? 0 : -1;
#else
    return 0;
#endif
}

#else /* mbedTLS 2.x */

static const mbedtls_ecp_group_id GROUPS[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_NONE,
};

static void conf_versions_and_groups(mbedtls_ssl_config *conf)
{
    /* 2.x names versions by the record layer's numbers: 3.3 is TLS 1.2, its only safe one. */
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_curves(conf, GROUPS);
}

static int parse_keyfile(mbedtls_pk_context *pk, const char *path, mbedtls_ctr_drbg_context *drbg)
{
    (void)drbg;
    return mbedtls_pk_parse_keyfile(pk, path, NULL);
}

static int check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv,
                      mbedtls_ctr_drbg_context *drbg)
{
    (void)drbg;
    return mbedtls_pk_check_pair(pub, prv);
}

static int crypto_init(void)
{
    return 0;
}
#endif

/* ECDHE key exchange and AEAD records only: no static RSA (no forward secrecy), no CBC (its
 * MAC-then-encrypt padding oracles), no SHA-1. The order is the server's preference. RSA
 * variants serve an operator-supplied RSA certificate; mbedTLS picks the suites that match
 * the certificate's key. */
static const int CIPHERSUITES[] = {
#if defined(HAVE_TLS13)
    MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
#endif
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

/* ---- types ------------------------------------------------------------------------------ */

/* What a handshake presents: the certificate chain, its key and the configuration that points
 * at them. Connections keep the identity they were set up with (mbedTLS reads the
 * configuration for the life of a connection, not only in its handshake), so a reload makes a
 * new identity for new connections and the old one lives on, unchanged, until the last
 * connection that uses it is freed. */
struct identity {
    mbedtls_ssl_config conf; /* read-only once built */
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    size_t refs; /* the server's (while current) and one per connection: I/O thread only */
};

struct mw_tls_server {
    struct identity *current; /* what new connections get */
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg; /* used by every connection: one driving thread */
    _Atomic uint64_t handshakes_ok;
    _Atomic uint64_t handshakes_failed;
    _Atomic uint64_t handshakes_aborted;
    _Atomic uint64_t conns_open;
};

/* Plaintext bytes per mw_tls_conn_write call: one TLS record's worth. */
#define WRITE_RECORD_MAX 16384u

struct mw_tls_conn {
    mbedtls_ssl_context ssl;
    struct mw_tls_server *srv;
    struct identity *id; /* a reference: the identity this connection was set up with */
    int fd;       /* borrowed */
    int io_errno; /* errno of the last failed send/recv, for the error text */
    bool handshake_done;
    bool handshake_counted; /* its outcome is in the server's counters */
    size_t retry_len;       /* bytes of a write that wanted to be retried, or 0 */
};

/* ---- helpers ---------------------------------------------------------------------------- */

static enum mw_err tls_fail(struct mw_error *err, enum mw_err code, int ret, const char *what)
{
    char text[128];
    mbedtls_strerror(ret, text, sizeof(text));
    return mw_fail(err, code, "%s: %s (-0x%04x)", what, text, (unsigned)-ret);
}

/* A file the server was configured with: present, a regular file, not absurdly large. */
static enum mw_err check_config_file(const char *path, const char *what, struct mw_error *err)
{
    struct stat st;
    if (!path)
        return mw_fail(err, MW_EINVAL, "no %s file", what);
    if (stat(path, &st) != 0) {
        return mw_fail(err, errno == ENOENT ? MW_ENOTFOUND : MW_EIO, "%s %s: %s", what, path,
                       strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return mw_fail(err, MW_EIO, "%s %s: not a regular file", what, path);
    if (st.st_size > CONFIG_FILE_MAX)
        return mw_fail(err, MW_ETOOBIG, "%s %s: %lld bytes, at most %d", what, path,
                       (long long)st.st_size, CONFIG_FILE_MAX);
    return MW_OK;
}

/* ---- server ----------------------------------------------------------------------------- */

static void identity_unref(struct identity *id)
{
    if (!id || --id->refs > 0)
        return;
    mbedtls_ssl_config_free(&id->conf);
    mbedtls_pk_free(&id->key);
    mbedtls_x509_crt_free(&id->cert);
    mw_free(id);
}

/* Loads cert_path and key_path into a new identity (refs 1) drawing on srv's generator. */
static enum mw_err identity_load(struct mw_tls_server *srv, const char *cert_path,
                                 const char *key_path, struct identity **out, struct mw_error *err)
{
    enum mw_err rc;
    int ret;
    struct identity *id = mw_calloc(1, sizeof(*id));
    if (!id)
        return mw_fail(err, MW_ENOMEM, "TLS identity");
    id->refs = 1;
    mbedtls_ssl_config_init(&id->conf);
    mbedtls_x509_crt_init(&id->cert);
    mbedtls_pk_init(&id->key);

    rc = check_config_file(cert_path, "certificate", err);
    if (rc == MW_OK)
        rc = check_config_file(key_path, "key", err);
    if (rc != MW_OK)
        goto fail;
    ret = mbedtls_x509_crt_parse_file(&id->cert, cert_path);
    if (ret != 0) {
        /* A positive count means some certificates of the chain did not parse: a chain we
         * would send half of is as wrong as none. */
        rc = ret > 0
                 ? mw_fail(err, MW_EMALFORMED, "certificate %s: %d certificate(s) did not parse",
                           cert_path, ret)
                 : tls_fail(err, ret == MBEDTLS_ERR_X509_ALLOC_FAILED ? MW_ENOMEM : MW_EMALFORMED,
                            ret, cert_path);
        goto fail;
    }
    ret = parse_keyfile(&id->key, key_path, &srv->drbg);
    if (ret != 0) {
        rc = tls_fail(err, ret == MBEDTLS_ERR_PK_ALLOC_FAILED ? MW_ENOMEM : MW_EMALFORMED, ret,
                      key_path);
        goto fail;
    }
    ret = check_pair(&id->cert.pk, &id->key, &srv->drbg);
    if (ret != 0) {
        rc = tls_fail(err, MW_EMALFORMED, ret, "key does not match the certificate");
        goto fail;
    }

    ret = mbedtls_ssl_config_defaults(&id->conf, MBEDTLS_SSL_IS_SERVER,
                                      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        rc = tls_fail(err, MW_EIO, ret, "TLS defaults");
        goto fail;
    }
    mbedtls_ssl_conf_rng(&id->conf, mbedtls_ctr_drbg_random, &srv->drbg);
    conf_versions_and_groups(&id->conf);
    mbedtls_ssl_conf_ciphersuites(&id->conf, CIPHERSUITES);
    /* Devices authenticate with bearer tokens, not certificates. */
    mbedtls_ssl_conf_authmode(&id->conf, MBEDTLS_SSL_VERIFY_NONE);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    /* Renegotiation lets a client make the server redo expensive handshakes on one connection
     * and has a history of bugs; nothing here needs it. */
    mbedtls_ssl_conf_renegotiation(&id->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    ret = mbedtls_ssl_conf_own_cert(&id->conf, &id->cert, &id->key);
    if (ret != 0) {
        rc = tls_fail(err, ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? MW_ENOMEM : MW_EIO, ret,
                      "server certificate");
        goto fail;
    }
    *out = id;
    return MW_OK;
fail:
    identity_unref(id);
    return rc;
}

enum mw_err mw_tls_server_new(const char *cert_path, const char *key_path,
                              struct mw_tls_server **out, struct mw_error *err)
{
    enum mw_err rc;
    int ret;
    struct mw_tls_server *srv = mw_calloc(1, sizeof(*srv));
    if (!srv)
        return mw_fail(err, MW_ENOMEM, "TLS server");
    mbedtls_entropy_init(&srv->entropy);
    mbedtls_ctr_drbg_init(&srv->drbg);
    atomic_init(&srv->handshakes_ok, 0);
    atomic_init(&srv->handshakes_failed, 0);
    atomic_init(&srv->handshakes_aborted, 0);
    atomic_init(&srv->conns_open, 0);

    if (crypto_init() != 0) {
        rc = mw_fail(err, MW_EIO, "PSA crypto init failed");
        goto fail;
    }
    ret =
        mbedtls_ctr_drbg_seed(&srv->drbg, mbedtls_entropy_func, &srv->entropy,
                              (const unsigned char *)PERSONALIZATION, sizeof(PERSONALIZATION) - 1);
    if (ret != 0) {
        rc = tls_fail(err, MW_EIO, ret, "seed random generator");
        goto fail;
    }
    rc = identity_load(srv, cert_path, key_path, &srv->current, err);
    if (rc != MW_OK)
        goto fail;
    *out = srv;
    return MW_OK;
fail:
    mw_tls_server_free(srv);
    return mw_fail(err, rc, "TLS server");
}

enum mw_err mw_tls_server_reload(struct mw_tls_server *srv, const char *cert_path,
                                 const char *key_path, char *summary, size_t summary_size,
                                 struct mw_error *err)
{
    struct identity *id = NULL;
    if (summary && summary_size > 0)
        summary[0] = '\0';
    enum mw_err rc = identity_load(srv, cert_path, key_path, &id, err);
    if (rc != MW_OK)
        return mw_fail(err, rc, "TLS reload");
    if (summary && summary_size > 0) {
        char subject[160];
        if (mbedtls_x509_dn_gets(subject, sizeof(subject), &id->cert.subject) < 0)
            snprintf(subject, sizeof(subject), "?");
        const mbedtls_x509_time *to = &id->cert.valid_to;
        snprintf(summary, summary_size, "subject %s, valid until %04d-%02d-%02d", subject, to->year,
                 to->mon, to->day);
    }
    struct identity *old = srv->current;
    srv->current = id;
    identity_unref(old); /* freed now, or by the last connection still using it */
    return MW_OK;
}

void mw_tls_server_free(struct mw_tls_server *srv)
{
    if (!srv)
        return;
    identity_unref(srv->current);
    mbedtls_ctr_drbg_free(&srv->drbg);
    mbedtls_entropy_free(&srv->entropy);
    mw_free(srv);
}

void mw_tls_server_stats(const struct mw_tls_server *srv, struct mw_tls_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!srv)
        return;
    out->handshakes_ok = atomic_load_explicit(&srv->handshakes_ok, memory_order_relaxed);
    out->handshakes_failed = atomic_load_explicit(&srv->handshakes_failed, memory_order_relaxed);
    out->handshakes_aborted = atomic_load_explicit(&srv->handshakes_aborted, memory_order_relaxed);
    out->conns_open = atomic_load_explicit(&srv->conns_open, memory_order_relaxed);
}

const char *mw_tls_max_version(void)
{
#if defined(HAVE_TLS13)
    return "TLSv1.3";
#else
    return "TLSv1.2";
#endif
}

/* ---- socket callbacks ------------------------------------------------------------------- */

/* MSG_NOSIGNAL: a peer that resets must give EPIPE here, not kill the server with SIGPIPE. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct mw_tls_conn *c = ctx;
    if (len > IO_CHUNK_MAX)
        len = IO_CHUNK_MAX;
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_WRITE;
        c->io_errno = errno;
        if (errno == EPIPE || errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct mw_tls_conn *c = ctx;
    if (len > IO_CHUNK_MAX)
        len = IO_CHUNK_MAX;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return (int)n; /* 0 is EOF: mbedTLS turns it into MBEDTLS_ERR_SSL_CONN_EOF */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_READ;
        c->io_errno = errno;
        if (errno == ECONNRESET)
            return MBEDTLS_ERR_NET_CONN_RESET;
        return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

/* ---- connections ------------------------------------------------------------------------ */

enum mw_err mw_tls_conn_new(struct mw_tls_server *srv, int fd, struct mw_tls_conn **out,
                            struct mw_error *err)
{
    if (!srv || fd < 0)
        return mw_fail(err, MW_EINVAL, "TLS connection: no server or socket");
    struct mw_tls_conn *c = mw_calloc(1, sizeof(*c));
    if (!c)
        return mw_fail(err, MW_ENOMEM, "TLS connection");
    c->srv = srv;
    c->fd = fd;
    mbedtls_ssl_init(&c->ssl);
    /* Allocates the two record buffers: the bulk of what a connection costs (see tls.h). */
    int ret = mbedtls_ssl_setup(&c->ssl, &srv->current->conf);
    if (ret != 0) {
        mbedtls_ssl_free(&c->ssl);
        mw_free(c);
        return tls_fail(err, ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? MW_ENOMEM : MW_EIO, ret,
                        "TLS connection");
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    c->id = srv->current;
    c->id->refs++;
    atomic_fetch_add_explicit(&srv->conns_open, 1, memory_order_relaxed);
    *out = c;
    return MW_OK;
}

void mw_tls_conn_free(struct mw_tls_conn *c)
{
    if (!c)
        return;
    atomic_fetch_sub_explicit(&c->srv->conns_open, 1, memory_order_relaxed);
    mbedtls_ssl_free(&c->ssl);
    identity_unref(c->id); /* after the context that points into its configuration */
    mw_free(c);
}

static bool is_transport_error(int ret)
{
    return ret == MBEDTLS_ERR_SSL_CONN_EOF || ret == MBEDTLS_ERR_NET_CONN_RESET ||
           ret == MBEDTLS_ERR_NET_SEND_FAILED || ret == MBEDTLS_ERR_NET_RECV_FAILED ||
           ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
}

/* Turns a fatal mbedTLS result into MW_TLS_FAILED with a message. */
static enum mw_tls_status conn_failed(struct mw_tls_conn *c, int ret, const char *what,
                                      struct mw_error *err)
{
    enum mw_err code = MW_EMALFORMED;
    if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        code = MW_ENOMEM;
    else if (is_transport_error(ret))
        code = MW_ENET;
    if (c->io_errno != 0) {
        char what_errno[96];
        snprintf(what_errno, sizeof(what_errno), "%s (%s)", what, strerror(c->io_errno));
        tls_fail(err, code, ret, what_errno);
    } else {
        tls_fail(err, code, ret, what);
    }
    return MW_TLS_FAILED;
}

enum mw_tls_status mw_tls_conn_handshake(struct mw_tls_conn *c, struct mw_error *err)
{
    if (c->handshake_done)
        return MW_TLS_OK;
    int ret = mbedtls_ssl_handshake(&c->ssl);
    if (ret == MBEDTLS_ERR_SSL_WANT_READ)
        return MW_TLS_WANT_READ;
    if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return MW_TLS_WANT_WRITE;
    if (ret == 0) {
        c->handshake_done = true;
        if (!c->handshake_counted)
            atomic_fetch_add_explicit(&c->srv->handshakes_ok, 1, memory_order_relaxed);
        c->handshake_counted = true;
        return MW_TLS_OK;
    }
    if (!c->handshake_counted) {
        /* Aborted and failed are told apart so that /metrics shows port scanners and flaky
         * links separately from clients we refused (old TLS, CBC-only, garbage). */
        if (is_transport_error(ret))
            atomic_fetch_add_explicit(&c->srv->handshakes_aborted, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&c->srv->handshakes_failed, 1, memory_order_relaxed);
        c->handshake_counted = true;
    }
    return conn_failed(c, ret, "TLS handshake", err);
}

enum mw_tls_status mw_tls_conn_read(struct mw_tls_conn *c, void *buf, size_t len, size_t *n_out,
                                    struct mw_error *err)
{
    *n_out = 0;
    if (!c->handshake_done) {
        enum mw_tls_status st = mw_tls_conn_handshake(c, err);
        if (st != MW_TLS_OK)
            return st;
    }
    if (len == 0)
        return MW_TLS_OK;
    int ret = mbedtls_ssl_read(&c->ssl, buf, len);
    if (ret > 0) {
        *n_out = (size_t)ret;
        return MW_TLS_OK;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ)
        return MW_TLS_WANT_READ;
    if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return MW_TLS_WANT_WRITE;
    /* EOF without close_notify counts as closed too: HTTP frames its own messages, so a
     * truncated one is detected there, and many clients skip close_notify. */
    if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == MBEDTLS_ERR_SSL_CONN_EOF)
        return MW_TLS_CLOSED;
    return conn_failed(c, ret, "TLS read", err);
}

enum mw_tls_status mw_tls_conn_write(struct mw_tls_conn *c, const void *buf, size_t len,
                                     size_t *n_out, struct mw_error *err)
{
    *n_out = 0;
    if (!c->handshake_done) {
        enum mw_tls_status st = mw_tls_conn_handshake(c, err);
        if (st != MW_TLS_OK)
            return st;
    }
    if (len == 0)
        return MW_TLS_OK;
    /* mbedTLS wants a write that blocked repeated with the same length; it then reports that
     * length as sent. Remember it, so callers only have to pass the unsent rest of their
     * buffer (which starts with the same bytes). One record per call keeps it exact. */
    size_t chunk = len < WRITE_RECORD_MAX ? len : WRITE_RECORD_MAX;
    if (c->retry_len > 0 && c->retry_len <= len)
        chunk = c->retry_len;
    int ret = mbedtls_ssl_write(&c->ssl, buf, chunk);
    if (ret > 0) {
        c->retry_len = 0;
        *n_out = (size_t)ret;
        return MW_TLS_OK;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        c->retry_len = chunk;
        return ret == MBEDTLS_ERR_SSL_WANT_READ ? MW_TLS_WANT_READ : MW_TLS_WANT_WRITE;
    }
    return conn_failed(c, ret, "TLS write", err);
}

enum mw_tls_status mw_tls_conn_close_notify(struct mw_tls_conn *c, struct mw_error *err)
{
    int ret = mbedtls_ssl_close_notify(&c->ssl);
    if (ret == 0)
        return MW_TLS_OK;
    if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return MW_TLS_WANT_WRITE;
    if (ret == MBEDTLS_ERR_SSL_WANT_READ)
        return MW_TLS_WANT_READ;
    return conn_failed(c, ret, "TLS close_notify", err);
}

size_t mw_tls_conn_pending(const struct mw_tls_conn *c)
{
    return mbedtls_ssl_get_bytes_avail(&c->ssl);
}

int mw_tls_conn_has_buffered(const struct mw_tls_conn *c)
{
    return mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 || mbedtls_ssl_check_pending(&c->ssl) != 0;
}

const char *mw_tls_conn_version(const struct mw_tls_conn *c)
{
    if (!c->handshake_done)
        return "unknown";
    return mbedtls_ssl_get_version(&c->ssl);
}

const char *mw_tls_conn_ciphersuite(const struct mw_tls_conn *c)
{
    const char *name = c->handshake_done ? mbedtls_ssl_get_ciphersuite(&c->ssl) : NULL;
    return name ? name : "unknown";
}
