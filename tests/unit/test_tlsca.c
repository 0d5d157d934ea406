/* test_tlsca.c - the local CA: what it writes, that a TLS client would accept it, and when it
 * keeps, re-issues or recreates its files. */
#include "mem.h"
#include "testutil.h"
#include "tlsca.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct fx {
    char *dir; /* scratch directory */
    char *tls; /* dir/tls: does not exist until the first ensure */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->dir = tu_mkdtemp("tlsca");
    f->tls = tu_path(f->dir, "tls");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    mw_mem_fail_reset();
    tu_rmrf(f->dir);
    free(f->tls);
    free(f->dir);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static char *file_in(const struct fx *f, const char *name)
{
    return tu_path(f->tls, name);
}

static char *slurp(const struct fx *f, const char *name, size_t *len)
{
    char *p = file_in(f, name);
    char *data = tu_read_file(p, len);
    free(p);
    return data;
}

static void assert_same_file(const struct fx *f, const char *name, const char *old, size_t old_len)
{
    size_t len = 0;
    char *now = slurp(f, name, &len);
    assert_int_equal(len, old_len);
    assert_memory_equal(now, old, len);
    free(now);
}

static int differs(const struct fx *f, const char *name, const char *old, size_t old_len)
{
    size_t len = 0;
    char *now = slurp(f, name, &len);
    int d = len != old_len || memcmp(now, old, len) != 0;
    free(now);
    return d;
}

static mode_t mode_of(const struct fx *f, const char *name)
{
    struct stat st;
    char *p = name ? file_in(f, name) : strdup(f->tls);
    assert_int_equal(stat(p, &st), 0);
    free(p);
    return st.st_mode & 07777;
}

static void load_crt(const struct fx *f, const char *name, mbedtls_x509_crt *crt)
{
    char *p = file_in(f, name);
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse_file(crt, p), 0);
    free(p);
}

/* Verifies dir/server.pem against dir/ca.pem for hostname cn (NULL: chain only); returns the
 * verification flags (0 = a client would accept it). */
static uint32_t verify_server(const struct fx *f, const char *cn)
{
    mbedtls_x509_crt ca, server;
    uint32_t flags = 0;
    load_crt(f, "ca.pem", &ca);
    load_crt(f, "server.pem", &server);
    int ret = mbedtls_x509_crt_verify(&server, &ca, NULL, cn, &flags, NULL, NULL);
    if (ret != 0 && flags == 0)
        flags = 0x80000000u;
    mbedtls_x509_crt_free(&server);
    mbedtls_x509_crt_free(&ca);
    return flags;
}

/* Whether server.pem's subjectAltName holds the given IP address (4 or 16 bytes). mbedTLS 2.28
 * does not match IP addresses in mbedtls_x509_crt_verify, so this reads the SAN itself. */
static int san_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len)
{
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
            s->buf.len == len && memcmp(s->buf.p, ip, len) == 0)
            return 1;
    }
    return 0;
}

static int san_has_dns(const mbedtls_x509_crt *crt, const char *name)
{
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME) &&
            s->buf.len == strlen(name) && memcmp(s->buf.p, name, s->buf.len) == 0)
            return 1;
    }
    return 0;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static long days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static long days_left(const mbedtls_x509_crt *crt)
{
    long end = days_from_civil(crt->valid_to.year, crt->valid_to.mon, crt->valid_to.day);
    return end - (long)(time(NULL) / 86400);
}

static int have_openssl(void)
{
    return system("command -v openssl >/dev/null 2>&1") == 0;
}

/* Runs a shell command, returns its exit status and (if out) its output. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - 1 - len, p)) > 0)
        len += n;
    buf[len] = '\0';
    int status = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return status;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

static void ensure_ok(const struct fx *f, const char *const *names, enum mw_tlsca_outcome want)
{
    struct mw_error err = {0};
    enum mw_tlsca_outcome got = (enum mw_tlsca_outcome) - 1;
    enum mw_err rc = mw_tlsca_ensure_ex(f->tls, names, &got, &err);
    if (rc != MW_OK)
        fail_msg("ensure: %s", err.msg);
    if (got != want)
        fail_msg("ensure did %s, expected %s", mw_tlsca_outcome_name(got),
                 mw_tlsca_outcome_name(want));
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_tlsca_creates_files_with_modes(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);

    assert_int_equal(mode_of(f, NULL), 0700);
    assert_int_equal(mode_of(f, "ca.key"), 0600);
    assert_int_equal(mode_of(f, "server.key"), 0600);
    assert_int_equal(mode_of(f, "ca.pem"), 0644);
    assert_int_equal(mode_of(f, "server.pem"), 0644);
    /* No temporary files left behind. */
    assert_int_equal(count_entries(f->tls), 4);

    size_t len = 0;
    char *pem = slurp(f, "server.key", &len);
    assert_non_null(strstr(pem, "-----BEGIN EC PRIVATE KEY-----"));
    free(pem);
}

