/* it_server.c - midway-server serve as devices and operators meet it: the real binary, real
 * TLS verified with the local CA, its own PostgreSQL. Routes, status codes, bounds, slow and
 * many clients, a PostgreSQL restart, and a clean SIGTERM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "buf.h"
#include "gunzip.h"
#include "mem.h"
#include "pgcluster.h"
#include "srvtest.h"
#include "testutil.h"
#include "timestamp.h"
#include "uuid.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct srvtest *srv;
static char device_id[65], token[128];
static char other_id[65], other_token[128];
static char auth[200];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int get(const char *path, char **body)
{
    return srvtest_request(srv, "GET", path, NULL, NULL, 0, body, NULL);
}

static int push(const char *const *headers, const char *body, size_t len, char **out)
{
    return srvtest_request(srv, "POST", "/v1/sync/push", headers, body, len, out, NULL);
}

static void healthz_and_correlation_id(void **state)
{
    (void)state;
    char *body = NULL;
    char cid[80];
    int st = srvtest_request(srv, "GET", "/healthz", NULL, NULL, 0, &body, cid);
    assert_int_equal(st, 200);
    assert_non_null(strstr(body, "\"ok\""));
    assert_int_equal(strlen(cid), 36); /* a UUID made by the server */
    free(body);

    const char *mine = "0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f";
    char hdr[80];
    snprintf(hdr, sizeof hdr, "X-Correlation-ID: %s", mine);
    const char *h[] = {hdr, NULL};
    st = srvtest_request(srv, "GET", "/healthz", h, NULL, 0, NULL, cid);
    assert_int_equal(st, 200);
    assert_string_equal(cid, mine); /* echoed */
    char *log = tu_read_file(srvtest_log(srv), NULL);
    assert_non_null(strstr(log, mine)); /* and on the server's log line */
    free(log);
}

static void tls_verified_with_the_ca_only(void **state)
{
    (void)state;
    /* The system's CA store does not know the local CA: verification must fail. */
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", srvtest_url(srv));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    CURLcode rc = curl_easy_perform(c);
    assert_int_equal(rc, CURLE_PEER_FAILED_VERIFICATION);
    curl_easy_cleanup(c);
    /* With the CA it works (every other test relies on it too). */
    assert_int_equal(get("/healthz", NULL), 200);
}

static void routes_404_405(void **state)
{
    (void)state;
    char *body = NULL;
    assert_int_equal(get("/nope", &body), 404);
    assert_non_null(strstr(body, "\"error\""));
    assert_non_null(strstr(body, "not_found"));
    free(body);
    assert_int_equal(get("/v1/sync/push", &body), 405);
    assert_non_null(strstr(body, "method_not_allowed"));
    free(body);
    assert_int_equal(srvtest_request(srv, "DELETE", "/healthz", NULL, NULL, 0, NULL, NULL), 405);
}

static void metrics_are_prometheus_text(void **state)
{
    (void)state;
    char *body = NULL;
    assert_int_equal(get("/metrics", &body), 200);
    assert_non_null(strstr(body, "# TYPE midway_http_requests_total counter"));
    assert_non_null(strstr(body, "midway_http_requests_total{route=\"healthz\",status=\"200\"}"));
    assert_non_null(strstr(body, "midway_http_request_duration_seconds_bucket"));
    assert_non_null(strstr(body, "midway_worker_queue_depth"));
    assert_non_null(strstr(body, "midway_db_pool_in_use"));
    assert_non_null(strstr(body, "midway_connections_open"));
    assert_non_null(strstr(body, "midway_tls_handshake_failures_total"));
    assert_non_null(strstr(body, "midway_ops_total{outcome=\"applied\"}"));
    free(body);
}

