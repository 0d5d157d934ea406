/* it_reload.c - SIGHUP on a running midway-server: the TLS certificate and key are read again
 * (new handshakes present the new certificate, established keep-alive connections go on
 * working), a certificate that does not load leaves the current one in place, the log level
 * follows the config file, and neither the server nor its PostgreSQL goes away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgcluster.h"
#include "srvtest.h"
#include "testutil.h"
#include "tlsca.h"
#include "tlsprobe.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct srvtest *srv;
static char *scratch, *conf_path;

static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits up to ms for the server's log to hold needle at least `times` times. */
static bool log_has(const char *needle, int times, long ms)
{
    for (long waited = 0; waited <= ms; waited += 100) {
        char *log = tu_read_file(srvtest_log(srv), NULL);
        int n = 0;
        for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
            n++;
        free(log);
        if (n >= times)
            return true;
        sleep_ms(100);
    }
    return false;
}

/* Started as root, the server gives root up once its listener is bound (--user, which srvtest
 * names), so at SIGHUP it reads the files as that user: an operator who wants reloads gives
 * the service user's group read access to the TLS directory, the key and the config file,
 * as this does (a file replaced by rename needs it again). Not root: nothing to share. */
static void share_with_server(const char *path, mode_t group_bits)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam(srvtest_run_as());
    assert_non_null(pw);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(chown(path, (uid_t)-1, pw->pw_gid), 0);
    assert_int_equal(chmod(path, (st.st_mode & 07777) | group_bits), 0);
}

static void share_tls_files(void)
{
    char *dir = tu_path(srvtest_data_dir(srv), "tls");
    char *key = tu_path(dir, "server.key");
    char *pem = tu_path(dir, "server.pem");
    share_with_server(dir, S_IRGRP | S_IXGRP);
    share_with_server(key, S_IRGRP);
    share_with_server(pem, S_IRGRP);
    free(dir);
    free(key);
    free(pem);
}

static void write_conf(const char *text)
{
    tu_write_file(conf_path, text, strlen(text));
    share_with_server(conf_path, S_IRGRP);
}

static void server_pem_fingerprint(unsigned char out[32])
{
    char *pem = tu_path(srvtest_data_dir(srv), "tls/server.pem");
    tlsprobe_file_fingerprint(pem, out);
    free(pem);
}

static void presented_fingerprint(unsigned char out[32])
{
    struct tlsprobe *c = tlsprobe_open(srvtest_port(srv), NULL, 10000);
    assert_non_null(c);
    tlsprobe_peer_fingerprint(c, out);
    assert_int_equal(tlsprobe_send(c, HEALTHZ, strlen(HEALTHZ)), 0);
    assert_int_equal(tlsprobe_response(c, 10000, NULL), 200);
    tlsprobe_close(c);
}

static void assert_alive(void)
{
    assert_int_equal(kill(srvtest_pid(srv), 0), 0);
    char *pg = tu_path(srvtest_data_dir(srv), "pg");
    char *sock = tu_path(srvtest_data_dir(srv), "run");
    struct mw_pgcluster_config cfg = {.data_dir = pg, .socket_dir = sock, .port = 5432};
    assert_true(mw_pgcluster_running(&cfg));
    free(pg);
    free(sock);
    assert_int_equal(srvtest_request(srv, "GET", "/healthz", NULL, NULL, 0, NULL, NULL), 200);
}

static void sighup_reloads_the_certificate(void **state)
{
    (void)state;
    unsigned char before[32], file_now[32], seen[32];
    server_pem_fingerprint(before);
    presented_fingerprint(seen);
    assert_memory_equal(seen, before, 32);

    /* A keep-alive connection made with the old certificate. */
    struct tlsprobe *old = tlsprobe_open(srvtest_port(srv), NULL, 10000);
    assert_non_null(old);
    assert_int_equal(tlsprobe_send(old, HEALTHZ, strlen(HEALTHZ)), 0);
    assert_int_equal(tlsprobe_response(old, 10000, NULL), 200);

    /* A renewal: a new key and certificate from the same CA, in the same files. */
    char *tls_dir = tu_path(srvtest_data_dir(srv), "tls");
    struct mw_error err = {0};
    assert_int_equal(mw_tlsca_reissue_server(tls_dir, NULL, &err), MW_OK);
    share_tls_files();
    server_pem_fingerprint(file_now);
    assert_memory_not_equal(file_now, before, 32);

    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("TLS certificate", 1, 10000));
    assert_true(log_has("reloaded (subject", 1, 1000));

    presented_fingerprint(seen);
    assert_memory_equal(seen, file_now, 32); /* new handshakes: the new certificate */
    /* Devices verifying with the CA see nothing but a new leaf. */
    assert_int_equal(srvtest_request(srv, "GET", "/healthz", NULL, NULL, 0, NULL, NULL), 200);
    /* The old connection is still served, with the certificate it started with. */
    tlsprobe_peer_fingerprint(old, seen);
    assert_memory_equal(seen, before, 32);
    assert_int_equal(tlsprobe_send(old, HEALTHZ, strlen(HEALTHZ)), 0);
    assert_int_equal(tlsprobe_response(old, 10000, NULL), 200);
    tlsprobe_close(old);
    assert_alive();
    free(tls_dir);
}

