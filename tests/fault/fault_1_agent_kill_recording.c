/* fault_1_agent_kill_recording.c - scenario 1: the agent is killed (kill -9) while it records.
 * Round after round, recorders write ops into one device's data file as fast as they can,
 * through the library (an app) and through `midway-agent adjust/interact/event --json` (the
 * command line), sometimes both at once and with a sync running beside them, and are killed at
 * a random moment. An op counts as confirmed when the recorder said so (the library call
 * returned MW_OK and the recorder wrote its op_id; the command printed its op_id) before the
 * kill. After every kill the data file passes SQLite's integrity check; at the end one sync
 * delivers what is left and the conservation check runs. */
#include "harness.h"
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ROUNDS_DEFAULT 24
#define KILL_MIN_MS    60
#define KILL_SPAN_MS   500

static const char *const skus[] = {"K1-A", "K1-B"};

/* The op a recorder makes next: adjusts in both directions, takes a little more often than
 * restocks so the shelves run empty (a take larger than the stock is rejected by the server,
 * and must then be listed on the device), interactions, events. */
static int next_kind(unsigned *seed)
{
    return rand_r(seed) % 10;
}

static void library_recorder(const struct fh_device *d, int out, unsigned seed)
{
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(d->db, &opt, &a, &err) != MW_OK)
        _exit(3);
    for (;;) {
        struct mw_agent_meta m = {"ann", NULL, 0};
        struct mw_agent_receipt r;
        int k = next_kind(&seed);
        const char *sku = skus[rand_r(&seed) % 2];
        enum mw_err rc;
        if (k < 4)
            rc = mw_agent_record_adjust(a, &m, sku, 1 + rand_r(&seed) % 3, "restock", &r, &err);
        else if (k < 8)
            rc = mw_agent_record_adjust(a, &m, sku, -(1 + rand_r(&seed) % 4), "pick", &r, &err);
        else if (k < 9)
            rc = mw_agent_record_interact(a, &m, "scan", sku, "item", "{\"screen\":\"pick\"}", &r,
                                          &err);
        else
            rc = mw_agent_record_event(a, &m, "scanner", "update", "{\"battery\":41}", &r, &err);
        if (rc == MW_EBUSY)
            continue; /* another writer held the lock too long: nothing recorded */
        if (rc != MW_OK)
            _exit(4);
        char line[48];
        int n = snprintf(line, sizeof line, "OK %s\n", r.op_id);
        if (write(out, line, (size_t)n) != n)
            _exit(5);
    }
}

static void cli_recorder(const struct fh_device *d, int out, unsigned seed)
{
    dup2(out, STDOUT_FILENO);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0)
        dup2(null, STDERR_FILENO);
    for (;;) {
        char delta[16];
        const char *sku = skus[rand_r(&seed) % 2];
        int k = next_kind(&seed);
        int dv = k < 4 ? 1 + rand_r(&seed) % 3 : -(1 + rand_r(&seed) % 4);
        snprintf(delta, sizeof delta, "%d", dv);
        pid_t pid = fork();
        if (pid < 0)
            _exit(6);
        if (pid == 0) {
            const char *bin = fh_agent_bin();
            if (k < 8)
                execl(bin, bin, "--data", d->dir, "adjust", "--sku", sku, "--delta", delta,
                      "--user", "ann", "--json", (char *)NULL);
            else if (k < 9)
                execl(bin, bin, "--data", d->dir, "interact", "--action", "scan", "--target-id",
                      sku, "--user", "ann", "--json", (char *)NULL);
            else
                execl(bin, bin, "--data", d->dir, "event", "--source", "scanner", "--type",
                      "update", "--details", "{\"battery\":40}", "--user", "ann", "--json",
                      (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        /* 6: the file was locked by the other recorder too long; nothing was recorded. */
        if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 6))
            _exit(7);
    }
}

static pid_t start_recorder(const struct fh_device *d, int library, unsigned seed, int *fd_out)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* one kill reaches the command it runs too */
        close(p[0]);
        if (library)
            library_recorder(d, p[1], seed);
        else
            cli_recorder(d, p[1], seed);
        _exit(0);
    }
    setpgid(pid, pid);
    close(p[1]);
    *fd_out = p[0];
    return pid;
}

static char *drain(int fd)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

static void agent_killed_while_recording(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_1");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K1-A", 20);
    fh_add_item("K1-B", 5);
    struct fh_device d;
    fh_device_new(&d, "gw-1", srvtest_url(fh_srv));

    struct conservation_ids confirmed = {0};
    int killed = 0, both = 0, syncs = 0, cli_rounds = 0;
    for (int round = 0; round < rounds; round++) {
        /* Library and command line take turns; every third round both write at once. */
        int library = round % 2 == 0;
        int two = round % 3 == 2;
        int with_sync = round % 4 == 1;
        int fds[2] = {-1, -1};
        pid_t rec[2] = {-1, -1};
        rec[0] = start_recorder(&d, library, (unsigned)rand(), &fds[0]);
        if (two)
            rec[1] = start_recorder(&d, !library, (unsigned)rand(), &fds[1]);
        pid_t sy = -1;
        if (with_sync) {
            const char *sync[] = {"sync", NULL};
            sy = fh_agent_spawn(&d, sync, NULL);
        }
        fh_sleep_ms(KILL_MIN_MS + rand() % KILL_SPAN_MS);
        for (int i = 0; i < 2; i++) {
            if (rec[i] < 0)
                continue;
            int st = fh_kill9(rec[i]);
            if (st != 128 + SIGKILL)
                fail_msg("round %d: recorder ended by itself with status %d", round, st);
            killed++;
            char *text = drain(fds[i]);
            close(fds[i]);
            size_t before = confirmed.n;
            fh_collect(&confirmed, text);
            free(text);
            if (confirmed.n == before)
                fprintf(stderr, "round %d: the recorder was killed before it confirmed an op\n",
                        round);
        }
        if (sy > 0) {
            int st = fh_wait(sy);
            if (st != 0 && st != 3)
                fail_msg("round %d: sync beside the recorders exited %d", round, st);
            syncs++;
        }
        both += two;
        cli_rounds += !library || two;
        fh_integrity(&d);
    }
    printf("fault_1: %d rounds, %d recorders killed (%d rounds with two at once, %d with the "
           "command line), %d syncs beside them; %zu ops confirmed\n",
           rounds, killed, both, cli_rounds, syncs, confirmed.n);
    assert_true(confirmed.n > (size_t)rounds);

    fh_sync_until_done(&d, 20, NULL);
    struct conservation_device dev = {"gw-1", d.dir, &confirmed, 0, 1};
    struct conservation_report rep = conservation_check(fh_srv, &dev, 1,
                                                        "fault_1 agent killed "
                                                        "while recording");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_1: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    conservation_ids_free(&confirmed);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-1", NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return fh_teardown() == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agent_killed_while_recording),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
