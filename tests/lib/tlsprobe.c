/* tlsprobe.c - the blocking test TLS client (tlsprobe.h). */
#include "tlsprobe.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_MAX (16u * 1024u * 1024u)

struct tlsprobe {
    int fd;
    int64_t deadline_ms; /* for the current operation */
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static void die(const char *what)
{
    fprintf(stderr, "tlsprobe: %s\n", what);
    exit(2);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sha256(const unsigned char *in, size_t n, unsigned char out[32])
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    return mbedtls_sha256(in, n, out, 0);
#else
    return mbedtls_sha256_ret(in, n, out, 0);
#endif
}

int tlsprobe_tcp_connect(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        if (inet_pton(AF_INET, src, &sa.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct tlsprobe *c = ctx;
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno != EINTR)
            return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
}

/* Waits for the socket up to the operation's deadline, so a server that never answers makes
 * a read time out instead of hanging the test. */
static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct tlsprobe *c = ctx;
    for (;;) {
        int64_t left = c->deadline_ms - now_ms();
        if (left <= 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return (int)n;
        if (errno != EINTR)
            return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
}

static void crypto_init(void)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    if (psa_crypto_init() != PSA_SUCCESS)
        die("psa_crypto_init");
#endif
}

/* Everything but the socket: the configuration and context, ready for a handshake. */
static struct tlsprobe *client_new(void)
{
    crypto_init();
    struct tlsprobe *c = calloc(1, sizeof *c);
    if (!c)
        die("calloc");
    c->fd = -1;
    mbedtls_ssl_init(&c->ssl);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    static const char pers[] = "midway-tlsprobe";
    if (mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                              (const unsigned char *)pers, sizeof pers - 1) != 0 ||
        mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) != 0)
        die("mbedTLS client setup");
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    if (mbedtls_ssl_setup(&c->ssl, &c->conf) != 0)
        die("mbedtls_ssl_setup");
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    return c;
}

void tlsprobe_close(struct tlsprobe *c)
{
    if (!c)
        return;
    mbedtls_ssl_free(&c->ssl);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

struct tlsprobe *tlsprobe_open(int port, const char *src, int timeout_ms)
{
    int fd = tlsprobe_tcp_connect(port, src);
    if (fd < 0)
        return NULL;
    struct tlsprobe *c = client_new();
    c->fd = fd;
    c->deadline_ms = now_ms() + timeout_ms;
    int ret;
    do {
        ret = mbedtls_ssl_handshake(&c->ssl);
    } while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret != 0) {
        tlsprobe_close(c);
        return NULL;
    }
    return c;
}

int tlsprobe_send(struct tlsprobe *c, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    c->deadline_ms = now_ms() + 30000;
    while (len > 0) {
        int n = mbedtls_ssl_write(&c->ssl, p, len);
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Content-Length of a response head (head[0..len), ending in the empty line), or -1. */
static long content_length(const char *head)
{
    const char *p = head;
    while ((p = strchr(p, '\n')) != NULL) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            return strtol(p + 15, NULL, 10);
    }
    return -1;
}

int tlsprobe_response(struct tlsprobe *c, int timeout_ms, char **text_out)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        die("malloc");
    buf[0] = '\0';
    c->deadline_ms = now_ms() + timeout_ms;
    int status = 0;
    size_t want = 0; /* head + body once the head is in */
    for (;;) {
        if (want == 0) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end) {
                long cl = content_length(buf);
                want = (size_t)(end + 4 - buf) + (cl > 0 ? (size_t)cl : 0);
                if (strncmp(buf, "HTTP/1.", 7) == 0 && len > 12)
                    status = atoi(buf + 9);
            }
        }
        if (want > 0 && len >= want)
            break;
        if (cap - len < 2048) {
            if (cap >= RESPONSE_MAX)
                die("response too large");
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                die("realloc");
            buf = nb;
        }
        int n = mbedtls_ssl_read(&c->ssl, (unsigned char *)buf + len, cap - len - 1);
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (n <= 0) {
            status = 0;
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
    }
    if (text_out)
        *text_out = buf;
    else
        free(buf);
    return status;
}

void tlsprobe_peer_fingerprint(const struct tlsprobe *c, unsigned char out[32])
{
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
    if (!crt)
        die("no peer certificate kept (MBEDTLS_SSL_KEEP_PEER_CERTIFICATE off?)");
    if (sha256(crt->raw.p, crt->raw.len, out) != 0)
        die("sha256");
}

void tlsprobe_file_fingerprint(const char *pem_path, unsigned char out[32])
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    if (mbedtls_x509_crt_parse_file(&crt, pem_path) != 0)
        die("certificate file does not parse");
    if (sha256(crt.raw.p, crt.raw.len, out) != 0)
        die("sha256");
    mbedtls_x509_crt_free(&crt);
}

struct capture {
    unsigned char *buf;
    size_t cap, len;
};

static int capture_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct capture *k = ctx;
    if (len > k->cap - k->len)
        die("ClientHello larger than the buffer");
    memcpy(k->buf + k->len, buf, len);
    k->len += len;
    return (int)len;
}

static int capture_recv(void *ctx, unsigned char *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
    return MBEDTLS_ERR_SSL_WANT_READ; /* the server's answer never comes: stop after the hello */
}

size_t tlsprobe_client_hello(unsigned char *buf, size_t cap)
{
    struct tlsprobe *c = client_new();
    struct capture k = {buf, cap, 0};
    mbedtls_ssl_set_bio(&c->ssl, &k, capture_send, capture_recv, NULL);
    int ret;
    do {
        ret = mbedtls_ssl_handshake(&c->ssl);
    } while (ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret != MBEDTLS_ERR_SSL_WANT_READ || k.len == 0)
        die("could not make a ClientHello");
    tlsprobe_close(c);
    return k.len;
}