static void test_tlsca_server_cert_verifies_with_ca(void **state)
{
    struct fx *f = *state;
    char host[256] = "";
    ensure_ok(f, NULL, MW_TLSCA_CREATED);

    /* What a device does: verify the chain and the name it connected to. */
    assert_int_equal(verify_server(f, NULL), 0);
    assert_int_equal(verify_server(f, "localhost"), 0);
    assert_int_equal(verify_server(f, "LOCALHOST"), 0);
    if (gethostname(host, sizeof(host)) == 0 && strchr(host, '_') == NULL && host[0] != '\0')
        assert_int_equal(verify_server(f, host), 0);
    assert_true(verify_server(f, "attacker.example") & MBEDTLS_X509_BADCERT_CN_MISMATCH);

    mbedtls_x509_crt ca, server;
    load_crt(f, "ca.pem", &ca);
    load_crt(f, "server.pem", &server);
    static const unsigned char v4[4] = {127, 0, 0, 1};
    static const unsigned char v6[16] = {[15] = 1};
    assert_true(san_has_ip(&server, v4, sizeof(v4)));
    assert_true(san_has_ip(&server, v6, sizeof(v6)));
    assert_true(san_has_dns(&server, "localhost"));
#if MBEDTLS_VERSION_NUMBER >= 0x03060000
    {
        /* 3.6 matches IP addresses itself, as a client connecting to 127.0.0.1 would. */
        uint32_t flags = 0;
        assert_int_equal(
            mbedtls_x509_crt_verify(&server, &ca, NULL, "127.0.0.1", &flags, NULL, NULL), 0);
    }
#endif
    /* ECDSA P-256 with SHA-256. */
    assert_int_equal(mbedtls_pk_get_type(&server.pk), MBEDTLS_PK_ECKEY);
    assert_int_equal(mbedtls_pk_get_bitlen(&server.pk), 256);
    assert_int_equal(mbedtls_pk_get_type(&ca.pk), MBEDTLS_PK_ECKEY);
    assert_int_equal(mbedtls_pk_get_bitlen(&ca.pk), 256);
    assert_memory_equal(server.sig_oid.p, MBEDTLS_OID_ECDSA_SHA256,
                        MBEDTLS_OID_SIZE(MBEDTLS_OID_ECDSA_SHA256));
    /* Usages: the CA signs certificates, the server certificate only serves TLS. */
    assert_int_equal(mbedtls_x509_crt_check_key_usage(&ca, MBEDTLS_X509_KU_KEY_CERT_SIGN), 0);
    assert_int_equal(mbedtls_x509_crt_check_key_usage(&server, MBEDTLS_X509_KU_DIGITAL_SIGNATURE),
                     0);
    assert_int_not_equal(mbedtls_x509_crt_check_key_usage(&server, MBEDTLS_X509_KU_KEY_CERT_SIGN),
                         0);
    assert_int_equal(
        mbedtls_x509_crt_check_extended_key_usage(&server, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)),
        0);
    assert_int_not_equal(
        mbedtls_x509_crt_check_extended_key_usage(&server, MBEDTLS_OID_CLIENT_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)),
        0);
    /* Lifetimes: 397 days for the server, ten years for the CA. */
    long server_days = days_left(&server);
    assert_in_range(server_days, 396, 397);
    long ca_days = days_left(&ca);
    assert_in_range(ca_days, 3650, 3652);
    /* A 16-byte positive serial. */
    assert_int_equal(server.serial.len, 16);
    assert_true((server.serial.p[0] & 0x80) == 0);
    mbedtls_x509_crt_free(&server);
    mbedtls_x509_crt_free(&ca);
}