static void tokens_401(void **state)
{
    (void)state;
    const char *body = "{\"device_id\":\"x\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\",\"ops\":[]}";
    char *out = NULL;
    assert_int_equal(push(NULL, body, strlen(body), &out), 401); /* missing */
    assert_non_null(strstr(out, "unauthorized"));
    free(out);
    const char *wrong[] = {"Authorization: Bearer mwd_not-a-real-token-at-all-0000000000000", NULL};
    assert_int_equal(push(wrong, body, strlen(body), NULL), 401);
    const char *basic[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};
    assert_int_equal(push(basic, body, strlen(body), NULL), 401);
    assert_int_equal(srvtest_request(srv, "GET", "/v1/sync/pull", NULL, NULL, 0, NULL, NULL), 401);

    /* Revoked: works before, 401 after: a push at once (its batch checks the device row), a
     * pull within auth-cache-ttl (5 s by default; 30 s allowed for a slow machine). */
    char id[65], tok[128], hdr[200];
    srvtest_add_device(srv, "to-revoke", "scanner", id, tok);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", tok);
    const char *h[] = {hdr, NULL};
    assert_int_equal(srvtest_request(srv, "GET", "/v1/sync/pull", h, NULL, 0, NULL, NULL), 200);
    const char *revoke[] = {"device", "revoke", id, NULL};
    assert_int_equal(srvtest_admin(srv, NULL, NULL, revoke), 0);
    char revoked_body[256];
    snprintf(revoked_body, sizeof revoked_body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\","
             "\"ops\":[]}",
             id);
    assert_int_equal(push(h, revoked_body, strlen(revoked_body), NULL), 401);
    int st = 0;
    for (int i = 0; i < 300 && st != 401; i++) {
        st = srvtest_request(srv, "GET", "/v1/sync/pull", h, NULL, 0, NULL, NULL);
        if (st != 401)
            sleep_ms(100);
    }
    assert_int_equal(st, 401);
}

static void envelope_400_and_device_403(void **state)
{
    (void)state;
    const char *h[] = {auth, NULL};
    char *out = NULL;
    assert_int_equal(push(h, "{not json", 9, &out), 400);
    assert_non_null(strstr(out, "malformed"));
    free(out);
    char body[512];
    snprintf(body, sizeof body, "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\"}",
             device_id);
    assert_int_equal(push(h, body, strlen(body), NULL), 400); /* no ops */
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\",\"ops\":[]}",
             other_id);
    assert_int_equal(push(h, body, strlen(body), &out), 403);
    assert_non_null(strstr(out, "device_mismatch"));
    free(out);
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\",\"ops\":[]}",
             device_id);
    assert_int_equal(push(h, body, strlen(body), &out), 200);
    assert_non_null(strstr(out, "\"results\":[]"));
    free(out);
}

