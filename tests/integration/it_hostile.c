/* it_hostile.c - midway-server against clients that do not play by the rules, over real TLS:
 * pushes and pulls without a usable token are refused before their body is read (and without
 * the database), checked tokens are cached for auth-cache-ttl and revocation still lands
 * within it, a flood of health checks never takes the queue from pushes, /metrics moves to
 * its own plain-HTTP listener, and a handshake flood from one address (127.0.0.2) does not
 * stall another client (127.0.0.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgcluster.h"
#include "srvtest.h"
#include "testutil.h"
#include "tlsprobe.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct srvtest *srv;
static int metrics_port;
static char device_id[65], token[128], auth[200];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One plain-HTTP request to the metrics listener; the whole answer (malloc'd), "" when the
 * connection failed. */
static char *plain_request(int port, const char *request)
{
    char *out = calloc(1, 1 << 20);
    assert_non_null(out);
    int fd = tlsprobe_tcp_connect(port, NULL);
    if (fd < 0)
        return out;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t w = write(fd, request, strlen(request));
    assert_true(w == (ssize_t)strlen(request));
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, out + len, (1 << 20) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    close(fd);
    return out;
}

/* The value of the first sample line starting with name (with its labels), or -1. */
static long long metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
    }
    return -1;
}

static long long scrape(const char *name)
{
    char *text = plain_request(metrics_port, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    long long v = metric(text, name);
    free(text);
    return v;
}

/* ---- refused before the body ----------------------------------------------------------- */

static void unusable_tokens_are_refused_before_the_body(void **state)
{
    (void)state;
    /* Each announces 4 MB of body and sends none of it: only an answer given from the head
     * alone comes back before body-timeout (60 s). */
    static const char *const heads[] = {
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 4000000\r\n\r\n",
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
        "Content-Length: 4000000\r\n\r\n",
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-midway-token\r\n"
        "Content-Length: 4000000\r\n\r\n",
        /* mwd_ and 42 characters: one short of a token */
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Bearer mwd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
        "Content-Length: 4000000\r\n\r\n",
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        "Content-Length: 4000000\r\n\r\n",
        "GET /v1/sync/pull?limit=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n",
    };
    long long before = scrape("midway_http_requests_total{route=\"push\",status=\"401\"}");
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        struct tlsprobe *c = tlsprobe_open(srvtest_port(srv), NULL, 10000);
        assert_non_null(c);
        assert_int_equal(tlsprobe_send(c, heads[i], strlen(heads[i])), 0);
        char *text = NULL;
        double t0 = now_s();
        int st = tlsprobe_response(c, 5000, &text);
        printf("early refusal %zu: %d in %.1f ms\n", i, st, (now_s() - t0) * 1000);
        assert_int_equal(st, 401);
        assert_non_null(strstr(text, "\"unauthorized\""));
        assert_non_null(strstr(text, "WWW-Authenticate: Bearer"));
        assert_non_null(strstr(text, "Connection: close"));
        assert_null(strstr(text, "100 Continue"));
        free(text);
        /* Then closed, like the other early errors. */
        assert_int_equal(tlsprobe_response(c, 5000, NULL), 0);
        tlsprobe_close(c);
    }
    long long after = scrape("midway_http_requests_total{route=\"push\",status=\"401\"}");
    assert_true(after - (before < 0 ? 0 : before) >= 5);

    /* A token of the right shape goes on: its body is awaited, then the worker looks it up. */
    struct tlsprobe *c = tlsprobe_open(srvtest_port(srv), NULL, 10000);
    assert_non_null(c);
    const char *head = "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer mwd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
                       "Content-Length: 2\r\n\r\n";
    assert_int_equal(tlsprobe_send(c, head, strlen(head)), 0);
    assert_int_equal(tlsprobe_response(c, 1000, NULL), 0); /* nothing yet: body awaited */
    assert_int_equal(tlsprobe_send(c, "{}", 2), 0);
    char *text = NULL;
    assert_int_equal(tlsprobe_response(c, 10000, &text), 401);
    assert_non_null(strstr(text, "unknown or revoked device token"));
    free(text);
    tlsprobe_close(c);
}