/* An independent implementation reads the same files as a device's curl or OpenSSL would. */
static void test_tlsca_openssl_accepts_files(void **state)
{
    struct fx *f = *state;
    if (!have_openssl())
        skip();
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    char cmd[2048];
    char *out = NULL;

    snprintf(cmd, sizeof(cmd), "openssl x509 -noout -text -in '%s/server.pem' 2>&1", f->tls);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "ecdsa-with-SHA256"));
    assert_non_null(strstr(out, "prime256v1"));
    assert_non_null(strstr(out, "CA:FALSE"));
    assert_non_null(strstr(out, "Digital Signature"));
    assert_non_null(strstr(out, "TLS Web Server Authentication"));
    assert_non_null(strstr(out, "DNS:localhost"));
    assert_non_null(strstr(out, "IP Address:127.0.0.1"));
    assert_non_null(strstr(out, "IP Address:0:0:0:0:0:0:0:1"));
    free(out);

    snprintf(cmd, sizeof(cmd), "openssl x509 -noout -text -in '%s/ca.pem' 2>&1", f->tls);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "CA:TRUE, pathlen:0"));
    assert_non_null(strstr(out, "Certificate Sign, CRL Sign"));
    free(out);

    snprintf(cmd, sizeof(cmd),
             "openssl verify -CAfile '%s/ca.pem' -purpose sslserver -verify_ip 127.0.0.1 "
             "'%s/server.pem' 2>&1",
             f->tls, f->tls);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, ": OK"));
    free(out);
    snprintf(cmd, sizeof(cmd),
             "openssl verify -CAfile '%s/ca.pem' -verify_hostname localhost '%s/server.pem' 2>&1",
             f->tls, f->tls);
    assert_int_equal(run(cmd, NULL), 0);
    snprintf(
        cmd, sizeof(cmd),
        "openssl verify -CAfile '%s/ca.pem' -verify_ip 10.9.8.7 '%s/server.pem' >/dev/null 2>&1",
        f->tls, f->tls);
    assert_int_not_equal(run(cmd, NULL), 0);
}

static void test_tlsca_second_ensure_keeps_files(void **state)
{
    struct fx *f = *state;
    static const char *const names[] = {"localhost", "sync.example", NULL};
    ensure_ok(f, names, MW_TLSCA_CREATED);
    static const char *const files[] = {"ca.pem", "ca.key", "server.pem", "server.key"};
    char *before[4];
    size_t len[4];
    for (size_t i = 0; i < 4; i++)
        before[i] = slurp(f, files[i], &len[i]);

    ensure_ok(f, names, MW_TLSCA_KEPT);
    /* Same names in another order and case: still the same certificate. */
    static const char *const shuffled[] = {"SYNC.example", "localhost", "127.0.0.1", NULL};
    ensure_ok(f, shuffled, MW_TLSCA_KEPT);
    for (size_t i = 0; i < 4; i++) {
        assert_same_file(f, files[i], before[i], len[i]);
        free(before[i]);
    }
}

static void test_tlsca_corrupt_server_pem_is_reissued(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    size_t ca_len, key_len;
    char *ca = slurp(f, "ca.pem", &ca_len);
    char *key = slurp(f, "server.key", &key_len);

    char *p = file_in(f, "server.pem");
    static const char junk[] = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n";
    tu_write_file(p, junk, sizeof(junk) - 1);
    free(p);

    ensure_ok(f, NULL, MW_TLSCA_SERVER_ISSUED);
    assert_same_file(f, "ca.pem", ca, ca_len); /* devices keep their ca.pem */
    assert_true(differs(f, "server.key", key, key_len));
    assert_int_equal(verify_server(f, "localhost"), 0);
    assert_int_equal(mode_of(f, "server.pem"), 0644);
    free(ca);
    free(key);
}

static void test_tlsca_mismatched_server_key_is_reissued(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    /* server.key replaced by the CA's key: parses, but does not match server.pem. */
    size_t len;
    char *cakey = slurp(f, "ca.key", &len);
    char *p = file_in(f, "server.key");
    tu_write_file(p, cakey, len);
    free(p);
    free(cakey);
    ensure_ok(f, NULL, MW_TLSCA_SERVER_ISSUED);
    ensure_ok(f, NULL, MW_TLSCA_KEPT);
}

