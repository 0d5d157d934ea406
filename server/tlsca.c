/* tlsca.c - the local CA and server certificate under DIR/tls (see tlsca.h). */
#include "tlsca.h"

#include "mem.h"

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER < 0x03040000
#include <mbedtls/bignum.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- mbedTLS 2.28 / 3.x differences, all of them ------------------------------------- */

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#if defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif
#if defined(MBEDTLS_MD_CAN_SHA1)
#define HAVE_KEY_IDENTIFIERS 1 /* the key identifiers are SHA-1 hashes of the keys */
#endif

/* 3.x parses and checks EC keys with blinding, so it wants the random generator. */
static int pk_parse(mbedtls_pk_context *pk, const unsigned char *buf, size_t len,
                    mbedtls_ctr_drbg_context *drbg)
{
    return mbedtls_pk_parse_key(pk, buf, len, NULL, 0, mbedtls_ctr_drbg_random, drbg);
}

static int pk_check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv,
                         mbedtls_ctr_drbg_context *drbg)
{
    return mbedtls_pk_check_pair(pub, prv, mbedtls_ctr_drbg_random, drbg);
}

/* 3.x needs PSA crypto initialised before X.509 and TLS 1.3 use its hashes and keys;
 * psa_crypto_init() is idempotent and thread-safe with MBEDTLS_THREADING_C. */
static int crypto_init(void)
{
#if defined(MBEDTLS_PSA_CRYPTO_C)
    return psa_crypto_init() == PSA_SUCCESS ? 0 : -1;
#else
    return 0;
#endif
}

#else /* mbedTLS 2.x */
#if defined(MBEDTLS_SHA1_C)
#define HAVE_KEY_IDENTIFIERS 1
#endif

static int pk_parse(mbedtls_pk_context *pk, const unsigned char *buf, size_t len,
                    mbedtls_ctr_drbg_context *drbg)
{
    (void)drbg;
    return mbedtls_pk_parse_key(pk, buf, len, NULL, 0);
}

static int pk_check_pair(const mbedtls_pk_context *pub, const mbedtls_pk_context *prv,
                         mbedtls_ctr_drbg_context *drbg)
{
    (void)drbg;
    return mbedtls_pk_check_pair(pub, prv);
}

static int crypto_init(void)
{
    return 0;
}
#endif

/* The serial is 16 random bytes, positive and without a leading zero byte, so it is the
 * same INTEGER whichever way a version encodes it. 3.4 replaced the bignum setter. */
static int set_serial(mbedtls_x509write_cert *crt, const unsigned char serial[16])
{
#if MBEDTLS_VERSION_NUMBER >= 0x03040000
    return mbedtls_x509write_crt_set_serial_raw(crt, (unsigned char *)serial, 16);
#else
    mbedtls_mpi mpi;
    mbedtls_mpi_init(&mpi);
    int ret = mbedtls_mpi_read_binary(&mpi, serial, 16);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(crt, &mpi);
    mbedtls_mpi_free(&mpi);
    return ret;
#endif
}

/* ---- constants -------------------------------------------------------------------------- */

#define CA_DAYS          3652 /* ten years, leap days included */
#define SERVER_DAYS      397  /* what browsers accept at most; short enough to re-issue routinely */
/* Devices may run a little behind (gateways offline for days, clocks set by hand), so a new
 * certificate is valid from an hour before it was made. */
#define BACKDATE_SECONDS 3600
#define DAY_SECONDS      86400

#define PATH_CAP 4096
#define PEM_CAP  8192 /* a server certificate with MW_TLSCA_NAMES_MAX long names is ~6 KiB */
#define KEY_CAP  1024 /* a P-256 key in PEM is ~230 bytes */
/* The subjectAltName value: each DNS name with a 3-byte header, each IP with 2, and the
 * SEQUENCE header. */
#define SAN_CAP  ((MW_TLSCA_NAMES_MAX + 2u) * (MW_TLSCA_NAME_MAX + 3u) + 8u)

static const char PERSONALIZATION[] = "midway-tlsca";

/* ---- names ------------------------------------------------------------------------------ */

