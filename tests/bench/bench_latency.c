/* bench_latency.c - push latency at half load: p50/p99 of a 500-op batch with BENCH_DEVICES
 * (default 8) devices pushing at half the rate that saturates the server.
 *
 * The saturating rate is measured first, in the same run on the same server: every device
 * pushes back to back (closed loop) for BENCH_LATENCY_SATURATE_BATCHES batches each. Then each
 * device sends one batch every interval (open loop, schedule fixed in advance, devices offset
 * from each other) so that together they offer half that rate, for BENCH_LATENCY_SECONDS
 * (default 30). A batch's latency runs from its scheduled start to its answer, so a batch
 * that had to wait for the previous one of its device (the server was slow) counts that
 * wait: no coordinated omission. */
#include "benchlib.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct bench_world world;

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : def;
}

struct dev {
    int device;
    int n;
    struct mw_buf *bodies;
    double *latency_ms;
    double start, interval; /* open loop: batch i is due at start + i * interval */
    int failures;
    pthread_barrier_t *go;
};

static void sleep_until(double t)
{
    for (;;) {
        double now = bench_now();
        if (now >= t)
            return;
        double d = t - now;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void *dev_thread(void *arg)
{
    struct dev *d = arg;
    struct bench_http *h = bench_http_new(&world, d->device);
    /* One small push first: the TLS handshake is not part of any figure. */
    if (bench_http_push(h, d->bodies[0].data, d->bodies[0].len, NULL, NULL, NULL) != 200)
        d->failures++;
    pthread_barrier_wait(d->go);
    double t0 = bench_now();
    if (d->interval > 0)
        t0 = d->start;
    for (int i = 1; i <= d->n; i++) {
        double due = d->interval > 0 ? t0 + (i - 1) * d->interval : bench_now();
        if (d->interval > 0)
            sleep_until(due);
        int st = bench_http_push(h, d->bodies[i].data, d->bodies[i].len, NULL, NULL, NULL);
        d->latency_ms[i - 1] = (bench_now() - due) * 1000;
        if (st != 200)
            d->failures++;
    }
    bench_http_free(h);
    return NULL;
}

/* Runs every device's n batches (closed loop when interval is 0); returns the wall time and
 * fills the latencies (n * devices of them) sorted. */
static double run(int devices, int n, double interval, uint64_t seed, double *all)
{
    struct dev *ds = calloc((size_t)devices, sizeof *ds);
    pthread_t *th = calloc((size_t)devices, sizeof *th);
    pthread_barrier_t go;
    struct mw_buf json;
    if (!ds || !th)
        bench_die("calloc");
    mw_buf_init(&json, MW_PUSH_BODY_MAX);
    pthread_barrier_init(&go, NULL, (unsigned)devices + 1);
    for (int d = 0; d < devices; d++) {
        struct bench_gen g;
        bench_gen_init(&g, &world, d, seed);
        ds[d].device = d;
        ds[d].n = n;
        ds[d].go = &go;
        ds[d].interval = interval;
        ds[d].bodies = calloc((size_t)n + 1, sizeof *ds[d].bodies);
        ds[d].latency_ms = calloc((size_t)n, sizeof(double));
        if (!ds[d].bodies || !ds[d].latency_ms)
            bench_die("calloc");
        for (int i = 0; i <= n; i++) {
            mw_buf_init(&ds[d].bodies[i], MW_PUSH_BODY_MAX);
            bench_gen_batch(&g, i == 0 ? 10 : BENCH_BATCH_OPS, &json, &ds[d].bodies[i]);
        }
    }
    mw_buf_free(&json);
    for (int d = 0; d < devices; d++)
        pthread_create(&th[d], NULL, dev_thread, &ds[d]);
    /* The schedule starts a little after everyone is connected; devices are spread evenly
     * over one interval, as independent devices would be. */
    double start = bench_now() + 0.5;
    for (int d = 0; d < devices; d++)
        ds[d].start = start + interval * d / devices;
    pthread_barrier_wait(&go);
    double t0 = bench_now();
    int failures = 0;
    size_t k = 0;
    for (int d = 0; d < devices; d++) {
        pthread_join(th[d], NULL);
        failures += ds[d].failures;
        for (int i = 0; i < n; i++)
            all[k++] = ds[d].latency_ms[i];
        for (int i = 0; i <= n; i++)
            mw_buf_free(&ds[d].bodies[i]);
        free(ds[d].bodies);
        free(ds[d].latency_ms);
    }
    double secs = bench_now() - t0;
    if (failures)
        bench_die("latency: %d pushes failed", failures);
    bench_sort(all, k);
    free(ds);
    free(th);
    pthread_barrier_destroy(&go);
    return secs;
}

int main(void)
{
    int devices = (int)env_long("BENCH_DEVICES", 8);
    int sat_batches = (int)env_long("BENCH_LATENCY_SATURATE_BATCHES", 10);
    double seconds = (double)env_long("BENCH_LATENCY_SECONDS", 30);
    bench_world_start(&world, NULL, 16, devices);

    size_t n = (size_t)devices * (size_t)sat_batches;
    double *all = calloc(n, sizeof *all);
    if (!all)
        bench_die("calloc");
    double secs = run(devices, sat_batches, 0, 11, all);
    double sat = (double)n * BENCH_BATCH_OPS / secs;
    fprintf(stderr,
            "latency: saturated %zu batches in %.2f s = %.0f ops/s; p50 %.1f ms, p99 %.1f ms\n", n,
            secs, sat, bench_percentile(all, n, 0.5), bench_percentile(all, n, 0.99));
    free(all);

    /* Half the saturating rate, shared by the devices. */
    double rate = sat / 2;
    double interval = (double)devices * BENCH_BATCH_OPS / rate;
    int per_device = (int)(seconds / interval) + 1;
    n = (size_t)devices * (size_t)per_device;
    all = calloc(n, sizeof *all);
    if (!all)
        bench_die("calloc");
    secs = run(devices, per_device, interval, 12, all);
    double p50 = bench_percentile(all, n, 0.5), p99 = bench_percentile(all, n, 0.99);
    fprintf(
        stderr,
        "latency: %zu batches offered at %.0f ops/s (one per device every %.0f ms) over %.1f s: "
        "p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
        n, rate, interval * 1000, secs, p50, p99, all[n - 1]);
    bench_result("latency_saturated_ops_per_s", sat);
    bench_result("latency_offered_ops_per_s", rate);
    bench_result("latency_batches", (double)n);
    bench_result("latency_p50_ms", p50);
    bench_result("latency_p99_ms", p99);
    bench_result("latency_max_ms", all[n - 1]);
    free(all);
    bench_world_stop(&world);
    return 0;
}
