/* test_peerlimit.c - per-address limits: open connections per address, the handshake token
 * bucket (burst, refill, per address), IPv6 counted per /64 and IPv4-mapped as IPv4, what is
 * remembered and forgotten (bounded), limits off, and out of memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mem.h"
#include "peerlimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static struct sockaddr_storage v4(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static struct mw_peerlimit *make(int conns, int rate, size_t tracked)
{
    struct mw_peerlimit_config cfg = {conns, rate, tracked};
    struct mw_peerlimit *pl = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_peerlimit_new(&cfg, &pl, &err), MW_OK);
    return pl;
}

static void test_peerlimit_connections_per_address(void **state)
{
    (void)state;
    struct mw_peerlimit *pl = make(3, 0, 100);
    struct sockaddr_storage a = v4("10.0.0.1"), b = v4("10.0.0.2");
    struct mw_peer *p[4] = {NULL};
    for (int i = 0; i < 3; i++)
        assert_int_equal(mw_peerlimit_admit(pl, SA(a), 0, &p[i]), MW_PEERLIMIT_OK);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 0, &p[3]), MW_PEERLIMIT_CONNECTIONS);
    assert_null(p[3]);
    assert_int_equal(mw_peerlimit_open(pl, SA(a)), 3);
    /* Another address is not affected. */
    struct mw_peer *pb = NULL;
    assert_int_equal(mw_peerlimit_admit(pl, SA(b), 0, &pb), MW_PEERLIMIT_OK);
    /* One closes: one more may open. */
    mw_peerlimit_release(pl, p[0], 10);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 10, &p[0]), MW_PEERLIMIT_OK);
    for (int i = 0; i < 3; i++)
        mw_peerlimit_release(pl, p[i], 20);
    mw_peerlimit_release(pl, pb, 20);
    /* Without a rate there is nothing to remember once the connections are gone. */
    assert_int_equal(mw_peerlimit_tracked(pl), 0);
    mw_peerlimit_free(pl);
}

static void test_peerlimit_handshake_bucket(void **state)
{
    (void)state;
    struct mw_peerlimit *pl = make(0, 10, 100);
    struct sockaddr_storage a = v4("192.0.2.7"), b = v4("192.0.2.8");
    struct mw_peer *p = NULL;
    /* A burst of one second's worth, then refused. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(mw_peerlimit_admit(pl, SA(a), 1000, &p), MW_PEERLIMIT_OK);
        mw_peerlimit_release(pl, p, 1000); /* closing does not give a handshake back */
    }
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 1000, &p), MW_PEERLIMIT_HANDSHAKES);
    assert_null(p);
    /* Others still get theirs. */
    assert_int_equal(mw_peerlimit_admit(pl, SA(b), 1000, &p), MW_PEERLIMIT_OK);
    mw_peerlimit_release(pl, p, 1000);
    /* 10 a second: one every 100 ms. */
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 1099, &p), MW_PEERLIMIT_HANDSHAKES);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 1100, &p), MW_PEERLIMIT_OK);
    mw_peerlimit_release(pl, p, 1100);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 1100, &p), MW_PEERLIMIT_HANDSHAKES);
    /* A sustained flood over 10 s gets 10 a second, not more. */
    int ok = 0;
    for (int64_t t = 1100; t < 11100; t++) {
        if (mw_peerlimit_admit(pl, SA(a), t, &p) == MW_PEERLIMIT_OK) {
            ok++;
            mw_peerlimit_release(pl, p, t);
        }
    }
    assert_in_range(ok, 99, 101);
    /* After a quiet second the bucket is full again (and no fuller). */
    int burst = 0;
    while (mw_peerlimit_admit(pl, SA(a), 60000, &p) == MW_PEERLIMIT_OK) {
        burst++;
        mw_peerlimit_release(pl, p, 60000);
    }
    assert_int_equal(burst, 10);
    mw_peerlimit_free(pl);
}

static void test_peerlimit_ipv6_per_64_and_mapped_v4(void **state)
{
    (void)state;
    struct mw_peerlimit *pl = make(2, 0, 100);
    struct sockaddr_storage a1 = v6("2001:db8:1:2::1"), a2 = v6("2001:db8:1:2:ffff::9"),
                            a3 = v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
                            other = v6("2001:db8:1:3::1");
    struct mw_peer *p1 = NULL, *p2 = NULL, *p3 = NULL, *po = NULL;
    assert_int_equal(mw_peerlimit_admit(pl, SA(a1), 0, &p1), MW_PEERLIMIT_OK);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a2), 0, &p2), MW_PEERLIMIT_OK);
    /* Same /64: one address. */
    assert_int_equal(mw_peerlimit_admit(pl, SA(a3), 0, &p3), MW_PEERLIMIT_CONNECTIONS);
    assert_int_equal(mw_peerlimit_admit(pl, SA(other), 0, &po), MW_PEERLIMIT_OK);
    /* ::ffff:10.1.1.1 is 10.1.1.1. */
    struct sockaddr_storage m = v6("::ffff:10.1.1.1"), plain = v4("10.1.1.1");
    struct mw_peer *pm = NULL, *pp = NULL, *px = NULL;
    assert_int_equal(mw_peerlimit_admit(pl, SA(m), 0, &pm), MW_PEERLIMIT_OK);
    assert_int_equal(mw_peerlimit_admit(pl, SA(plain), 0, &pp), MW_PEERLIMIT_OK);
    assert_int_equal(mw_peerlimit_admit(pl, SA(plain), 0, &px), MW_PEERLIMIT_CONNECTIONS);
    assert_int_equal(mw_peerlimit_open(pl, SA(m)), 2);
    /* Not an IP socket: not limited, not tracked. */
    struct sockaddr_storage unix_sa;
    memset(&unix_sa, 0, sizeof unix_sa);
    unix_sa.ss_family = AF_UNIX;
    struct mw_peer *pu = (struct mw_peer *)&unix_sa;
    assert_int_equal(mw_peerlimit_admit(pl, SA(unix_sa), 0, &pu), MW_PEERLIMIT_OK);
    assert_null(pu);
    mw_peerlimit_free(pl); /* frees entries that still have connections */
}