struct nameset {
    char dns[MW_TLSCA_NAMES_MAX][MW_TLSCA_NAME_MAX + 1]; /* lower case */
    size_t n_dns;
    unsigned char ip[MW_TLSCA_NAMES_MAX + 2][16];
    size_t ip_len[MW_TLSCA_NAMES_MAX + 2]; /* 4 or 16 */
    size_t n_ip;
};

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* RFC 1123 host names: labels of letters, digits and inner hyphens, 1..63 bytes each. */
static bool valid_dns_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MW_TLSCA_NAME_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0))
            return false;
        label++;
    }
    return true;
}

static void add_ip(struct nameset *ns, const unsigned char *ip, size_t len)
{
    for (size_t i = 0; i < ns->n_ip; i++) {
        if (ns->ip_len[i] == len && memcmp(ns->ip[i], ip, len) == 0)
            return;
    }
    memcpy(ns->ip[ns->n_ip], ip, len);
    ns->ip_len[ns->n_ip] = len;
    ns->n_ip++;
}

static void add_dns(struct nameset *ns, const char *name)
{
    char low[MW_TLSCA_NAME_MAX + 1];
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++)
        low[i] = lower(name[i]);
    low[n] = '\0';
    for (size_t i = 0; i < ns->n_dns; i++) {
        if (strcmp(ns->dns[i], low) == 0)
            return;
    }
    memcpy(ns->dns[ns->n_dns], low, n + 1);
    ns->n_dns++;
}

static enum mw_err add_name(struct nameset *ns, const char *name, struct mw_error *err)
{
    unsigned char ip[16];
    if (inet_pton(AF_INET, name, ip) == 1) {
        add_ip(ns, ip, 4);
        return MW_OK;
    }
    if (inet_pton(AF_INET6, name, ip) == 1) {
        add_ip(ns, ip, 16);
        return MW_OK;
    }
    if (!valid_dns_name(name))
        return mw_fail(err, MW_EINVAL,
                       "certificate name \"%.64s\" is neither a DNS name nor an IP address", name);
    add_dns(ns, name);
    return MW_OK;
}

static enum mw_err resolve_names(const char *const *names, struct nameset *ns, struct mw_error *err)
{
    memset(ns, 0, sizeof(*ns));
    if (!names) {
        add_dns(ns, "localhost");
        char host[256];
        /* The host name is a convenience: one that is not a valid DNS name (or none) is left
         * out rather than failing the server's start. */
        if (gethostname(host, sizeof(host)) == 0) {
            host[sizeof(host) - 1] = '\0';
            if (valid_dns_name(host))
                add_dns(ns, host);
        }
    } else {
        size_t count = 0;
        while (names[count])
            count++;
        if (count > MW_TLSCA_NAMES_MAX)
            return mw_fail(err, MW_EINVAL, "%zu certificate names, at most %u", count,
                           MW_TLSCA_NAMES_MAX);
        for (size_t i = 0; i < count; i++) {
            enum mw_err rc = add_name(ns, names[i], err);
            if (rc != MW_OK)
                return rc;
        }
    }
    static const unsigned char v4_loopback[4] = {127, 0, 0, 1};
    static const unsigned char v6_loopback[16] = {[15] = 1};
    add_ip(ns, v4_loopback, sizeof(v4_loopback));
    add_ip(ns, v6_loopback, sizeof(v6_loopback));
    return MW_OK;
}

/* Whether crt's subjectAltName holds exactly the names in ns (in any order). */
static bool san_matches(const mbedtls_x509_crt *crt, const struct nameset *ns)
{
    bool dns_seen[MW_TLSCA_NAMES_MAX] = {false};
    bool ip_seen[MW_TLSCA_NAMES_MAX + 2] = {false};
    size_t entries = 0;
    const unsigned char dns_tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME;
    const unsigned char ip_tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS;

    for (const mbedtls_x509_sequence *cur = &crt->subject_alt_names; cur && cur->buf.p;
         cur = cur->next) {
        const mbedtls_x509_buf *b = &cur->buf;
        bool found = false;
        entries++;
        if (b->tag == dns_tag) {
            for (size_t i = 0; i < ns->n_dns && !found; i++) {
                const char *want = ns->dns[i];
                if (strlen(want) != b->len)
                    continue;
                size_t k = 0;
                while (k < b->len && lower((char)b->p[k]) == want[k])
                    k++;
                if (k == b->len) {
                    dns_seen[i] = true;
                    found = true;
                }
            }
        } else if (b->tag == ip_tag) {
            for (size_t i = 0; i < ns->n_ip && !found; i++) {
                if (ns->ip_len[i] == b->len && memcmp(ns->ip[i], b->p, b->len) == 0) {
                    ip_seen[i] = true;
                    found = true;
                }
            }
        }
        if (!found)
            return false;
    }
    if (entries != ns->n_dns + ns->n_ip)
        return false;
    for (size_t i = 0; i < ns->n_dns; i++) {
        if (!dns_seen[i])
            return false;
    }
    for (size_t i = 0; i < ns->n_ip; i++) {
        if (!ip_seen[i])
            return false;
    }
    return true;
}

