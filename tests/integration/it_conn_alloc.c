/* it_conn_alloc.c - the server's connection state machine (serve.c, http.c) when memory runs
 * out. The real serving code runs in this process (mw_serve_run on its own thread, its own
 * local PostgreSQL and CA, as `midway-server serve` sets them up) so mw_mem_fail_at() reaches
 * it. A client scenario covering the handshake, request parsing (whole, split and pipelined
 * heads, 100-continue, refused requests), answers from the I/O thread and from a worker,
 * HEAD, keep-alive, lingering after an early answer and Connection: close runs once with the
 * Nth allocation from then on failing, for N = 1, 2, ... until a pass runs with none failing.
 * After each pass the injection stops and the server must serve a fresh client at once.
 * Under AddressSanitizer a use of a freed connection or a leak fails the program.
 *
 * The client is mbedTLS on the C library's heap (tlsclient.h), so only the server's
 * allocations fail; mbedTLS's own allocations inside the server are not routed through
 * mem.h (Debian's build has no MBEDTLS_PLATFORM_MEMORY), so the handshake's share here is
 * the connection's and its TLS state's allocations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "localdb.h"
#include "mem.h"
#include "midway/log.h"
#include "serve.h"
#include "testutil.h"
#include "tlsca.h"
#include "tlsclient.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Long enough for a loaded machine under ASan; a pass that hits it means the server neither
 * answered nor closed: a hang, which is a failure. */
#define STEP_TIMEOUT_MS 20000
/* Allocations one pass of the scenario may make before the sweep gives up. */
#define SWEEP_MAX       5000

static struct {
    char *dir;
    char *ca;
    char cert[4200];
    char key[4200];
    struct mw_localdb *db;
    struct mw_serve_config cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int port;       /* guarded by mu; 0 until the server listens */
    enum mw_err rc; /* mw_serve_run's result, read after the join */
    struct mw_error err;
} fx = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void on_ready(void *arg, int port)
{
    (void)arg;
    pthread_mutex_lock(&fx.mu);
    fx.port = port;
    pthread_cond_signal(&fx.cv);
    pthread_mutex_unlock(&fx.mu);
}

static void *serve_thread(void *arg)
{
    (void)arg;
    fx.rc = mw_serve_run(&fx.cfg, on_ready, NULL, &fx.err);
    if (fx.rc != MW_OK) { /* never listened: wake the waiting setup */
        fprintf(stderr, "serve: %s\n", fx.err.msg);
        on_ready(NULL, -1);
    }
    return NULL;
}

/* ---- the client's side ------------------------------------------------------------------- */

struct pass {
    struct tlsc *c; /* the connection in use, NULL when the server closed the last one */
    int answers;    /* answers received */
    int closed;     /* connections the server closed or refused */
};

static void pass_reconnect(struct pass *p, bool fresh)
{
    if (p->c && !fresh)
        return;
    tlsc_close(p->c);
    p->c = tlsc_connect(fx.port, fx.ca, 0, STEP_TIMEOUT_MS);
    if (!p->c)
        p->closed++;
}

/* Sends the pieces (NULL-terminated) as separate writes, then reads up to n answers. Stops at
 * a closed connection; a server that neither answers nor closes fails the test. */
static void step(struct pass *p, bool fresh, const char *const *pieces, int n, bool head)
{
    pass_reconnect(p, fresh);
    if (!p->c)
        return;
    for (size_t i = 0; pieces[i]; i++) {
        if (tlsc_send(p->c, pieces[i], strlen(pieces[i]), STEP_TIMEOUT_MS) != 0)
            break; /* closed under us: the reads below see it */
    }
    for (int i = 0; i < n; i++) {
        int status = tlsc_read_answer(p->c, head, STEP_TIMEOUT_MS, NULL, NULL);
        if (status < 0)
            fail_msg("no answer and no close within %d ms (step with %d answers)", STEP_TIMEOUT_MS,
                     n);
        if (status == 0) {
            tlsc_close(p->c);
            p->c = NULL;
            p->closed++;
            return;
        }
        p->answers++;
    }
}