/* A push applied through the whole server, and the item's history explaining it. */
static void push_applies_and_history_explains(void **state)
{
    (void)state;
    char *out = NULL;
    const char *loc[] = {"location", "add", "--name", "Aisle 9", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, NULL, loc), 0);
    char *p = strstr(out, "\"location_id\":");
    assert_non_null(p);
    char lid[16];
    snprintf(lid, sizeof lid, "%ld", strtol(p + strlen("\"location_id\":"), NULL, 10));
    free(out);
    const char *item[] = {"item", "add", "--sku", "HIST-1", "--name", "History", "--location",
                          lid, "--quantity", "3", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, NULL, NULL, item), 0);
    const char *user[] = {"user", "add", "--username", "hist", "--email", "hist@example.com",
                          "--role", "operator", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, "a-long-password\n", user), 0);
    char *uid = srvtest_query(srv, "SELECT user_id FROM users WHERE username = 'hist'");
    assert_non_null(uid);
    free(out);

    struct mw_uuid ids[4];
    char s_ids[4][MW_UUID_STR_SIZE];
    struct mw_error err = {0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mw_uuid_v7(&ids[i], &err), MW_OK);
        mw_uuid_format(&ids[i], s_ids[i]);
    }
    /* Op times a minute ago: the server rejects times far from its clock (bad_time). */
    char at[3][MW_TIMESTAMP_LEN];
    for (int i = 0; i < 3; i++)
        assert_int_equal(mw_timestamp_format(mw_timestamp_now_ms() - 60000 + i * 1000, at[i], NULL),
                         MW_OK);
    char body[2048];
    snprintf(body, sizeof body,
             "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":["
             "{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":\"inventory.adjust\","
             "\"at\":\"%s\",\"user_id\":\"%s\",\"data\":{\"sku\":\"HIST-1\",\"delta\":-2}},"
             "{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":\"inventory.adjust\","
             "\"at\":\"%s\",\"user_id\":\"%s\",\"data\":{\"sku\":\"HIST-1\",\"delta\":-2}},"
             "{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":\"inventory.adjust\","
             "\"at\":\"%s\",\"user_id\":\"%s\",\"data\":{\"sku\":\"HIST-1\",\"delta\":5}}]}",
             device_id, s_ids[0], s_ids[1], s_ids[1], at[0], uid, s_ids[2], s_ids[2], at[1], uid,
             s_ids[3], s_ids[3], at[2], uid);
    const char *h[] = {auth, NULL};
    assert_int_equal(push(h, body, strlen(body), &out), 200);
    assert_non_null(strstr(out, "insufficient_stock"));
    free(out);
    /* gzip-encoded, the same batch again: all duplicates. */
    struct mw_buf gz;
    mw_buf_init(&gz, 1 << 20);
    assert_int_equal(mw_gunzip_compress(body, strlen(body), &gz, &err), MW_OK);
    const char *hz[] = {auth, "Content-Encoding: gzip", NULL};
    assert_int_equal(push(hz, (const char *)gz.data, gz.len, &out), 200);
    int dups = 0;
    for (const char *q = out; (q = strstr(q, "\"status\":\"duplicate\"")); q++)
        dups++;
    assert_int_equal(dups, 3);
    free(out);
    mw_buf_free(&gz);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'HIST-1'"), 6);

    const char *hist[] = {"item", "history", "--sku", "HIST-1", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, NULL, hist), 0);
    assert_non_null(strstr(out, "\"quantity\":6"));
    assert_non_null(strstr(out, "\"ledger_sum\":6"));
    assert_non_null(strstr(out, s_ids[1])); /* the correlation id of the first movement */
    assert_non_null(strstr(out, "\"username\":\"hist\""));
    free(out);
    free(uid);
}

static void oversize_body_and_gzip_bomb_413(void **state)
{
    (void)state;
    const char *h[] = {auth, NULL};
    /* The server runs with --body-max 256KiB. */
    size_t big = 300 * 1024;
    char *body = malloc(big);
    memset(body, ' ', big);
    assert_int_equal(push(h, body, big, NULL), 413);
    free(body);

    /* 64 MiB of zeros compress to ~64 KiB: small on the wire, refused once inflated. */
    struct mw_buf zeros, gz;
    size_t n = 64u * 1024u * 1024u;
    mw_buf_init(&zeros, n + 16);
    mw_buf_init(&gz, 1024 * 1024);
    struct mw_error err = {0};
    assert_int_equal(mw_buf_reserve(&zeros, n), MW_OK);
    memset(zeros.data, 0, n);
    zeros.len = n;
    assert_int_equal(mw_gunzip_compress(zeros.data, zeros.len, &gz, &err), MW_OK);
    assert_true(gz.len < 256 * 1024);
    const char *hz[] = {auth, "Content-Encoding: gzip", NULL};
    char *out = NULL;
    assert_int_equal(push(hz, (const char *)gz.data, gz.len, &out), 413);
    assert_non_null(strstr(out, "too_large"));
    free(out);
    mw_buf_free(&zeros);
    mw_buf_free(&gz);
    /* The server is still fine. */
    assert_int_equal(get("/healthz", NULL), 200);
}

static void huge_headers_431(void **state)
{
    (void)state;
    size_t n = 20000;
    char *hdr = malloc(n + 16);
    memcpy(hdr, "X-Filler: ", 10);
    memset(hdr + 10, 'a', n);
    hdr[10 + n] = '\0';
    const char *h[] = {hdr, NULL};
    assert_int_equal(srvtest_request(srv, "GET", "/healthz", h, NULL, 0, NULL, NULL), 431);
    free(hdr);
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail_msg("connect: %s", strerror(errno));
    return fd;
}