/* ---- small helpers ---------------------------------------------------------------------- */

static enum mw_err tls_fail(struct mw_error *err, enum mw_err code, int ret, const char *what)
{
    char text[128];
    mbedtls_strerror(ret, text, sizeof(text));
    return mw_fail(err, code, "%s: %s (-0x%04x)", what, text, (unsigned)-ret);
}

static enum mw_err join(char *out, const char *dir, const char *name, struct mw_error *err)
{
    int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= PATH_CAP)
        return mw_fail(err, MW_EINVAL, "path too long: %.64s...", dir);
    return MW_OK;
}

/* Whether the instant t falls after the certificate time x (both UTC). */
static bool after_x509_time(time_t t, const mbedtls_x509_time *x)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return true;
    const int a[6] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour,        tm.tm_min,     tm.tm_sec};
    const int b[6] = {x->year, x->mon, x->day, x->hour, x->min, x->sec};
    for (size_t i = 0; i < 6; i++) {
        if (a[i] != b[i])
            return a[i] > b[i];
    }
    return false;
}

/* True when crt is still valid MW_TLSCA_RENEW_DAYS from now. */
static bool lasts_renew_window(const mbedtls_x509_crt *crt)
{
    time_t horizon = time(NULL) + (time_t)MW_TLSCA_RENEW_DAYS * DAY_SECONDS;
    return !after_x509_time(horizon, &crt->valid_to);
}

static void x509_time_text(time_t t, char out[16])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 16, "%Y%m%d%H%M%S", &tm) != 14)
        out[0] = '\0';
}

/* ---- random generator ------------------------------------------------------------------- */

struct rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static void rng_init(struct rng *r)
{
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
}

static enum mw_err rng_seed(struct rng *r, struct mw_error *err)
{
    int ret =
        mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                              (const unsigned char *)PERSONALIZATION, sizeof(PERSONALIZATION) - 1);
    if (ret != 0)
        return tls_fail(err, MW_EIO, ret, "seed random generator");
    return MW_OK;
}