#define HOST "Host: localhost\r\n"
/* A token of the right shape that no device has: the push goes to a worker, which answers
 * 401 (a push with no token at all is refused from its head, and its connection closed). */
#define SHAPED_TOKEN "Authorization: Bearer mwd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"

/* One pass over every path of the state machine. */
static void scenario(struct pass *p)
{
    /* A worker's answer, keep-alive. */
    const char *const healthz[] = {"GET /healthz HTTP/1.1\r\n" HOST "\r\n", NULL};
    step(p, true, healthz, 1, false);
    /* Pipelined on the same connection: answers from the I/O thread (metrics, 404) and a
     * push (a worker: 401 for a token no device has) that asks for 100-continue; its body is
     * already on the way, as a client that does not wait for 100 sends it. */
    const char *const pipelined[] = {"GET /metrics HTTP/1.1\r\n" HOST "\r\n"
                                     "GET /nope HTTP/1.1\r\n" HOST "\r\n"
                                     "POST /v1/sync/push HTTP/1.1\r\n" HOST SHAPED_TOKEN
                                     "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                                     "{}", NULL};
    step(p, false, pipelined, 3, false);
    /* HEAD: the answer's head only. */
    const char *const head[] = {"HEAD /healthz HTTP/1.1\r\n" HOST "\r\n", NULL};
    step(p, false, head, 1, true);
    /* A head in pieces, then a body in pieces. */
    const char *const split[] = {"POST /v1/sync/pu",
                                 "sh HTTP/1.1\r\n" HOST SHAPED_TOKEN "Content-Le",
                                 "ngth: 7\r\n\r\n{\"a\"", ":1}", NULL};
    step(p, false, split, 1, false);
    /* Refused before the body: 413, then the server lingers reading what still comes. */
    const char *const too_big[] = {"POST /v1/sync/push HTTP/1.1\r\n" HOST
                                   "Content-Length: 1000000000\r\n\r\n",
                                   "some of the body", NULL};
    step(p, true, too_big, 1, false);
    /* Not HTTP at all: 400. */
    const char *const garbage[] = {"NOT HTTP\r\n\r\n", NULL};
    step(p, true, garbage, 1, false);
    /* Connection: close after the answer. */
    const char *const closing[] = {"GET /healthz HTTP/1.1\r\n" HOST "Connection: close\r\n\r\n",
                                   NULL};
    step(p, true, closing, 1, false);
    tlsc_close(p->c);
    p->c = NULL;
}

/* A new client is served at once: /healthz (a worker) and /metrics (the I/O thread) on one
 * keep-alive connection. Returns the connection for the caller to close. */
static struct tlsc *check_serving(void)
{
    struct tlsc *c = tlsc_connect(fx.port, fx.ca, 0, STEP_TIMEOUT_MS);
    assert_non_null(c);
    const char *req = "GET /healthz HTTP/1.1\r\n" HOST "\r\nGET /metrics HTTP/1.1\r\n" HOST "\r\n";
    assert_int_equal(tlsc_send(c, req, strlen(req), STEP_TIMEOUT_MS), 0);
    assert_int_equal(tlsc_read_answer(c, false, STEP_TIMEOUT_MS, NULL, NULL), 200);
    assert_int_equal(tlsc_read_answer(c, false, STEP_TIMEOUT_MS, NULL, NULL), 200);
    return c;
}

/* midway_connections_open as /metrics reports it on c. */
static long connections_open(struct tlsc *c)
{
    const char *req = "GET /metrics HTTP/1.1\r\n" HOST "\r\n";
    assert_int_equal(tlsc_send(c, req, strlen(req), STEP_TIMEOUT_MS), 0);
    char *body = NULL;
    assert_int_equal(tlsc_read_answer(c, false, STEP_TIMEOUT_MS, &body, NULL), 200);
    const char *line = strstr(body, "\nmidway_connections_open ");
    assert_non_null(line);
    long n = strtol(line + strlen("\nmidway_connections_open "), NULL, 10);
    free(body);
    return n;
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void scenario_serves_without_failures(void **state)
{
    (void)state;
    struct pass p = {0};
    scenario(&p);
    assert_int_equal(p.answers, 9);
    assert_int_equal(p.closed, 0);
}

static void every_allocation_fails_in_turn(void **state)
{
    (void)state;
    int failed_passes = 0;
    long n = 1;
    for (; n <= SWEEP_MAX; n++) {
        struct pass p = {0};
        mw_mem_fail_at(n);
        scenario(&p);
        bool fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (fired)
            failed_passes++;
        tlsc_close(check_serving());
        if (!fired)
            break; /* every allocation the scenario makes has failed once */
    }
    print_message("allocation failures: %d passes with an injected failure, sweep ended at "
                  "N=%ld\n",
                  failed_passes, n);
    assert_true(n <= SWEEP_MAX);
    assert_true(failed_passes > 20);

    /* Nothing was left behind: once the lingering and closing ones are gone, the only
     * connection the server counts is the one asking. */
    struct tlsc *c = check_serving();
    long open = -1;
    for (int i = 0; i < 100 && open != 1; i++) {
        open = connections_open(c);
        if (open != 1) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(open, 1);
    tlsc_close(c);
}

static int setup(void **state)
{
    (void)state;
    mw_log_to_stderr();
    mw_log_threshold = MW_LOG_ERROR; /* one INFO line per request would drown the output */
    fx.dir = tu_mkdtemp("conn_alloc");
    struct mw_error err = {0};
    char *tls = tu_path(fx.dir, "tls");
    if (mw_tlsca_ensure(tls, NULL, &err) != MW_OK) {
        fprintf(stderr, "setup: TLS files: %s\n", err.msg);
        return -1;
    }
    fx.ca = tu_path(tls, "ca.pem");
    snprintf(fx.cert, sizeof fx.cert, "%s/server.pem", tls);
    snprintf(fx.key, sizeof fx.key, "%s/server.key", tls);
    free(tls);
    if (mw_localdb_open(fx.dir, &fx.db, &err) != MW_OK) {
        fprintf(stderr, "setup: local database: %s\n", err.msg);
        return -1;
    }
    fx.cfg = (struct mw_serve_config){
        .listen = "127.0.0.1:0",
        .tls_cert = fx.cert,
        .tls_key = fx.key,
        .db_conninfo = fx.db->runtime_conninfo,
        .workers = 2,
        .queue_max = 16,
        .max_connections = 64,
        .body_max = 64 * 1024,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 10000,
        .write_timeout_ms = 10000,
        .write_total_timeout_ms = 60000,
        .idle_timeout_ms = 30000,
        .shutdown_grace_ms = 1000,
        .pull_limit_default = 100,
    };
    if (pthread_create(&fx.thread, NULL, serve_thread, NULL) != 0)
        return -1;
    pthread_mutex_lock(&fx.mu);
    while (fx.port == 0)
        pthread_cond_wait(&fx.cv, &fx.mu);
    pthread_mutex_unlock(&fx.mu);
    return fx.port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (fx.port > 0)
        kill(getpid(), SIGTERM); /* mw_serve_run's own handler: drain and return */
    pthread_join(fx.thread, NULL);
    if (fx.rc != MW_OK) {
        fprintf(stderr, "serve ended with %s: %s\n", mw_err_name(fx.rc), fx.err.msg);
        rc = -1;
    }
    struct mw_error err = {0};
    mw_localdb_close(fx.db, true, &err);
    if (err.code != MW_OK) {
        fprintf(stderr, "stopping the local database: %s\n", err.msg);
        rc = -1;
    }
    if (!tu_keep())
        tu_rmrf(fx.dir);
    free(fx.dir);
    free(fx.ca);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scenario_serves_without_failures),
        cmocka_unit_test(every_allocation_fails_in_turn),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