/* Whether the server closed fd within ms (EOF or reset). */
static bool closed_within(int fd, long ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    long waited = 0;
    while (waited < ms) {
        int r = poll(&p, 1, 100);
        waited += 100;
        if (r > 0) {
            char buf[256];
            ssize_t got = recv(fd, buf, sizeof buf, 0);
            if (got <= 0)
                return true;
        }
    }
    return false;
}

static void slow_clients_are_cut_off_while_others_are_served(void **state)
{
    (void)state;
    /* The server runs with --header-timeout 1s. A client that sends a few bytes of a TLS
     * handshake and stalls, and one that finishes the handshake (openssl s_client) but sends
     * only half a request head. */
    int stalled = tcp_connect(srvtest_port(srv));
    assert_int_equal(send(stalled, "\x16\x03\x01", 3, 0), 3);

    int in[2];
    assert_int_equal(pipe(in), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        close(in[1]);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        char connect_to[64];
        snprintf(connect_to, sizeof connect_to, "127.0.0.1:%d", srvtest_port(srv));
        execlp("openssl", "openssl", "s_client", "-quiet", "-connect", connect_to, "-CAfile",
               srvtest_ca(srv), "-verify_return_error", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    sleep_ms(300);
    const char *half = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    ssize_t w = write(in[1], half, strlen(half));
    assert_true(w > 0);

    /* Meanwhile others are served. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(get("/healthz", NULL), 200);

    assert_true(closed_within(stalled, 5000));
    /* s_client exits when the server closes the connection. */
    int st = 0;
    bool exited = false;
    for (int i = 0; i < 50 && !exited; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            exited = true;
        else
            sleep_ms(100);
    }
    close(in[1]);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    assert_true(exited);
    close(stalled);
    assert_int_equal(get("/healthz", NULL), 200);
}

/* Opens n TLS connections with libcurl (one per easy handle, FRESH_CONNECT), each asking
 * /healthz with keep-alive, in waves of WAVE so no handshake waits behind thousands of
 * others; every connection then stays open, idle, in the multi handle's cache. */
#define WAVE 500
static CURLM *open_many(const struct srvtest *t, int n, CURL ***easies_out, int *ok_out)
{
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)n + 10);
    CURL **e = calloc((size_t)n, sizeof *e);
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", srvtest_url(t));
    int ok = 0;
    for (int start = 0; start < n; start += WAVE) {
        int end = start + WAVE < n ? start + WAVE : n;
        for (int i = start; i < end; i++) {
            e[i] = curl_easy_init();
            curl_easy_setopt(e[i], CURLOPT_URL, url);
            curl_easy_setopt(e[i], CURLOPT_CAINFO, srvtest_ca(t));
            curl_easy_setopt(e[i], CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 120L);
            curl_easy_setopt(e[i], CURLOPT_FRESH_CONNECT, 1L);
            FILE *null = fopen("/dev/null", "w");
            curl_easy_setopt(e[i], CURLOPT_WRITEDATA, null);
            curl_easy_setopt(e[i], CURLOPT_PRIVATE, null);
            curl_multi_add_handle(m, e[i]);
        }
        int running = 1;
        while (running) {
            curl_multi_perform(m, &running);
            curl_multi_poll(m, NULL, 0, 100, NULL);
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            long code = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            if (msg->data.result == CURLE_OK && code == 200)
                ok++;
            else
                fprintf(stderr, "connection failed: %s, HTTP %ld\n",
                        curl_easy_strerror(msg->data.result), code);
        }
    }
    *easies_out = e;
    *ok_out = ok;
    return m;
}

static size_t on_retry_after(char *p, size_t size, size_t n, void *arg)
{
    char *out = arg;
    size_t len = size * n;
    const char *name = "retry-after:";
    if (len > strlen(name) && strncasecmp(p, name, strlen(name)) == 0) {
        const char *v = p + strlen(name);
        while (*v == ' ')
            v++;
        size_t k = 0;
        while (v < p + len && *v != '\r' && *v != '\n' && k < 79)
            out[k++] = *v++;
        out[k] = '\0';
    }
    return len;
}