static void rng_free(struct rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

/* ---- files ------------------------------------------------------------------------------ */

enum file_state {
    FILE_OK,      /* read (and, by the caller, parsed) */
    FILE_MISSING, /* no such file */
    FILE_BAD,     /* there, but not something we could have written: replace it */
};

/* Reads path into a NUL-terminated buffer (len counts the NUL, as mbedTLS's PEM parsers
 * want). A missing file is FILE_MISSING and a file over MW_TLSCA_FILE_MAX FILE_BAD; any other
 * failure is MW_EIO, because a file we cannot read must not be replaced behind the
 * operator's back. */
static enum mw_err read_small_file(const char *path, unsigned char **data_out, size_t *len_out,
                                   enum file_state *state, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    unsigned char *data = NULL;
    size_t size = 0;
    *data_out = NULL;
    *len_out = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *state = FILE_MISSING;
            return MW_OK;
        }
        return mw_fail(err, MW_EIO, "open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mw_fail(err, MW_EIO, "stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mw_fail(err, MW_EIO, "%s is not a regular file", path);
        goto fail;
    }
    if (st.st_size <= 0 || (unsigned long long)st.st_size > MW_TLSCA_FILE_MAX) {
        *state = FILE_BAD;
        close(fd);
        return MW_OK;
    }
    size = (size_t)st.st_size;
    data = mw_malloc(size + 1);
    if (!data) {
        rc = mw_fail(err, MW_ENOMEM, "read %s", path);
        goto fail;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = mw_fail(err, MW_EIO, "read %s: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break; /* shrank under us: parse what is there, it will fail if cut short */
        got += (size_t)n;
    }
    data[got] = '\0';
    close(fd);
    *data_out = data;
    *len_out = got + 1;
    *state = FILE_OK;
    return MW_OK;
fail:
    if (data) {
        mbedtls_platform_zeroize(data, size + 1);
        mw_free(data);
    }
    close(fd);
    return rc;
}

static void free_secret(unsigned char *data, size_t len)
{
    if (!data)
        return;
    mbedtls_platform_zeroize(data, len);
    mw_free(data);
}

/* Replaces dir/name with data: temporary file, fsync, rename, fsync of the directory. After
 * a crash the name holds the old contents or the new ones, never a mix. */
static enum mw_err write_atomic(const char *dir, const char *name, const void *data, size_t len,
                                mode_t mode, struct mw_error *err)
{
    char path[PATH_CAP];
    char tmp[PATH_CAP];
    enum mw_err rc = join(path, dir, name, err);
    if (rc != MW_OK)
        return rc;
    int n = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return mw_fail(err, MW_EINVAL, "path too long: %.64s...", dir);

    int fd = mkstemp(tmp); /* mode 0600 from the start: a key is never readable by others */
    if (fd < 0)
        return mw_fail(err, MW_EIO, "create %s: %s", tmp, strerror(errno));
    if (fchmod(fd, mode) != 0) {
        rc = mw_fail(err, MW_EIO, "chmod %s: %s", tmp, strerror(errno));
        goto fail;
    }
    const unsigned char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = mw_fail(err, MW_EIO, "write %s: %s", tmp, strerror(errno));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = mw_fail(err, MW_EIO, "fsync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = mw_fail(err, MW_EIO, "close %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = mw_fail(err, MW_EIO, "rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    /* The rename is durable only once the directory entry is on disk. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return mw_fail(err, MW_EIO, "open %s: %s", dir, strerror(errno));
    if (fsync(dfd) != 0) {
        rc = mw_fail(err, MW_EIO, "fsync %s: %s", dir, strerror(errno));
        close(dfd);
        return rc;
    }
    close(dfd);
    return MW_OK;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

/* A key that was made readable by others since we wrote it is put back to 0600. */
static enum mw_err tighten_key_mode(const char *dir, const char *name, struct mw_error *err)
{
    char path[PATH_CAP];
    struct stat st;
    enum mw_err rc = join(path, dir, name, err);
    if (rc != MW_OK)
        return rc;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? MW_OK : mw_fail(err, MW_EIO, "stat %s: %s", path, strerror(errno));
    if ((st.st_mode & 077) != 0 && chmod(path, 0600) != 0)
        return mw_fail(err, MW_EIO, "chmod %s: %s", path, strerror(errno));
    return MW_OK;
}

static enum mw_err load_crt(const char *dir, const char *name, mbedtls_x509_crt *crt,
                            enum file_state *state, struct mw_error *err)
{
    char path[PATH_CAP];
    unsigned char *data = NULL;
    size_t len = 0;
    enum mw_err rc = join(path, dir, name, err);
    if (rc != MW_OK)
        return rc;
    rc = read_small_file(path, &data, &len, state, err);
    if (rc != MW_OK || *state != FILE_OK)
        return rc;
    int ret = mbedtls_x509_crt_parse(crt, data, len);
    /* Exactly one certificate: ours never hold a chain, so anything else was not made here. */
    if (ret != 0 || crt->next != NULL)
        *state = FILE_BAD;
    mw_free(data);
    return MW_OK;
}

static enum mw_err load_key(const char *dir, const char *name, mbedtls_pk_context *pk,
                            struct rng *r, enum file_state *state, struct mw_error *err)
{
    char path[PATH_CAP];
    unsigned char *data = NULL;
    size_t len = 0;
    enum mw_err rc = join(path, dir, name, err);
    if (rc != MW_OK)
        return rc;
    rc = read_small_file(path, &data, &len, state, err);
    if (rc != MW_OK || *state != FILE_OK)
        return rc;
    if (pk_parse(pk, data, len, &r->drbg) != 0)
        *state = FILE_BAD;
    free_secret(data, len);
    return MW_OK;
}

/* ---- generation ------------------------------------------------------------------------- */

static enum mw_err gen_key(mbedtls_pk_context *key, struct rng *r, struct mw_error *err)
{
    int ret = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key),
                                  mbedtls_ctr_drbg_random, &r->drbg);
    if (ret != 0)
        return tls_fail(err, ret == MBEDTLS_ERR_PK_ALLOC_FAILED ? MW_ENOMEM : MW_EIO, ret,
                        "generate P-256 key");
    return MW_OK;
}

static enum mw_err write_key(const char *dir, const char *name, mbedtls_pk_context *key,
                             struct mw_error *err)
{
    unsigned char pem[KEY_CAP];
    int ret = mbedtls_pk_write_key_pem(key, pem, sizeof(pem));
    if (ret != 0)
        return tls_fail(err, MW_EIO, ret, "encode private key");
    enum mw_err rc = write_atomic(dir, name, pem, strlen((const char *)pem), 0600, err);
    mbedtls_platform_zeroize(pem, sizeof(pem));
    return rc;
}

/* One GeneralName, written backwards as mbedtls_asn1_write_* do; returns its length or a
 * negative mbedTLS error. */
static int put_general_name(unsigned char **p, unsigned char *start, int san_type,
                            const unsigned char *data, size_t n)
{
    int total = 0;
    int r = mbedtls_asn1_write_raw_buffer(p, start, data, n);
    if (r < 0)
        return r;
    total += r;
    r = mbedtls_asn1_write_len(p, start, n);
    if (r < 0)
        return r;
    total += r;
    r = mbedtls_asn1_write_tag(p, start, (unsigned char)(MBEDTLS_ASN1_CONTEXT_SPECIFIC | san_type));
    if (r < 0)
        return r;
    return total + r;
}

/* subjectAltName by hand: 2.28 has no writer for it, and 3.x's cannot write IP addresses
 * before 3.5, so one encoder serves every version. */
static int set_san(mbedtls_x509write_cert *crt, const struct nameset *ns)
{
    unsigned char buf[SAN_CAP];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int r;
    for (size_t i = ns->n_ip; i-- > 0;) {
        r = put_general_name(&p, buf, MBEDTLS_X509_SAN_IP_ADDRESS, ns->ip[i], ns->ip_len[i]);
        if (r < 0)
            return r;
        len += (size_t)r;
    }
    for (size_t i = ns->n_dns; i-- > 0;) {
        r = put_general_name(&p, buf, MBEDTLS_X509_SAN_DNS_NAME, (const unsigned char *)ns->dns[i],
                             strlen(ns->dns[i]));
        if (r < 0)
            return r;
        len += (size_t)r;
    }
    r = mbedtls_asn1_write_len(&p, buf, len);
    if (r < 0)
        return r;
    len += (size_t)r;
    r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    if (r < 0)
        return r;
    len += (size_t)r;
    /* Not critical: the subject also carries a CN (RFC 5280 4.2.1.6). */
    return mbedtls_x509write_crt_set_extension(crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p,
                                               len);
}

/* extendedKeyUsage = serverAuth, by hand as well: the writer arrived in 3.x only. */
static int set_eku_server_auth(mbedtls_x509write_cert *crt)
{
    unsigned char buf[32];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
                                   MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH));
    if (r < 0)
        return r;
    len += (size_t)r;
    r = mbedtls_asn1_write_len(&p, buf, len);
    if (r < 0)
        return r;
    len += (size_t)r;
    r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    if (r < 0)
        return r;
    len += (size_t)r;
    return mbedtls_x509write_crt_set_extension(crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0,
                                               p, len);
}