static void test_tlsca_name_change_reissues_server_cert(void **state)
{
    struct fx *f = *state;
    static const char *const first[] = {"localhost", NULL};
    static const char *const second[] = {"localhost", "gw-7.warehouse.example", "192.0.2.10", NULL};
    ensure_ok(f, first, MW_TLSCA_CREATED);
    size_t ca_len, srv_len;
    char *ca = slurp(f, "ca.pem", &ca_len);
    char *srv = slurp(f, "server.pem", &srv_len);
    assert_true(verify_server(f, "gw-7.warehouse.example") & MBEDTLS_X509_BADCERT_CN_MISMATCH);

    ensure_ok(f, second, MW_TLSCA_SERVER_ISSUED);
    assert_same_file(f, "ca.pem", ca, ca_len);
    assert_true(differs(f, "server.pem", srv, srv_len));
    assert_int_equal(verify_server(f, "gw-7.warehouse.example"), 0);
    mbedtls_x509_crt server;
    load_crt(f, "server.pem", &server);
    static const unsigned char lan[4] = {192, 0, 2, 10};
    assert_true(san_has_ip(&server, lan, sizeof(lan)));
    mbedtls_x509_crt_free(&server);
    ensure_ok(f, second, MW_TLSCA_KEPT);

    /* A name removed is a change too: the old name must stop being served. */
    ensure_ok(f, first, MW_TLSCA_SERVER_ISSUED);
    assert_true(verify_server(f, "gw-7.warehouse.example") & MBEDTLS_X509_BADCERT_CN_MISMATCH);
    free(ca);
    free(srv);
}

static void test_tlsca_reissue_keeps_ca(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    size_t ca_len, srv_len;
    char *ca = slurp(f, "ca.pem", &ca_len);
    char *srv = slurp(f, "server.pem", &srv_len);
    struct mw_error err = {0};
    assert_int_equal(mw_tlsca_reissue_server(f->tls, NULL, &err), MW_OK);
    assert_same_file(f, "ca.pem", ca, ca_len);
    assert_true(differs(f, "server.pem", srv, srv_len));
    assert_int_equal(verify_server(f, "localhost"), 0);
    free(ca);
    free(srv);

    /* Without a CA there is nothing to re-issue with; no new CA is made behind the back. */
    char *p = file_in(f, "ca.pem");
    unlink(p);
    free(p);
    mw_error_clear(&err);
    assert_int_equal(mw_tlsca_reissue_server(f->tls, NULL, &err), MW_ENOTFOUND);
    assert_int_equal(count_entries(f->tls), 3);
}

static void test_tlsca_offline_ca_key(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    size_t srv_len;
    char *srv = slurp(f, "server.pem", &srv_len);
    char *p = file_in(f, "ca.key");
    unlink(p);

    /* The operator moved ca.key offline: a valid server certificate keeps working. */
    ensure_ok(f, NULL, MW_TLSCA_KEPT);
    /* A change that needs signing says what is missing, and changes nothing. */
    static const char *const names[] = {"localhost", "new-name.example", NULL};
    struct mw_error err = {0};
    assert_int_equal(mw_tlsca_ensure(f->tls, names, &err), MW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "ca.key"));
    assert_same_file(f, "server.pem", srv, srv_len);
    assert_int_equal(access(p, F_OK), -1);
    free(p);
    free(srv);
}

static void test_tlsca_corrupt_ca_recreates_everything(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    size_t ca_len;
    char *ca = slurp(f, "ca.pem", &ca_len);
    char *p = file_in(f, "ca.pem");
    tu_write_file(p, "garbage", 7);
    free(p);

    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    assert_true(differs(f, "ca.pem", ca, ca_len));
    assert_int_equal(verify_server(f, "localhost"), 0);
    free(ca);
}

static void test_tlsca_key_mode_is_tightened(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    char *p = file_in(f, "server.key");
    assert_int_equal(chmod(p, 0644), 0);
    free(p);
    ensure_ok(f, NULL, MW_TLSCA_KEPT);
    assert_int_equal(mode_of(f, "server.key"), 0600);
}

/* A certificate that is otherwise fine but expires within the renewal window is replaced.
 * OpenSSL signs the short-lived one with our CA key (skipped without openssl). */