static void close_many(CURLM *m, CURL **e, int n)
{
    for (int i = 0; i < n; i++) {
        FILE *null = NULL;
        curl_easy_getinfo(e[i], CURLINFO_PRIVATE, (char **)&null);
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        if (null)
            fclose(null);
    }
    curl_multi_cleanup(m);
    free(e);
}

static long server_rss_kib(const struct srvtest *t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", srvtest_pid(t));
    char *s = tu_read_file(path, NULL);
    const char *p = strstr(s, "VmRSS:");
    long kib = p ? strtol(p + 6, NULL, 10) : -1;
    free(s);
    return kib;
}

/* On a server of its own with the default timeouts: a thousand handshakes at once take a
 * few seconds on two cores, longer than the 1 s header timeout of the shared one. */
static void many_connections_held_while_pushing(void **state)
{
    (void)state;
    int n = 1000;
    const char *env = getenv("MIDWAY_IDLE_CONNECTIONS");
    if (env && atoi(env) > 0)
        n = atoi(env);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 200) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 200 ? rl.rlim_max : (rlim_t)n + 200;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Each wave's requests reach the database workers at once: let them queue, healthz
     * included (unauthenticated requests have a small lane of their own by default). */
    const char *flags[] = {"--queue-max", "5000", "--unauth-queue-max", "4999", NULL};
    struct srvtest *big = srvtest_start_with(flags);
    char id[65], tok[128], hdr[200];
    srvtest_add_device(big, "many", "gateway", id, tok);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", tok);
    long rss_before = server_rss_kib(big);
    CURL **e = NULL;
    int ok = 0;
    time_t t0 = time(NULL);
    CURLM *m = open_many(big, n, &e, &ok);
    time_t took = time(NULL) - t0;
    /* All n stay open (idle keep-alive); a push on a new connection is still answered. */
    char *body = NULL;
    srvtest_request(big, "GET", "/metrics", NULL, NULL, 0, &body, NULL);
    const char *p = strstr(body, "\nmidway_connections_open ");
    long open_now = p ? strtol(p + strlen("\nmidway_connections_open "), NULL, 10) : -1;
    free(body);
    char push_body[256];
    snprintf(push_body, sizeof push_body,
             "{\"device_id\":\"%s\",\"batch_id\":\"0193a6a4-5b7e-7c3d-8e9f-0a1b2c3d4e5f\",\"ops\":[]}",
             id);
    const char *h[] = {hdr, NULL};
    int push_status = srvtest_request(big, "POST", "/v1/sync/push", h, push_body,
                                      strlen(push_body), NULL, NULL);
    long rss_after = server_rss_kib(big);
    printf("connections: %d of %d served (waves of " "500" ") in %llds and held idle (%ld open); "
           "server RSS %ld KiB before, %ld KiB with them (%.1f KiB each)\n",
           ok, n, (long long)took, open_now, rss_before, rss_after,
           (double)(rss_after - rss_before) / n);
    close_many(m, e, n);
    assert_int_equal(srvtest_stop(big), 0);
    assert_int_equal(ok, n);
    assert_true(open_now >= n);
    assert_int_equal(push_status, 200);
}

/* Past max-connections a new connection gets one 503 with Retry-After, and the ones within
 * the limit keep being served. */
static void connection_limit_answers_503(void **state)
{
    (void)state;
    const char *flags[] = {"--max-connections", "4", NULL};
    struct srvtest *small = srvtest_start_with(flags);
    CURL **e = NULL;
    int ok = 0;
    CURLM *m = open_many(small, 4, &e, &ok); /* four idle keep-alive connections */
    assert_int_equal(ok, 4);

    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", srvtest_url(small));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, srvtest_ca(small));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    char retry_after[80] = "";
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_retry_after);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, retry_after);
    FILE *null = fopen("/dev/null", "w");
    curl_easy_setopt(c, CURLOPT_WRITEDATA, null);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    fclose(null);
    assert_int_equal(code, 503);
    assert_string_equal(retry_after, "1");

    close_many(m, e, 4);
    /* Below the limit again: served. */
    int st = 0;
    for (int i = 0; i < 50 && st != 200; i++) {
        st = srvtest_request(small, "GET", "/healthz", NULL, NULL, 0, NULL, NULL);
        if (st != 200)
            sleep_ms(100);
    }
    assert_int_equal(st, 200);
    assert_int_equal(srvtest_stop(small), 0);
}