struct crt_spec {
    const char *subject;
    const char *issuer;
    mbedtls_pk_context *subject_key;
    mbedtls_pk_context *issuer_key;
    int days;
    bool is_ca;
    const struct nameset *names; /* server certificates only */
};

/* Signs a certificate as spec says and writes it, PEM, to dir/name (mode 0644). */
static enum mw_err write_crt(const char *dir, const char *name, const struct crt_spec *spec,
                             struct rng *r, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    mbedtls_x509write_cert crt;
    unsigned char *pem = NULL;
    unsigned char serial[16];
    char from[16];
    char to[16];
    const char *step = "serial";
    int ret;

    mbedtls_x509write_crt_init(&crt);
    time_t start = time(NULL) - BACKDATE_SECONDS;
    x509_time_text(start, from);
    x509_time_text(start + (time_t)spec->days * DAY_SECONDS, to);

    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, spec->subject_key);
    mbedtls_x509write_crt_set_issuer_key(&crt, spec->issuer_key);
    ret = mbedtls_ctr_drbg_random(&r->drbg, serial, sizeof(serial));
    if (ret == 0) {
        serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40);
        ret = set_serial(&crt, serial);
    }
    if (ret == 0) {
        step = "subject";
        ret = mbedtls_x509write_crt_set_subject_name(&crt, spec->subject);
    }
    if (ret == 0) {
        step = "issuer";
        ret = mbedtls_x509write_crt_set_issuer_name(&crt, spec->issuer);
    }
    if (ret == 0) {
        step = "validity";
        ret = mbedtls_x509write_crt_set_validity(&crt, from, to);
    }
    if (ret == 0) {
        step = "basicConstraints";
        ret = mbedtls_x509write_crt_set_basic_constraints(&crt, spec->is_ca ? 1 : 0,
                                                          spec->is_ca ? 0 : -1);
    }
