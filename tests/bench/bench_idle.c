/* bench_idle.c - the server's memory holding BENCH_IDLE_CONNECTIONS (default 5,000) idle TLS
 * keep-alive connections: each connection makes its TLS handshake and one request
 * (GET /healthz), then stays open and silent. The server's RSS (VmRSS of the process) before
 * and with them gives the cost per idle connection. Connections open in waves of 250, the way
 * a fleet reconnects after a network outage, not all in one burst. */
#include "benchlib.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define WAVE 250

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : def;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

int main(void)
{
    int n = (int)env_long("BENCH_IDLE_CONNECTIONS", 5000);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    /* The server inherits the limit: both ends hold one descriptor per connection. Raising
     * the hard limit needs root, as scripts/bench runs; otherwise the soft one goes as far
     * as the hard one allows. */
    if (rl.rlim_cur < (rlim_t)n + 256) {
        struct rlimit want = {(rlim_t)n + 256,
                              rl.rlim_max > (rlim_t)n + 256 ? rl.rlim_max : (rlim_t)n + 256};
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)n + 64)
        bench_die("idle: the open-file limit (%lu) is below %d connections",
                  (unsigned long)rl.rlim_cur, n);
    /* Each wave's requests reach the database workers at once: let them queue, healthz
     * included (unauthenticated requests have a small lane of their own by default). */
    const char *flags[] = {"--queue-max", "5000", "--unauth-queue-max", "4999", NULL};
    struct bench_world world;
    bench_world_start(&world, flags, 1, 0);
    int pid = srvtest_pid(world.srv);
    /* The server has answered requests and loaded everything it loads lazily. */
    for (int i = 0; i < 20; i++)
        srvtest_request(world.srv, "GET", "/healthz", NULL, NULL, 0, NULL, NULL);
    long before = bench_rss_kib(pid);

    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)n + 16);
    CURL **e = calloc((size_t)n, sizeof *e);
    if (!e)
        bench_die("calloc");
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", srvtest_url(world.srv));
    int ok = 0;
    double t0 = bench_now();
    for (int start = 0; start < n; start += WAVE) {
        int end = start + WAVE < n ? start + WAVE : n;
        for (int i = start; i < end; i++) {
            e[i] = curl_easy_init();
            curl_easy_setopt(e[i], CURLOPT_URL, url);
            curl_easy_setopt(e[i], CURLOPT_CAINFO, srvtest_ca(world.srv));
            curl_easy_setopt(e[i], CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 120L);
            curl_easy_setopt(e[i], CURLOPT_FRESH_CONNECT, 1L);
            curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, discard);
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
        }
    }
    double secs = bench_now() - t0;
    /* Let the server settle (buffers of finished requests released). */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    char *body = NULL;
    srvtest_request(world.srv, "GET", "/metrics", NULL, NULL, 0, &body, NULL);
    const char *p = body ? strstr(body, "\nmidway_connections_open ") : NULL;
    long open_now = p ? strtol(p + strlen("\nmidway_connections_open "), NULL, 10) : -1;
    free(body);
    long with = bench_rss_kib(pid);
    double per = (double)(with - before) / n;
    fprintf(stderr,
            "idle: %d of %d TLS connections opened (waves of %d) in %.1f s, %ld open; server RSS "
            "%ld KiB before, %ld KiB with them: %.1f KiB each\n",
            ok, n, WAVE, secs, open_now, before, with, per);
    if (ok != n || open_now < n)
        bench_die("idle: only %d connections served, %ld open", ok, open_now);
    bench_result("idle_connections", n);
    bench_result("idle_rss_before_kib", (double)before);
    bench_result("idle_rss_kib", (double)with);
    bench_result("idle_kib_per_connection", per);
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
    }
    curl_multi_cleanup(m);
    free(e);
    bench_world_stop(&world);
    return 0;
}
