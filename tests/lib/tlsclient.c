/* tlsclient.c - a deadline-bound mbedTLS client for tests (see tlsclient.h). */
#include "tlsclient.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* An answer head is read whole before it is looked at; ours are a few hundred bytes. */
#define HEAD_MAX 16384

struct tlsc {
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    int fd;
    /* Bytes read past the answer tlsc_read_answer returned (pipelined answers). */
    unsigned char *held;
    size_t held_len;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct tlsc *c = ctx;
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct tlsc *c = ctx;
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Waits until the socket is ready for what mbedTLS asked (ret); false at the deadline. */
static bool wait_for(struct tlsc *c, int ret, int64_t deadline)
{
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return false;
    struct pollfd p = {.fd = c->fd, .events = ret == MBEDTLS_ERR_SSL_WANT_WRITE ? POLLOUT : POLLIN};
    int r = poll(&p, 1, left > 1000 ? 1000 : (int)left);
    (void)r; /* ready, timed out or interrupted: the caller retries and checks the time */
    return true;
}

static void tlsc_free(struct tlsc *c)
{
    mbedtls_ssl_free(&c->ssl);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    if (c->fd >= 0)
        close(c->fd);
    free(c->held);
    free(c);
}

struct tlsc *tlsc_connect(int port, const char *ca_path, int rcvbuf, long timeout_ms)
{
    static const char pers[] = "midway-test-client";
    int64_t deadline = now_ms() + timeout_ms;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    (void)psa_crypto_init();
#endif
    struct tlsc *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "test environment: out of memory\n");
        exit(2);
    }
    mbedtls_ssl_init(&c->ssl);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 ||
        mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                              (const unsigned char *)pers, sizeof pers - 1) != 0 ||
        mbedtls_x509_crt_parse_file(&c->ca, ca_path) != 0 ||
        mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) != 0) {
        fprintf(stderr, "test environment: TLS client setup (CA %s)\n", ca_path);
        exit(2);
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    if (mbedtls_ssl_setup(&c->ssl, &c->conf) != 0 ||
        mbedtls_ssl_set_hostname(&c->ssl, "localhost") != 0) {
        fprintf(stderr, "test environment: TLS client setup\n");
        exit(2);
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);

    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto fail;
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0)
        goto fail;
    for (;;) {
        int r = mbedtls_ssl_handshake(&c->ssl);
        if (r == 0)
            return c;
        if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
            goto fail;
        if (!wait_for(c, r, deadline))
            goto fail;
    }
fail:
    tlsc_free(c);
    return NULL;
}

int tlsc_send(struct tlsc *c, const void *data, size_t len, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    const unsigned char *p = data;
    size_t off = 0;
    while (off < len) {
        int r = mbedtls_ssl_write(&c->ssl, p + off, len - off);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
            return -1;
        if (!wait_for(c, r, deadline))
            return -1;
    }
    return 0;
}

/* One read from the TLS layer: > 0 bytes, 0 closed, -1 timeout. */
static long recv_some(struct tlsc *c, unsigned char *buf, size_t len, int64_t deadline)
{
    for (;;) {
        int r = mbedtls_ssl_read(&c->ssl, buf, len);
        if (r > 0)
            return r;
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (!wait_for(c, r, deadline))
                return -1;
            continue;
        }
        return 0; /* EOF, close_notify, reset or a TLS error: the connection is over */
    }
}

long tlsc_recv(struct tlsc *c, void *buf, size_t len, long timeout_ms)
{
    if (c->held_len > 0) {
        size_t n = c->held_len < len ? c->held_len : len;
        memcpy(buf, c->held, n);
        memmove(c->held, c->held + n, c->held_len - n);
        c->held_len -= n;
        return (long)n;
    }
    return recv_some(c, buf, len, now_ms() + timeout_ms);
}

/* Appends to the held bytes; exits on out of memory (the test's environment). */
static void hold(struct tlsc *c, const unsigned char *p, size_t n)
{
    unsigned char *h = realloc(c->held, c->held_len + n + 1);
    if (!h) {
        fprintf(stderr, "test environment: out of memory\n");
        exit(2);
    }
    memcpy(h + c->held_len, p, n);
    c->held = h;
    c->held_len += n;
}

/* Reads until the held bytes hold at least want bytes; false when the connection closed or
 * the deadline passed (*timed_out says which). */
static bool fill(struct tlsc *c, size_t want, int64_t deadline, bool *timed_out)
{
    unsigned char buf[16384];
    while (c->held_len < want) {
        long n = recv_some(c, buf, sizeof buf, deadline);
        if (n <= 0) {
            *timed_out = n < 0;
            return false;
        }
        hold(c, buf, (size_t)n);
    }
    return true;
}

/* Where the head's empty line ends in the held bytes, or 0 when it has not arrived. */
static size_t head_end(const struct tlsc *c)
{
    for (size_t i = 3; i < c->held_len; i++) {
        if (memcmp(c->held + i - 3, "\r\n\r\n", 4) == 0)
            return i + 1;
    }
    return 0;
}

int tlsc_read_answer(struct tlsc *c, int to_head, long timeout_ms, char **body_out, size_t *len_out)
{
    int64_t deadline = now_ms() + timeout_ms;
    bool timed_out = false;
    if (body_out)
        *body_out = NULL;
    if (len_out)
        *len_out = 0;
    for (;;) {
        size_t end = 0;
        while ((end = head_end(c)) == 0) {
            if (c->held_len > HEAD_MAX || !fill(c, c->held_len + 1, deadline, &timed_out))
                return timed_out ? -1 : 0;
        }
        char head[HEAD_MAX + 1];
        if (end > HEAD_MAX)
            return 0;
        memcpy(head, c->held, end);
        head[end] = '\0';
        int status = 0;
        if (strncmp(head, "HTTP/1.1 ", 9) != 0)
            return 0;
        status = (int)strtol(head + 9, NULL, 10);
        size_t clen = 0;
        for (char *line = strstr(head, "\r\n"); line && line[2] != '\r';
             line = strstr(line + 2, "\r\n")) {
            if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
                clen = (size_t)strtoull(line + 17, NULL, 10);
        }
        if (to_head)
            clen = 0;
        if (status >= 100 && status < 200) { /* interim: drop it and read the real answer */
            memmove(c->held, c->held + end, c->held_len - end);
            c->held_len -= end;
            continue;
        }
        if (!fill(c, end + clen, deadline, &timed_out))
            return timed_out ? -1 : 0;
        if (body_out) {
            char *b = malloc(clen + 1);
            if (!b) {
                fprintf(stderr, "test environment: out of memory\n");
                exit(2);
            }
            memcpy(b, c->held + end, clen);
            b[clen] = '\0';
            *body_out = b;
        }
        if (len_out)
            *len_out = clen;
        memmove(c->held, c->held + end + clen, c->held_len - end - clen);
        c->held_len -= end + clen;
        return status;
    }
}

int tlsc_closed_within(struct tlsc *c, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    unsigned char buf[16384];
    c->held_len = 0;
    for (;;) {
        long n = recv_some(c, buf, sizeof buf, deadline);
        if (n == 0)
            return 1;
        if (n < 0)
            return 0;
    }
}

void tlsc_close(struct tlsc *c)
{
    if (!c)
        return;
    (void)mbedtls_ssl_close_notify(&c->ssl);
    tlsc_free(c);
}