#if defined(HAVE_KEY_IDENTIFIERS)
    if (ret == 0) {
        step = "key identifiers";
        ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt);
    }
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt);
#endif
    if (ret == 0) {
        step = "keyUsage";
        ret = mbedtls_x509write_crt_set_key_usage(
            &crt, spec->is_ca ? (MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN)
                              : MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    }
    if (ret == 0 && !spec->is_ca) {
        step = "extendedKeyUsage";
        ret = set_eku_server_auth(&crt);
    }
    if (ret == 0 && spec->names) {
        step = "subjectAltName";
        ret = set_san(&crt, spec->names);
    }
    if (ret != 0) {
        rc = tls_fail(err, ret == MBEDTLS_ERR_X509_ALLOC_FAILED ? MW_ENOMEM : MW_EIO, ret, step);
        goto fail;
    }
    pem = mw_malloc(PEM_CAP);
    if (!pem) {
        rc = mw_fail(err, MW_ENOMEM, "certificate buffer");
        goto fail;
    }
    ret = mbedtls_x509write_crt_pem(&crt, pem, PEM_CAP, mbedtls_ctr_drbg_random, &r->drbg);
    if (ret != 0) {
        rc = tls_fail(err, MW_EIO, ret, "sign certificate");
        goto fail;
    }
    rc = write_atomic(dir, name, pem, strlen((const char *)pem), 0644, err);
fail:
    mw_free(pem);
    mbedtls_x509write_crt_free(&crt);
    return rc;
}

/* ---- the checks and the decision ------------------------------------------------------- */

/* A CA certificate we can keep: self-signed, signs certificates, and lives past the
 * renewal window. */