/* The one worker is held by a push waiting for its device row (locked here, as a long batch
 * of the same device would); a request without a token is still answered at once, because
 * it never needs a worker. */
static void early_refusal_takes_no_worker(void **state)
{
    (void)state;
    PGconn *pg = PQconnectdb(srvtest_owner_conninfo(srv));
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *res = PQexec(pg, "BEGIN");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    const char *params[1] = {device_id};
    res = PQexecParams(pg, "SELECT 1 FROM device WHERE device_id = $1 FOR UPDATE", 1, NULL, params,
                       NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);

    char body[256], req[1024];
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e60\","
             "\"ops\":[]}",
             device_id);
    snprintf(req, sizeof req,
             "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             auth, strlen(body), body);
    struct tlsprobe *pusher = tlsprobe_open(srvtest_port(srv), NULL, 10000);
    assert_non_null(pusher);
    assert_int_equal(tlsprobe_send(pusher, req, strlen(req)), 0);
    sleep_ms(300); /* the worker is now waiting for the lock */
    assert_int_equal(tlsprobe_response(pusher, 200, NULL), 0);

    static const char *const no_token[] = {
        "GET /v1/sync/pull HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/sync/pull HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n",
        "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    };
    for (size_t i = 0; i < sizeof no_token / sizeof no_token[0]; i++) {
        struct tlsprobe *c = tlsprobe_open(srvtest_port(srv), NULL, 10000);
        assert_non_null(c);
        assert_int_equal(tlsprobe_send(c, no_token[i], strlen(no_token[i])), 0);
        double t0 = now_s();
        int st = tlsprobe_response(c, 3000, NULL);
        printf("no token while the worker is held: %d in %.1f ms\n", st, (now_s() - t0) * 1000);
        assert_int_equal(st, 401);
        tlsprobe_close(c);
    }

    res = PQexec(pg, "COMMIT");
    PQclear(res);
    PQfinish(pg);
    assert_int_equal(tlsprobe_response(pusher, 30000, NULL), 200);
    tlsprobe_close(pusher);
}

/* ---- the token cache ------------------------------------------------------------------- */

static void checked_tokens_are_cached_and_revocation_lands_within_the_ttl(void **state)
{
    (void)state;
    char id[65], tok[128], hdr[200];
    srvtest_add_device(srv, "cached", "scanner", id, tok);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", tok);
    const char *h[] = {hdr, NULL};
    long long hits0 = scrape("midway_auth_cache_lookups_total{result=\"hit\"}");
    long long miss0 = scrape("midway_auth_cache_lookups_total{result=\"miss\"}");
    assert_true(hits0 >= 0 && miss0 >= 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(
            srvtest_request(srv, "GET", "/v1/sync/pull?limit=1", h, NULL, 0, NULL, NULL), 200);
    long long hits = scrape("midway_auth_cache_lookups_total{result=\"hit\"}") - hits0;
    long long misses = scrape("midway_auth_cache_lookups_total{result=\"miss\"}") - miss0;
    printf("10 pulls within the 2 s ttl: %lld cache hits, %lld lookups\n", hits, misses);
    assert_true(misses >= 1);
    assert_true(hits >= 5); /* 10 pulls take well under 2 s: most come from the cache */

    const char *revoke[] = {"device", "revoke", id, NULL};
    assert_int_equal(srvtest_admin(srv, NULL, NULL, revoke), 0);
    double t0 = now_s();
    /* A push checks the device row in its own transaction: refused at once. */
    char body[256];
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\","
             "\"ops\":[]}",
             id);
    assert_int_equal(
        srvtest_request(srv, "POST", "/v1/sync/push", h, body, strlen(body), NULL, NULL), 401);
    int st = 0;
    while (st != 401 && now_s() - t0 < 30) {
        st = srvtest_request(srv, "GET", "/v1/sync/pull?limit=1", h, NULL, 0, NULL, NULL);
        if (st != 401)
            sleep_ms(50);
    }
    double took = now_s() - t0;
    printf("revoked device: pulls refused %.2f s after the revocation (auth-cache-ttl 2 s)\n",
           took);
    assert_int_equal(st, 401);
    assert_true(took < 2.0 + 8.0); /* the ttl, and a generous allowance for a slow machine */
    /* And it stays refused. */
    assert_int_equal(srvtest_request(srv, "GET", "/v1/sync/pull", h, NULL, 0, NULL, NULL), 401);
}

/* ---- health checks have a lane of their own ---------------------------------------------- */

#define HEALTH_CONNS  48
#define HEALTH_ROUNDS 10

static void healthz_flood_never_takes_the_queue_from_pushes(void **state)
{
    (void)state;
    /* The server has one worker and a queue of 16, of which health checks may hold 2.
     * Each round, 48 connections ask /healthz at once and then a device pushes. */
    static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char push_req[1024];
    char body[256];
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\","
             "\"ops\":[]}",
             device_id);
    snprintf(push_req, sizeof push_req,
             "POST /v1/sync/push HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             auth, strlen(body), body);
    struct tlsprobe *hc[HEALTH_CONNS] = {NULL};
    struct tlsprobe *dev = NULL;
    int push_ok = 0, push_503 = 0, health_ok = 0, health_503 = 0;
    bool retry_after_seen = false;
    for (int round = 0; round < HEALTH_ROUNDS; round++) {
        for (int i = 0; i < HEALTH_CONNS; i++) {
            if (!hc[i])
                hc[i] = tlsprobe_open(srvtest_port(srv), NULL, 10000);
            assert_non_null(hc[i]);
        }
        if (!dev)
            dev = tlsprobe_open(srvtest_port(srv), NULL, 10000);
        assert_non_null(dev);
        for (int i = 0; i < HEALTH_CONNS; i++)
            assert_int_equal(tlsprobe_send(hc[i], HEALTHZ, strlen(HEALTHZ)), 0);
        assert_int_equal(tlsprobe_send(dev, push_req, strlen(push_req)), 0);
        char *text = NULL;
        int st = tlsprobe_response(dev, 30000, &text);
        if (st == 200) {
            push_ok++;
        } else {
            push_503 += st == 503;
            fprintf(stderr, "push answered %d: %s\n", st, text);
            tlsprobe_close(dev);
            dev = NULL;
        }
        free(text);
        for (int i = 0; i < HEALTH_CONNS; i++) {
            text = NULL;
            st = tlsprobe_response(hc[i], 30000, &text);
            if (st == 200) {
                health_ok++;
                free(text);
                continue;
            }
            /* 0: closed unanswered, when opening the others took longer than the
             * header-timeout this connection had for its first request (a slow machine). */
            assert_true(st == 503 || st == 0);
            health_503 += st == 503;
            if (strstr(text, "Retry-After: 1") && strstr(text, "\"overloaded\""))
                retry_after_seen = true;
            free(text);
            tlsprobe_close(hc[i]); /* a 503 closes the connection */
            hc[i] = NULL;
        }
    }
    for (int i = 0; i < HEALTH_CONNS; i++)
        tlsprobe_close(hc[i]);
    tlsprobe_close(dev);
    printf("%d rounds of %d concurrent health checks and a push: pushes %d ok, %d 503; health "
           "checks %d ok, %d 503\n",
           HEALTH_ROUNDS, HEALTH_CONNS, push_ok, push_503, health_ok, health_503);
    assert_int_equal(push_ok, HEALTH_ROUNDS);
    assert_true(health_503 > 0);   /* the lane's bound was reached ... */
    assert_true(retry_after_seen); /* ... and said so with Retry-After */
    assert_true(health_ok > 0);
    assert_int_equal(scrape("midway_unauthenticated_in_flight"), 0);
}

/* ---- the metrics listener ----------------------------------------------------------------- */

static void metrics_move_to_their_own_listener(void **state)
{
    (void)state;
    char *text = plain_request(metrics_port, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_non_null(strstr(text, "HTTP/1.1 200 "));
    assert_non_null(strstr(text, "\nmidway_connections_open "));
    assert_non_null(strstr(text, "\nmidway_auth_cache_lookups_total{result=\"hit\"} "));
    free(text);
    text = plain_request(metrics_port, "HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_non_null(strstr(text, "HTTP/1.1 200 "));
    assert_null(strstr(text, "midway_connections_open"));
    free(text);
    text = plain_request(metrics_port, "GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_non_null(strstr(text, "HTTP/1.1 404 "));
    free(text);
    text = plain_request(metrics_port,
                         "POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n");
    assert_non_null(strstr(text, "HTTP/1.1 405 "));
    free(text);
    text = plain_request(metrics_port, "GET /metrics HTTP/1.1\r\n\r\n"); /* no Host */
    assert_non_null(strstr(text, "HTTP/1.1 400 "));
    free(text);
    /* Off the public port: 404 there, like any path it does not serve. */
    char *body = NULL;
    assert_int_equal(srvtest_request(srv, "GET", "/metrics", NULL, NULL, 0, &body, NULL), 404);
    assert_non_null(strstr(body, "not_found"));
    free(body);
    /* A scraper that connects and says nothing is cut off (header-timeout 5 s here). */
    int fd = tlsprobe_tcp_connect(metrics_port, NULL);
    assert_true(fd >= 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 30000), 1);
    char b[16];
    assert_true(read(fd, b, sizeof b) <= 0);
    close(fd);
}

/* ---- a handshake flood from one address --------------------------------------------------- */

#define FLOOD_CONNS   1024
/* New flood connections a second: more than the server can make handshakes for (600 to
 * 1,400 a second measured here), far fewer than it can accept and close. */
#define FLOOD_RATE    1500
#define FLOOD_SECONDS 4.0

struct flood {
    int port;
    unsigned char hello[4096];
    size_t hello_len;
    volatile int stop;
    long connects, answered, refused;
};

static void rst_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Non-blocking connect from 127.0.0.2; -1 when the kernel refuses (ports, files). */
static int flood_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(0x7f000002); /* 127.0.0.2 */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&from, sizeof from) != 0 ||
        (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Up to FLOOD_CONNS connections at a time and FLOOD_RATE new ones a second, each: connect,
 * send a ClientHello, wait for the server's first answer bytes (its half of the handshake:
 * one ECDHE key and one signature, the expensive part) or for the close, reset, repeat. The
 * sender spends a send() per handshake the server has to make. The rate is bounded so that
 * what is measured is the server, not the kernel of a shared two-core machine setting up
 * loopback connections as fast as one thread can ask (a real flood comes from elsewhere). */
static void *flood_main(void *arg)
{
    struct flood *f = arg;
    struct pollfd p[FLOOD_CONNS];
    bool sent[FLOOD_CONNS];
    for (int i = 0; i < FLOOD_CONNS; i++) {
        p[i].fd = -1;
        p[i].events = 0;
        sent[i] = false;
    }
    double start = now_s();
    while (!f->stop) {
        long budget = (long)((now_s() - start) * FLOOD_RATE) - f->connects;
        for (int i = 0; i < FLOOD_CONNS && budget > 0; i++) {
            if (p[i].fd >= 0)
                continue;
            p[i].fd = flood_connect(f->port);
            p[i].events = POLLOUT;
            p[i].revents = 0;
            sent[i] = false;
            f->connects++;
            budget--;
        }
        int r = poll(p, FLOOD_CONNS, 5);
        if (r < 0 && errno != EINTR)
            break;
        for (int i = 0; i < FLOOD_CONNS; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            if (!sent[i] && (p[i].revents & POLLOUT)) {
                if (send(p[i].fd, f->hello, f->hello_len, MSG_NOSIGNAL) != (ssize_t)f->hello_len) {
                    f->refused++;
                    rst_close(p[i].fd);
                    p[i].fd = -1;
                    continue;
                }
                sent[i] = true;
                p[i].events = POLLIN;
                continue;
            }
            char buf[8192];
            ssize_t n = recv(p[i].fd, buf, sizeof buf, 0);
            if (n > 0)
                f->answered++;
            else
                f->refused++;
            rst_close(p[i].fd);
            p[i].fd = -1;
        }
    }
    for (int i = 0; i < FLOOD_CONNS; i++) {
        if (p[i].fd >= 0)
            rst_close(p[i].fd);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct latencies {
    double keepalive[4096];
    double fresh[4096];
    int nk, nf, failed;
};

/* From 127.0.0.1, for `seconds`: a request on a keep-alive connection every 20 ms and, every
 * 5th time, a new connection (handshake and request). */
static void measure(int port, double seconds, struct latencies *l)
{
    static const char REQ[] =
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"; /* answered by the I/O thread */
    memset(l, 0, sizeof *l);
    struct tlsprobe *ka = tlsprobe_open(port, "127.0.0.1", 30000);
    assert_non_null(ka);
    double end = now_s() + seconds;
    for (int i = 0; now_s() < end && l->nk < 4096; i++) {
        double t0 = now_s();
        if (tlsprobe_send(ka, REQ, strlen(REQ)) != 0 || tlsprobe_response(ka, 30000, NULL) != 404) {
            l->failed++;
            tlsprobe_close(ka);
            ka = tlsprobe_open(port, "127.0.0.1", 30000);
            assert_non_null(ka);
            continue;
        }
        l->keepalive[l->nk++] = (now_s() - t0) * 1000;
        if (i % 5 == 0 && l->nf < 4096) {
            t0 = now_s();
            struct tlsprobe *c = tlsprobe_open(port, "127.0.0.1", 30000);
            if (c && tlsprobe_send(c, REQ, strlen(REQ)) == 0 &&
                tlsprobe_response(c, 30000, NULL) == 404)
                l->fresh[l->nf++] = (now_s() - t0) * 1000;
            else
                l->failed++;
            tlsprobe_close(c);
        }
        sleep_ms(20);
    }
    tlsprobe_close(ka);
    qsort(l->keepalive, (size_t)l->nk, sizeof(double), cmp_double);
    qsort(l->fresh, (size_t)l->nf, sizeof(double), cmp_double);
}

static double pct(const double *v, int n, double q)
{
    if (n == 0)
        return 0;
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

static void report(const char *what, const struct latencies *l)
{
    printf("%s: keep-alive request p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d); new connection "
           "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d); %d failed\n",
           what, pct(l->keepalive, l->nk, 0.5), pct(l->keepalive, l->nk, 0.99),
           l->nk ? l->keepalive[l->nk - 1] : 0, l->nk, pct(l->fresh, l->nf, 0.5),
           pct(l->fresh, l->nf, 0.99), l->nf ? l->fresh[l->nf - 1] : 0, l->nf, l->failed);
}

/* Generous, and only has to tell "served" from "stalled" on a slow, shared machine. Measured
 * on two cores shared with other builds: with the default limits the keep-alive p99 was
 * 3-75 ms (about 180 requests answered) and a new connection's p50 8-25 ms; without them
 * (both limits 0) the keep-alive p99 was 720-1,260 ms with 7-11 requests answered in 4 s,
 * and a new connection took 2.2-3.5 s. A faster flood (4,000 a second) made the run with the
 * limits noisy too on a loaded machine: the kernel's own work for so many loopback
 * connections competes for the same two cores. */
#define FLOOD_P99_BOUND_MS 500.0

static void handshake_flood_from_one_address_does_not_stall_others(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* A server of its own with the default per-address limits (srvtest turns them off). */
    char mport[16], mlisten[64];
    struct mw_error err = {0};
    int flood_mport = 0;
    assert_int_equal(mw_pgcluster_free_port(&flood_mport, &err), MW_OK);
    snprintf(mport, sizeof mport, "%d", flood_mport);
    snprintf(mlisten, sizeof mlisten, "127.0.0.1:%s", mport);
    const char *flags[] = {"--max-connections-per-address",
                           "1000",
                           "--handshakes-per-second-per-address",
                           "100",
                           "--metrics-listen",
                           mlisten,
                           NULL};
    struct srvtest *fs = srvtest_start_with(flags);
    int port = srvtest_port(fs);

    struct latencies *quiet = calloc(1, sizeof *quiet), *loud = calloc(1, sizeof *loud);
    assert_non_null(quiet);
    assert_non_null(loud);
    measure(port, 1.5, quiet);
    report("no flood", quiet);

    struct flood *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->port = port;
    f->hello_len = tlsprobe_client_hello(f->hello, sizeof f->hello);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, flood_main, f), 0);
    sleep_ms(300); /* the flood is on before the measurement starts */
    measure(port, FLOOD_SECONDS, loud);
    f->stop = 1;
    pthread_join(t, NULL);
    report("handshake flood from 127.0.0.2", loud);
    printf("flood: %ld connections from 127.0.0.2 in about %.1f s, %ld got a handshake "
           "answer, %ld were closed unanswered\n",
           f->connects, FLOOD_SECONDS + 0.3, f->answered, f->refused);

    char req[] = "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n";
    char *text = plain_request(flood_mport, req);
    long long refused =
        metric(text, "midway_connections_refused_per_address_total{reason=\"handshakes\"}");
    printf("server: %lld connections refused at accept (handshakes-per-second-per-address 100)\n",
           refused);
    free(text);
    /* Other clients kept being served, and the server is fine. */
    assert_int_equal(srvtest_request(fs, "GET", "/healthz", NULL, NULL, 0, NULL, NULL), 200);
    assert_int_equal(srvtest_stop(fs), 0);
    assert_int_equal(loud->failed, 0);
    /* Served at all: a request every 20 ms for 4 s is up to ~150; a stalled I/O thread
     * managed 2 of them in the run without the limits. */
    assert_true(loud->nk >= 10);
    assert_true(pct(loud->keepalive, loud->nk, 0.99) < FLOOD_P99_BOUND_MS);
    /* A new connection includes this client's own handshake crypto, slow on a busy machine
     * (its p50 reached 360 ms with the limits at load 9, against 3.3 s without them). */
    assert_true(pct(loud->fresh, loud->nf, 0.5) < 2 * FLOOD_P99_BOUND_MS);
    assert_true(pct(loud->fresh, loud->nf, 0.99) < 6 * FLOOD_P99_BOUND_MS);
    assert_true(loud->nf >= 2);
    assert_true(refused > 0);
    free(quiet);
    free(loud);
    free(f);
}

/* ---- the shared server ------------------------------------------------------------------- */

static char metrics_listen[64];

static int setup(void **state)
{
    (void)state;
    struct mw_error err = {0};
    if (mw_pgcluster_free_port(&metrics_port, &err) != MW_OK)
        return -1;
    snprintf(metrics_listen, sizeof metrics_listen, "127.0.0.1:%d", metrics_port);
    const char *flags[] = {"--workers",
                           "1",
                           "--queue-max",
                           "16",
                           "--unauth-queue-max",
                           "2",
                           "--auth-cache-ttl",
                           "2s",
                           "--header-timeout",
                           "5s",
                           "--metrics-listen",
                           metrics_listen,
                           NULL};
    srv = srvtest_start_with(flags);
    srvtest_add_device(srv, "scanner-1", "scanner", device_id, token);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int status = srvtest_stop(srv);
    if (status != 0) {
        fprintf(stderr, "server exited with %d at SIGTERM\n", status);
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unusable_tokens_are_refused_before_the_body),
        cmocka_unit_test(early_refusal_takes_no_worker),
        cmocka_unit_test(checked_tokens_are_cached_and_revocation_lands_within_the_ttl),
        cmocka_unit_test(healthz_flood_never_takes_the_queue_from_pushes),
        cmocka_unit_test(metrics_move_to_their_own_listener),
        cmocka_unit_test(handshake_flood_from_one_address_does_not_stall_others),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