static void test_peerlimit_forgets_and_stays_bounded(void **state)
{
    (void)state;
    struct mw_peerlimit *pl = make(0, 5, 8);
    struct mw_peer *p = NULL;
    char text[32];
    /* Twenty addresses, each one connection that closes: at most 8 remembered. */
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof text, "198.51.100.%d", i);
        struct sockaddr_storage a = v4(text);
        assert_int_equal(mw_peerlimit_admit(pl, SA(a), 100, &p), MW_PEERLIMIT_OK);
        mw_peerlimit_release(pl, p, 100);
        assert_true(mw_peerlimit_tracked(pl) <= 8);
    }
    assert_int_equal(mw_peerlimit_tracked(pl), 8);
    /* Still refilling: kept by the sweep; a second later: forgotten. */
    mw_peerlimit_sweep(pl, 1099);
    assert_int_equal(mw_peerlimit_tracked(pl), 8);
    mw_peerlimit_sweep(pl, 1100);
    assert_int_equal(mw_peerlimit_tracked(pl), 0);
    /* An address with a connection open is never swept or evicted. */
    struct sockaddr_storage held = v4("203.0.113.1");
    struct mw_peer *hp = NULL;
    assert_int_equal(mw_peerlimit_admit(pl, SA(held), 0, &hp), MW_PEERLIMIT_OK);
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof text, "198.51.100.%d", i);
        struct sockaddr_storage a = v4(text);
        assert_int_equal(mw_peerlimit_admit(pl, SA(a), 100, &p), MW_PEERLIMIT_OK);
        mw_peerlimit_release(pl, p, 100);
    }
    mw_peerlimit_sweep(pl, 100000);
    assert_int_equal(mw_peerlimit_open(pl, SA(held)), 1);
    assert_int_equal(mw_peerlimit_tracked(pl), 1);
    mw_peerlimit_release(pl, hp, 100000);
    mw_peerlimit_free(pl);
}

static void test_peerlimit_off_and_out_of_memory(void **state)
{
    (void)state;
    struct mw_peerlimit *pl = make(0, 0, 10);
    struct sockaddr_storage a = v4("10.9.9.9");
    struct mw_peer *p = NULL;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(mw_peerlimit_admit(pl, SA(a), 0, &p), MW_PEERLIMIT_OK);
    assert_int_equal(mw_peerlimit_tracked(pl), 0);
    mw_peerlimit_free(pl);

    struct mw_peerlimit_config bad = {-1, 0, 10};
    struct mw_error err = {0};
    assert_int_equal(mw_peerlimit_new(&bad, &pl, &err), MW_EINVAL);
    struct mw_peerlimit_config zero = {1, 1, 0};
    mw_error_clear(&err);
    assert_int_equal(mw_peerlimit_new(&zero, &pl, &err), MW_EINVAL);
    struct mw_peerlimit_config ok = {1, 1, 10};
    for (long n = 1; n <= 2; n++) {
        mw_error_clear(&err);
        mw_mem_fail_at(n);
        assert_int_equal(mw_peerlimit_new(&ok, &pl, &err), MW_ENOMEM);
        mw_mem_fail_reset();
        assert_null(pl);
    }
    pl = make(1, 1, 10);
    mw_mem_fail_at(1);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 0, &p), MW_PEERLIMIT_NOMEM);
    mw_mem_fail_reset();
    assert_null(p);
    assert_int_equal(mw_peerlimit_tracked(pl), 0);
    assert_int_equal(mw_peerlimit_admit(pl, SA(a), 0, &p), MW_PEERLIMIT_OK);
    mw_peerlimit_release(pl, p, 0);
    mw_peerlimit_release(pl, NULL, 0);
    mw_peerlimit_free(pl);
    mw_peerlimit_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peerlimit_connections_per_address),
        cmocka_unit_test(test_peerlimit_handshake_bucket),
        cmocka_unit_test(test_peerlimit_ipv6_per_64_and_mapped_v4),
        cmocka_unit_test(test_peerlimit_forgets_and_stays_bounded),
        cmocka_unit_test(test_peerlimit_off_and_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