static void test_tlsca_expiring_server_cert_is_renewed(void **state)
{
    struct fx *f = *state;
    if (!have_openssl())
        skip();
    static const char *const names[] = {"localhost", NULL};
    ensure_ok(f, names, MW_TLSCA_CREATED);

    char *ext = tu_path(f->dir, "ext.cnf");
    static const char ext_text[] = "basicConstraints=CA:FALSE\n"
                                   "keyUsage=digitalSignature\n"
                                   "extendedKeyUsage=serverAuth\n"
                                   "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n";
    tu_write_file(ext, ext_text, sizeof(ext_text) - 1);
    char cmd[4096];
    const int days[2] = {200, 10};
    const enum mw_tlsca_outcome want[2] = {MW_TLSCA_KEPT, MW_TLSCA_SERVER_ISSUED};
    for (size_t i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd),
                 "cd '%s' && openssl req -new -key server.key -subj /CN=localhost -out '%s/csr' "
                 "&& openssl x509 -req -in '%s/csr' -CA ca.pem -CAkey ca.key -set_serial 4660 "
                 "-sha256 -days %d -extfile '%s' -out server.pem 2>&1",
                 f->tls, f->dir, f->dir, days[i], ext);
        char *out = NULL;
        int status = run(cmd, &out);
        if (status != 0)
            fail_msg("openssl: %s", out);
        free(out);
        /* 200 days left: kept (so the openssl-made certificate passes every other check);
         * 10 days left: inside the 30-day window, re-issued. */
        ensure_ok(f, names, want[i]);
    }
    mbedtls_x509_crt server;
    load_crt(f, "server.pem", &server);
    assert_in_range(days_left(&server), 396, 397);
    mbedtls_x509_crt_free(&server);
    free(ext);
}

static void test_tlsca_rejects_bad_names(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    static const char *const bad[][2] = {
        {"bad name", NULL}, {"-leading.example", NULL}, {"trailing-.example", NULL}, {"a..b", NULL},
        {"", NULL},         {"x,O=evil", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        assert_int_equal(mw_tlsca_ensure(f->tls, bad[i], &err), MW_EINVAL);
    }
    const char *many[MW_TLSCA_NAMES_MAX + 2];
    char storage[MW_TLSCA_NAMES_MAX + 1][32];
    for (size_t i = 0; i <= MW_TLSCA_NAMES_MAX; i++) {
        snprintf(storage[i], sizeof(storage[i]), "host%zu.example", i);
        many[i] = storage[i];
    }
    many[MW_TLSCA_NAMES_MAX + 1] = NULL;
    mw_error_clear(&err);
    assert_int_equal(mw_tlsca_ensure(f->tls, many, &err), MW_EINVAL);
    /* Nothing was created for a refused call. */
    assert_int_equal(access(f->tls, F_OK), -1);

    /* The most names allowed, one of them 253 characters long, all fit. */
    many[MW_TLSCA_NAMES_MAX] = NULL;
    char longname[MW_TLSCA_NAME_MAX + 1];
    for (size_t i = 0; i < MW_TLSCA_NAME_MAX; i++)
        longname[i] = (i % 64 == 63) ? '.' : 'a';
    longname[MW_TLSCA_NAME_MAX] = '\0';
    many[0] = longname;
    ensure_ok(f, many, MW_TLSCA_CREATED);
    assert_int_equal(verify_server(f, longname), 0);
    ensure_ok(f, many, MW_TLSCA_KEPT);
}

static void test_tlsca_unreadable_file_is_an_error(void **state)
{
    struct fx *f = *state;
    ensure_ok(f, NULL, MW_TLSCA_CREATED);
    /* A directory where server.pem should be: not ours to remove, so ensure fails. */
    char *p = file_in(f, "server.pem");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0);
    struct mw_error err = {0};
    assert_int_equal(mw_tlsca_ensure(f->tls, NULL, &err), MW_EIO);
    assert_int_equal(rmdir(p), 0);
    free(p);
}

/* Every allocation of ours fails in turn: a clean MW_ENOMEM and no leak each time, and the
 * files are complete once a run gets through. */
static void test_tlsca_allocation_failures(void **state)
{
    struct fx *f = *state;
    int succeeded = 0;
    for (long n = 1; n < 200 && !succeeded; n++) {
        struct mw_error err = {0};
        mw_mem_fail_at(n);
        enum mw_err rc = mw_tlsca_ensure(f->tls, NULL, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (!fired) {
            assert_int_equal(rc, MW_OK);
            succeeded = 1;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
        }
    }
    assert_true(succeeded);
    ensure_ok(f, NULL, MW_TLSCA_KEPT);
    assert_int_equal(verify_server(f, "localhost"), 0);
}

int main(void)
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    /* The test's own mbedTLS calls (parsing, verifying) need PSA on 3.x. */
    if (psa_crypto_init() != PSA_SUCCESS)
        return 2;
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tlsca_creates_files_with_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_server_cert_verifies_with_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_openssl_accepts_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_second_ensure_keeps_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_corrupt_server_pem_is_reissued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_mismatched_server_key_is_reissued, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_name_change_reissues_server_cert, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_reissue_keeps_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_offline_ca_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_corrupt_ca_recreates_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_key_mode_is_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_expiring_server_cert_is_renewed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_rejects_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_unreadable_file_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tlsca_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
