/* it_slow_clients.c - the real midway-server over TLS against clients on slow links: which
 * deadline runs when, so a slow client that keeps moving is served and one that stops is cut
 * off.
 *
 * The server runs with header-timeout 2 s, body-timeout 20 s, write-timeout 3 s and
 * write-total-timeout 45 s. idle-timeout is as small as write-timeout: before write-timeout
 * existed the deadline for sending an answer was idle-timeout, fixed when the answer was
 * ready, so the slow reader below fails against such a server.
 *  - a 200 KiB body sent at 20 KiB/s (10 s, far past header-timeout) is answered 200;
 *  - a body that stops halfway is cut off at body-timeout, counted from the end of the head,
 *    and not at header-timeout;
 *  - a pull answer of some 7.5 MB read at ~400 KiB/s through a small receive window (about
 *    20 s; the server's writes wait on the reader for well over write-timeout) arrives
 *    whole: every write that moves bytes gives write-timeout more;
 *  - the same answer read at ~32 KiB/s is cut off at write-total-timeout, not before.
 * Bounds are generous (seconds) on purpose: a loaded machine only makes the server later. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "srvtest.h"
#include "testutil.h"
#include "tlsclient.h"
#include "uuid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEADER_TIMEOUT_S      2
#define BODY_TIMEOUT_S        20
#define WRITE_TIMEOUT_S       3
#define WRITE_TOTAL_TIMEOUT_S 45
/* Slack for a loaded machine: how much later than its deadline a close may come. */
#define SLACK_MS              15000

/* The pull snapshot: 5,000 items of ~1.5 KB each, one page of some 7.5 MB. Loopback's socket
 * buffers hold up to ~4 MB (tcp_wmem) whatever the reader's window, so the answer must be
 * well over that for the server's writes to wait on the reader at all. */
#define ITEMS            5000
#define ITEM_DESCRIPTION 1350