static void failed_reload_keeps_the_certificate(void **state)
{
    (void)state;
    unsigned char current[32], seen[32];
    server_pem_fingerprint(current);
    presented_fingerprint(seen);
    assert_memory_equal(seen, current, 32);

    /* A half-written certificate file. */
    char *pem = tu_path(srvtest_data_dir(srv), "tls/server.pem");
    char *good = tu_read_file(pem, NULL);
    const char junk[] = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    tu_write_file(pem, junk, strlen(junk));
    share_tls_files();
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("TLS certificate not reloaded, still serving the previous one", 1, 10000));
    presented_fingerprint(seen);
    assert_memory_equal(seen, current, 32);
    assert_alive();

    /* A key that does not belong to the certificate: refused as well. */
    char *key = tu_path(srvtest_data_dir(srv), "tls/server.key");
    char *good_key = tu_read_file(key, NULL);
    char *other = tu_path(scratch, "other-tls");
    struct mw_error err = {0};
    assert_int_equal(mw_tlsca_ensure(other, NULL, &err), MW_OK);
    char *other_key_path = tu_path(other, "server.key");
    char *other_key = tu_read_file(other_key_path, NULL);
    tu_write_file(pem, good, strlen(good));
    tu_write_file(key, other_key, strlen(other_key));
    share_tls_files();
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("TLS certificate not reloaded, still serving the previous one", 2, 10000));
    presented_fingerprint(seen);
    assert_memory_equal(seen, current, 32);
    assert_alive();

    /* Put right again: the next SIGHUP takes it. */
    tu_write_file(key, good_key, strlen(good_key));
    share_tls_files();
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("reloaded (subject", 2, 10000));
    assert_alive();
    free(pem);
    free(good);
    free(key);
    free(good_key);
    free(other_key_path);
    free(other_key);
    free(other);
}

static void sighup_rereads_the_log_level(void **state)
{
    (void)state;
    write_conf("log-level = debug\n");
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("SIGHUP: log level DEBUG (was INFO)", 1, 10000));
    /* A connection that leaves mid-handshake is a DEBUG line: now written. */
    int fd = tlsprobe_tcp_connect(srvtest_port(srv), NULL);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x16\x03\x01\x00\x05hello", 10), 10);
    close(fd);
    assert_true(log_has(" DEBUG ", 1, 10000));

    /* A config file that no longer parses: the level stays, the server stays. */
    write_conf("log-level = debug\nno-such-setting = 1\n");
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("SIGHUP: settings not re-read", 1, 10000));
    assert_alive();

    write_conf("log-level = info\n");
    assert_int_equal(kill(srvtest_pid(srv), SIGHUP), 0);
    assert_true(log_has("SIGHUP: log level INFO (was DEBUG)", 1, 10000));
    assert_alive();
}

static int setup(void **state)
{
    (void)state;
    scratch = tu_mkdtemp("reload");
    conf_path = tu_path(scratch, "server.conf");
    const char info[] = "log-level = info\n";
    tu_write_file(conf_path, info, strlen(info));
    const char *flags[] = {"--config", conf_path, NULL};
    srv = srvtest_start_with(flags);
    share_with_server(scratch, S_IXGRP);
    share_with_server(conf_path, S_IRGRP);
    share_tls_files();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int status = srvtest_stop(srv);
    if (!tu_keep())
        tu_rmrf(scratch);
    free(conf_path);
    free(scratch);
    if (status != 0) {
        fprintf(stderr, "server exited with %d at SIGTERM\n", status);
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sighup_reloads_the_certificate),
        cmocka_unit_test(failed_reload_keeps_the_certificate),
        cmocka_unit_test(sighup_rereads_the_log_level),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