static bool ca_crt_usable(mbedtls_x509_crt *ca)
{
    uint32_t flags = 0;
    if (mbedtls_x509_crt_verify(ca, ca, NULL, NULL, &flags, NULL, NULL) != 0 || flags != 0)
        return false;
    if (mbedtls_x509_crt_check_key_usage(ca, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0)
        return false;
    return lasts_renew_window(ca);
}

/* A server certificate we can keep: issued by ca, matches its key, for serverAuth, lives past
 * the renewal window, and names exactly ns. */
static bool server_usable(mbedtls_x509_crt *crt, mbedtls_pk_context *key, mbedtls_x509_crt *ca,
                          const struct nameset *ns, struct rng *r)
{
    uint32_t flags = 0;
    if (pk_check_pair(&crt->pk, key, &r->drbg) != 0)
        return false;
    if (mbedtls_x509_crt_verify(crt, ca, NULL, NULL, &flags, NULL, NULL) != 0 || flags != 0)
        return false;
    if (mbedtls_x509_crt_check_extended_key_usage(crt, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) != 0)
        return false;
    return lasts_renew_window(crt) && san_matches(crt, ns);
}

static enum mw_err make_dir(const char *dir, struct mw_error *err)
{
    struct stat st;
    if (mkdir(dir, 0700) == 0)
        return MW_OK;
    if (errno != EEXIST)
        return mw_fail(err, MW_EIO, "mkdir %s: %s", dir, strerror(errno));
    if (stat(dir, &st) != 0)
        return mw_fail(err, MW_EIO, "stat %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mw_fail(err, MW_EIO, "%s is not a directory", dir);
    return MW_OK;
}

enum mode {
    MODE_ENSURE,  /* keep what is valid */
    MODE_REISSUE, /* new server key and certificate, same CA */
};

static enum mw_err run(const char *dir, const char *const *names, enum mode mode,
                       enum mw_tlsca_outcome *outcome_out, struct mw_error *err)
{
    enum mw_err rc;
    struct nameset *ns = NULL;
    struct rng r;
    mbedtls_x509_crt ca, server;
    mbedtls_pk_context ca_key, server_key;
    enum file_state ca_state, ca_key_state, server_state, server_key_state;
    enum mw_tlsca_outcome outcome = MW_TLSCA_KEPT;
    char subject[128];

    rng_init(&r);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crt_init(&server);
    mbedtls_pk_init(&ca_key);
    mbedtls_pk_init(&server_key);

    if (!dir) {
        rc = mw_fail(err, MW_EINVAL, "no TLS directory");
        goto fail;
    }
    ns = mw_malloc(sizeof(*ns));
    if (!ns) {
        rc = mw_fail(err, MW_ENOMEM, "name list");
        goto fail;
    }
    rc = resolve_names(names, ns, err);
    if (rc != MW_OK)
        goto fail;
    if (crypto_init() != 0) {
        rc = mw_fail(err, MW_EIO, "PSA crypto init failed");
        goto fail;
    }
    rc = rng_seed(&r, err);
    if (rc != MW_OK)
        goto fail;
    rc = make_dir(dir, err);
    if (rc != MW_OK)
        goto fail;

    /* The CA. A missing ca.key is allowed (moved offline); a damaged one is not ours. */
    rc = load_crt(dir, "ca.pem", &ca, &ca_state, err);
    if (rc == MW_OK)
        rc = load_key(dir, "ca.key", &ca_key, &r, &ca_key_state, err);
    if (rc != MW_OK)
        goto fail;
    bool ca_ok = ca_state == FILE_OK && ca_crt_usable(&ca) && ca_key_state != FILE_BAD;
    if (ca_ok && ca_key_state == FILE_OK && pk_check_pair(&ca.pk, &ca_key, &r.drbg) != 0)
        ca_ok = false;

    if (mode == MODE_REISSUE && !ca_ok) {
        rc = mw_fail(err, ca_state == FILE_MISSING ? MW_ENOTFOUND : MW_EMALFORMED,
                     "%s/ca.pem is %s: not issuing a server certificate", dir,
                     ca_state == FILE_MISSING ? "missing" : "not a usable CA with ca.key");
        goto fail;
    }
    if (!ca_ok) {
        /* A new CA: every device must be given the new ca.pem, which is why this happens only
         * when the old one is gone, damaged or about to expire. */
        mbedtls_pk_free(&ca_key);
        mbedtls_pk_init(&ca_key);
        mbedtls_x509_crt_free(&ca);
        mbedtls_x509_crt_init(&ca);
        unsigned char id[4];
        if (mbedtls_ctr_drbg_random(&r.drbg, id, sizeof(id)) != 0) {
            rc = mw_fail(err, MW_EIO, "random CA id");
            goto fail;
        }
        /* A short random id tells one installation's CA from another's in tools and logs. */
        snprintf(subject, sizeof(subject), "CN=Midway local CA %02x%02x%02x%02x,O=Midway", id[0],
                 id[1], id[2], id[3]);
        rc = gen_key(&ca_key, &r, err);
        if (rc == MW_OK)
            rc = write_key(dir, "ca.key", &ca_key, err);
        if (rc != MW_OK)
            goto fail;
        const struct crt_spec spec = {
            .subject = subject,
            .issuer = subject,
            .subject_key = &ca_key,
            .issuer_key = &ca_key,
            .days = CA_DAYS,
            .is_ca = true,
            .names = NULL,
        };
        rc = write_crt(dir, "ca.pem", &spec, &r, err);
        if (rc == MW_OK)
            rc = load_crt(dir, "ca.pem", &ca, &ca_state, err);
        if (rc != MW_OK)
            goto fail;
        if (ca_state != FILE_OK) {
            rc = mw_fail(err, MW_EIO, "%s/ca.pem does not parse after writing it", dir);
            goto fail;
        }
        ca_key_state = FILE_OK;
        outcome = MW_TLSCA_CREATED;
    }

    /* The server certificate. */
    if (outcome == MW_TLSCA_KEPT && mode == MODE_ENSURE) {
        rc = load_crt(dir, "server.pem", &server, &server_state, err);
        if (rc == MW_OK)
            rc = load_key(dir, "server.key", &server_key, &r, &server_key_state, err);
        if (rc != MW_OK)
            goto fail;
        if (server_state == FILE_OK && server_key_state == FILE_OK &&
            server_usable(&server, &server_key, &ca, ns, &r)) {
            rc = tighten_key_mode(dir, "server.key", err);
            if (rc == MW_OK)
                rc = tighten_key_mode(dir, "ca.key", err);
            if (rc != MW_OK)
                goto fail;
            goto done;
        }
    }
    if (ca_key_state != FILE_OK) {
        rc = mw_fail(err, MW_ENOTFOUND,
                     "%s/server.pem must be re-issued but %s/ca.key is not there (moved "
                     "offline?): put it back, or remove ca.pem to start a new CA",
                     dir, dir);
        goto fail;
    }
    mbedtls_pk_free(&server_key);
    mbedtls_pk_init(&server_key);
    rc = gen_key(&server_key, &r, err);
    if (rc == MW_OK)
        rc = write_key(dir, "server.key", &server_key, err);
    if (rc != MW_OK)
        goto fail;
    char issuer[256];
    int n = mbedtls_x509_dn_gets(issuer, sizeof(issuer), &ca.subject);
    if (n < 0) {
        rc = tls_fail(err, MW_EIO, n, "CA subject");
        goto fail;
    }
    /* X.509 caps a CN at 64 characters (ub-common-name); clients match on subjectAltName
     * anyway, so the CN is only a label. */
    const char *cn = "midway-server";
    if (ns->n_dns > 0 && strlen(ns->dns[0]) <= 64)
        cn = ns->dns[0];
    snprintf(subject, sizeof(subject), "CN=%.64s,O=Midway", cn);
    const struct crt_spec spec = {
        .subject = subject,
        .issuer = issuer,
        .subject_key = &server_key,
        .issuer_key = &ca_key,
        .days = SERVER_DAYS,
        .is_ca = false,
        .names = ns,
    };
    rc = write_crt(dir, "server.pem", &spec, &r, err);
    if (rc != MW_OK)
        goto fail;
    /* Read back what devices will get: the issuer name went through text and back, and a
     * certificate that does not chain to ca.pem must fail here, not in every handshake. */
    mbedtls_x509_crt_free(&server);
    mbedtls_x509_crt_init(&server);
    rc = load_crt(dir, "server.pem", &server, &server_state, err);
    if (rc != MW_OK)
        goto fail;
    uint32_t flags = 0;
    if (server_state != FILE_OK ||
        mbedtls_x509_crt_verify(&server, &ca, NULL, NULL, &flags, NULL, NULL) != 0) {
        rc = mw_fail(err, MW_EIO, "the new %s/server.pem does not verify against ca.pem (0x%x)",
                     dir, (unsigned)flags);
        goto fail;
    }
    if (outcome == MW_TLSCA_KEPT)
        outcome = MW_TLSCA_SERVER_ISSUED;

done:
    if (outcome_out)
        *outcome_out = outcome;
    rc = MW_OK;
fail:
    mbedtls_pk_free(&server_key);
    mbedtls_pk_free(&ca_key);
    mbedtls_x509_crt_free(&server);
    mbedtls_x509_crt_free(&ca);
    rng_free(&r);
    mw_free(ns);
    if (rc != MW_OK)
        return mw_fail(err, rc, "TLS files in %s", dir ? dir : "(null)");
    return MW_OK;
}

enum mw_err mw_tlsca_ensure_ex(const char *tls_dir, const char *const *names,
                               enum mw_tlsca_outcome *outcome_out, struct mw_error *err)
{
    return run(tls_dir, names, MODE_ENSURE, outcome_out, err);
}

enum mw_err mw_tlsca_ensure(const char *tls_dir, const char *const *names, struct mw_error *err)
{
    return run(tls_dir, names, MODE_ENSURE, NULL, err);
}

enum mw_err mw_tlsca_reissue_server(const char *tls_dir, const char *const *names,
                                    struct mw_error *err)
{
    return run(tls_dir, names, MODE_REISSUE, NULL, err);
}

const char *mw_tlsca_outcome_name(enum mw_tlsca_outcome outcome)
{
    switch (outcome) {
    case MW_TLSCA_KEPT:
        return "kept";
    case MW_TLSCA_SERVER_ISSUED:
        return "server_issued";
    case MW_TLSCA_CREATED:
        return "created";
    }
    return "unknown";
}