static void postgres_restart_is_survived(void **state)
{
    (void)state;
    char *pg = tu_path(srvtest_data_dir(srv), "pg");
    char *sock = tu_path(srvtest_data_dir(srv), "run");
    char *log = tu_path(srvtest_data_dir(srv), "pg.log");
    struct mw_pgcluster_config cfg = {.data_dir = pg, .socket_dir = sock, .log_file = log,
                                      .port = 5432};
    struct mw_error err = {0};
    assert_int_equal(get("/healthz", NULL), 200);
    assert_int_equal(mw_pgcluster_stop(&cfg, "immediate", &err), MW_OK);
    char *body = NULL;
    assert_int_equal(get("/healthz", &body), 503);
    free(body);
    const char *h[] = {auth, NULL};
    assert_int_equal(srvtest_request(srv, "GET", "/v1/sync/pull", h, NULL, 0, NULL, NULL), 503);
    assert_int_equal(mw_pgcluster_start(&cfg, &err), MW_OK);
    int st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        st = get("/healthz", NULL);
        if (st != 200)
            sleep_ms(100);
    }
    assert_int_equal(st, 200);
    assert_int_equal(srvtest_request(srv, "GET", "/v1/sync/pull", h, NULL, 0, NULL, NULL), 200);
    free(pg);
    free(sock);
    free(log);
}

static void sigterm_exits_zero_and_stops_postgres(void **state)
{
    (void)state;
    int status = srvtest_kill(srv, SIGTERM);
    assert_int_equal(status, 0);
    char *pg = tu_path(srvtest_data_dir(srv), "pg");
    char *sock = tu_path(srvtest_data_dir(srv), "run");
    struct mw_pgcluster_config cfg = {.data_dir = pg, .socket_dir = sock, .port = 5432};
    assert_false(mw_pgcluster_running(&cfg));
    free(pg);
    free(sock);
    char *log = tu_read_file(srvtest_log(srv), NULL);
    assert_non_null(strstr(log, "stopped"));
    free(log);
    /* A second serve on the same data directory while one runs is refused. */
    srvtest_restart(srv);
    const char *args[] = {"serve", "--listen", "127.0.0.1:0", "--user", srvtest_run_as(), NULL};
    if (geteuid() != 0)
        args[3] = NULL; /* not root: nobody to become */
    char *out = NULL;
    assert_int_equal(srvtest_admin(srv, &out, NULL, args), 1);
    free(out);
    log = tu_read_file(srvtest_log(srv), NULL);
    assert_non_null(strstr(log, "already running"));
    free(log);
}

static int setup(void **state)
{
    (void)state;
    const char *flags[] = {"--body-max", "256KiB", "--header-timeout", "1s", "--workers", "3",
                           NULL};
    srv = srvtest_start_with(flags);
    srvtest_add_device(srv, "scanner-1", "scanner", device_id, token);
    srvtest_add_device(srv, "scanner-2", "scanner", other_id, other_token);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    /* Under AddressSanitizer a leak makes the server exit non-zero here. */
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
        cmocka_unit_test(healthz_and_correlation_id),
        cmocka_unit_test(tls_verified_with_the_ca_only),
        cmocka_unit_test(routes_404_405),
        cmocka_unit_test(tokens_401),
        cmocka_unit_test(envelope_400_and_device_403),
        cmocka_unit_test(push_applies_and_history_explains),
        cmocka_unit_test(oversize_body_and_gzip_bomb_413),
        cmocka_unit_test(huge_headers_431),
        cmocka_unit_test(slow_clients_are_cut_off_while_others_are_served),
        cmocka_unit_test(many_connections_held_while_pushing),
        cmocka_unit_test(metrics_are_prometheus_text),
        cmocka_unit_test(connection_limit_answers_503),
        cmocka_unit_test(postgres_restart_is_survived),
        cmocka_unit_test(sigterm_exits_zero_and_stops_postgres),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