static struct srvtest *srv;
static char device_id[65], token[128];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_until(int64_t t)
{
    int64_t left = t - now_ms();
    if (left <= 0)
        return;
    struct timespec ts = {left / 1000, (left % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool log_has(const char *text)
{
    char *log = tu_read_file(srvtest_log(srv), NULL);
    bool found = strstr(log, text) != NULL;
    free(log);
    return found;
}

/* A push envelope of exactly len bytes: an empty batch padded with JSON whitespace, so the
 * body is as large as a real backlog without ops to set up. */
static char *padded_push(size_t len)
{
    struct mw_uuid u;
    struct mw_error err = {0};
    char batch[MW_UUID_STR_SIZE];
    assert_int_equal(mw_uuid_v7(&u, &err), MW_OK);
    mw_uuid_format(&u, batch);
    char *body = malloc(len + 1);
    assert_non_null(body);
    int n = snprintf(body, len + 1, "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":[]",
                     device_id, batch);
    assert_true(n > 0 && (size_t)n + 1 < len);
    memset(body + n, ' ', len - (size_t)n - 1);
    body[len - 1] = '}';
    body[len] = '\0';
    return body;
}

static char *push_head(size_t len)
{
    char *head = malloc(512);
    assert_non_null(head);
    snprintf(head, 512,
             "POST /v1/sync/push HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
             token, len);
    return head;
}

static void slow_body_within_body_timeout_is_answered(void **state)
{
    (void)state;
    const size_t len = 200 * 1024, chunk = 2048;
    const int64_t every_ms = 100; /* 20 KiB/s: 10 s in all */
    char *body = padded_push(len);
    char *head = push_head(len);
    struct tlsc *c = tlsc_connect(srvtest_port(srv), srvtest_ca(srv), 0, 10000);
    assert_non_null(c);
    int64_t t0 = now_ms();
    assert_int_equal(tlsc_send(c, head, strlen(head), 10000), 0);
    /* On a fixed schedule, so a late wake-up does not slow the whole send. */
    for (size_t off = 0, i = 1; off < len; off += chunk, i++) {
        size_t n = len - off < chunk ? len - off : chunk;
        sleep_until(t0 + (int64_t)i * every_ms);
        if (tlsc_send(c, body + off, n, 10000) != 0)
            fail_msg("the server closed after %zu of %zu body bytes, %lld ms in", off, len,
                     (long long)(now_ms() - t0));
    }
    int64_t sent_ms = now_ms() - t0;
    char *answer = NULL;
    int status = tlsc_read_answer(c, false, 30000, &answer, NULL);
    print_message("200 KiB body sent in %lld ms; answer %d\n", (long long)sent_ms, status);
    assert_true(sent_ms > HEADER_TIMEOUT_S * 1000); /* the head's deadline was long past */
    assert_int_equal(status, 200);
    assert_non_null(strstr(answer, "\"results\""));
    free(answer);
    tlsc_close(c);
    free(head);
    free(body);
}

static void stalled_body_is_cut_off_at_body_timeout(void **state)
{
    (void)state;
    const size_t len = 200 * 1024;
    char *body = padded_push(len);
    char *head = push_head(len);
    struct tlsc *c = tlsc_connect(srvtest_port(srv), srvtest_ca(srv), 0, 10000);
    assert_non_null(c);
    int64_t t0 = now_ms();
    assert_int_equal(tlsc_send(c, head, strlen(head), 10000), 0);
    assert_int_equal(tlsc_send(c, body, len / 2, 10000), 0);
    /* The server cannot close before body-timeout after the head reached it, which is after
     * t0; it must close soon after. */
    int closed = tlsc_closed_within(c, BODY_TIMEOUT_S * 1000 + SLACK_MS);
    int64_t waited = now_ms() - t0;
    print_message("stalled body closed after %lld ms (body-timeout %d s)\n", (long long)waited,
                  BODY_TIMEOUT_S);
    assert_true(closed);
    assert_true(waited >= BODY_TIMEOUT_S * 1000 - 500);
    assert_true(log_has("timed out waiting for the request body"));
    tlsc_close(c);
    free(head);
    free(body);
}

/* Asks for the whole snapshot in one page and reads the answer chunk bytes at a time, one
 * read every every_ms. Returns the status (0 when the server closed before the end, or
 * until_log appeared in the server's log: the reader stops there), with *bytes_out the bytes
 * of the answer received and *ms_out how long it took from the first byte. */
static int slow_pull(size_t chunk, int64_t every_ms, const char *until_log, size_t *bytes_out,
                     int64_t *ms_out)
{
    /* A small window: the kernel reads ahead only a few KiB for us, so the server's writes
     * block on our pace and not on its socket buffers. */
    struct tlsc *c = tlsc_connect(srvtest_port(srv), srvtest_ca(srv), 4096, 10000);
    assert_non_null(c);
    char req[512];
    snprintf(req, sizeof req,
             "GET /v1/sync/pull?limit=5000 HTTP/1.1\r\nHost: localhost\r\n"
             "Authorization: Bearer %s\r\n\r\n",
             token);
    assert_int_equal(tlsc_send(c, req, strlen(req), 10000), 0);
    size_t cap = 8u << 20, got = 0, total = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    int status = 0;
    int64_t t0 = 0;
    for (int64_t i = 0;; i++) {
        long n = tlsc_recv(c, buf + got, chunk < cap - got ? chunk : cap - got,
                           WRITE_TOTAL_TIMEOUT_S * 1000 + SLACK_MS);
        if (n < 0)
            fail_msg("no byte and no close for %d s", WRITE_TOTAL_TIMEOUT_S + SLACK_MS / 1000);
        if (n == 0)
            break; /* closed by the server */
        if (got == 0)
            t0 = now_ms(); /* the answer is ready: the write deadlines run from here */
        got += (size_t)n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (total == 0 && end) {
            const char *cl = strstr(buf, "Content-Length: ");
            assert_non_null(cl);
            total = (size_t)(end + 4 - buf) + strtoull(cl + 16, NULL, 10);
            assert_true(total <= cap);
            status = (int)strtol(buf + 9, NULL, 10);
        }
        if (total > 0 && got >= total)
            break;
        /* What the server wrote before closing still sits in the socket buffers: reading
         * it at this pace would take minutes, so its log says when it gave up. */
        if (until_log && log_has(until_log))
            break;
        sleep_until(t0 + (i + 1) * every_ms);
    }
    *bytes_out = got;
    *ms_out = now_ms() - t0;
    bool whole = total > 0 && got >= total;
    free(buf);
    tlsc_close(c);
    return whole ? status : 0;
}

static void slow_reader_that_keeps_reading_gets_the_whole_answer(void **state)
{
    (void)state;
    size_t got = 0;
    int64_t ms = 0;
    int status = slow_pull(16384, 40, NULL, &got, &ms); /* at most 400 KiB/s */
    print_message("pull answer of %zu bytes read in %lld ms (write-timeout %d s)\n", got,
                  (long long)ms, WRITE_TIMEOUT_S);
    assert_int_equal(status, 200);
    assert_true(got > 6u * 1024u * 1024u);
    /* Long enough that a deadline fixed when the answer was ready would have cut it off. */
    assert_true(ms > 2 * WRITE_TIMEOUT_S * 1000);
}

static void slow_reader_is_cut_off_at_write_total_timeout(void **state)
{
    (void)state;
    size_t got = 0;
    int64_t ms = 0;
    const char *cut = "timed out sending the answer (write-total-timeout)";
    int status = slow_pull(8192, 250, cut, &got, &ms); /* 32 KiB/s: it would take 4 minutes */
    print_message("cut off after %zu bytes and %lld ms (write-total-timeout %d s)\n", got,
                  (long long)ms, WRITE_TOTAL_TIMEOUT_S);
    assert_int_equal(status, 0);
    /* Progress kept it alive far past write-timeout; the cap ended it. */
    assert_true(log_has(cut));
    assert_true(ms > WRITE_TOTAL_TIMEOUT_S * 1000 / 2);
    assert_true(ms < WRITE_TOTAL_TIMEOUT_S * 1000 + SLACK_MS);
}

static int setup(void **state)
{
    (void)state;
    char header[16], body[16], wr[16], total[16];
    snprintf(header, sizeof header, "%ds", HEADER_TIMEOUT_S);
    snprintf(body, sizeof body, "%ds", BODY_TIMEOUT_S);
    snprintf(wr, sizeof wr, "%ds", WRITE_TIMEOUT_S);
    snprintf(total, sizeof total, "%ds", WRITE_TOTAL_TIMEOUT_S);
    const char *flags[] = {"--header-timeout",
                           header,
                           "--body-timeout",
                           body,
                           "--write-timeout",
                           wr,
                           "--write-total-timeout",
                           total,
                           "--idle-timeout",
                           wr,
                           "--body-max",
                           "1MiB",
                           NULL};
    srv = srvtest_start_with(flags);
    srvtest_add_device(srv, "slow-gateway", "gateway", device_id, token);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO locations (location_name, address) VALUES ('Slow dock', 'far away');"
             "INSERT INTO inventory (item_name, item_sku, quantity, location_id, description)"
             " SELECT 'Item ' || g, 'SLOW-' || lpad(g::text, 5, '0'), 1,"
             "        (SELECT location_id FROM locations WHERE location_name = 'Slow dock'),"
             "        repeat('d', %d)"
             "   FROM generate_series(1, %d) g",
             ITEM_DESCRIPTION, ITEMS);
    free(srvtest_query(srv, sql));
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
        cmocka_unit_test(slow_body_within_body_timeout_is_answered),
        cmocka_unit_test(stalled_body_is_cut_off_at_body_timeout),
        cmocka_unit_test(slow_reader_that_keeps_reading_gets_the_whole_answer),
        cmocka_unit_test(slow_reader_is_cut_off_at_write_total_timeout),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
