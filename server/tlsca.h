/* tlsca.h - the server's own small certificate authority: with no certificate configured,
 * midway-server keeps a local CA and a server certificate it signed under DIR/tls, and
 * devices are given ca.pem to verify the server with.
 *
 * Files in tls_dir (created mode 0700 if missing):
 *   ca.pem      the CA certificate (ECDSA P-256, CA:true pathlen 0, keyCertSign|cRLSign,
 *               10 years); mode 0644: this is what devices get.
 *   ca.key      the CA private key, mode 0600. Only needed to issue a new server certificate:
 *               an operator may move it offline, and the server keeps running on the files
 *               it has until server.pem must be re-issued (then MW_ENOTFOUND says so).
 *   server.pem  the server certificate (ECDSA P-256, CA:false, digitalSignature, serverAuth,
 *               subjectAltName: the DNS names, 127.0.0.1 and ::1), 397 days; mode 0644.
 *   server.key  its private key, mode 0600.
 * Every file is replaced atomically (temporary file, fsync, rename, fsync of the directory),
 * so a crash leaves either the old file or the new one, and a half-finished generation is
 * found invalid and redone on the next start.
 *
 * Thread safety: any thread, but at most one call per tls_dir at a time (the functions
 * replace its files). Each call seeds its own random generator from the system's entropy. */
#ifndef MIDWAY_SERVER_TLSCA_H
#define MIDWAY_SERVER_TLSCA_H
#include "midway/err.h"

/* Names in one server certificate, IP literals included. Operator configuration, not network
 * input; the bound keeps the subjectAltName extension (and the certificate every handshake
 * sends) small. */
#define MW_TLSCA_NAMES_MAX 16u

/* A DNS name: RFC 1035's 253 characters of text. */
#define MW_TLSCA_NAME_MAX 253u

/* A certificate or key file read back from disk. Ours are under 3 KiB; a larger file is not
 * ours, and is refused before it is parsed. */
#define MW_TLSCA_FILE_MAX (64u * 1024u)

/* server.pem is re-issued when it would expire within this many days, so a server that is
 * restarted at least monthly never serves an expired certificate. */
#define MW_TLSCA_RENEW_DAYS 30

/* What mw_tlsca_ensure_ex() did. */
enum mw_tlsca_outcome {
    MW_TLSCA_KEPT = 0,      /* every file was valid and kept as it was */
    MW_TLSCA_SERVER_ISSUED, /* a new server key and certificate; the CA was kept */
    MW_TLSCA_CREATED,       /* a new CA, key and server certificate: devices need the new ca.pem */
};

/* Makes sure tls_dir holds a valid CA and a server certificate for names, and keeps what is
 * there when it is valid:
 *   - ca.pem must parse, be a self-signed CA, and not expire within MW_TLSCA_RENEW_DAYS;
 *     ca.key, when present, must parse and match it. Otherwise a new CA is made, and with it
 *     a new server certificate (outcome MW_TLSCA_CREATED).
 *   - server.pem and server.key must parse, match, verify against ca.pem, carry serverAuth,
 *     not expire within MW_TLSCA_RENEW_DAYS, and name exactly the requested names in
 *     subjectAltName. Otherwise a new key and certificate are issued with ca.key.
 * names is a NULL-terminated list of DNS names or IP literals (an IP literal goes into the
 * certificate as an IP address); NULL means the defaults: "localhost" and this host's name
 * (when it is a valid DNS name). 127.0.0.1 and ::1 are always included. DNS names compare
 * case-insensitively; duplicates are dropped. names is borrowed.
 * Errors: MW_EINVAL (a name that is neither a DNS name nor an IP literal, more than
 * MW_TLSCA_NAMES_MAX names, tls_dir path too long), MW_ENOTFOUND (server.pem must be re-issued
 * but ca.key is not in tls_dir: put it back, or remove ca.pem to start a new CA), MW_EIO
 * (a file or the directory could not be read or written; a file that exists but cannot be
 * read is an error, never silently replaced), MW_ENOMEM. On failure the files that were valid
 * are still in place. *outcome_out (may be NULL) says what was done. */
MW_NODISCARD enum mw_err mw_tlsca_ensure_ex(const char *tls_dir, const char *const *names,
                                            enum mw_tlsca_outcome *outcome_out,
                                            struct mw_error *err);

/* mw_tlsca_ensure_ex() without the outcome. */
MW_NODISCARD enum mw_err mw_tlsca_ensure(const char *tls_dir, const char *const *names,
                                         struct mw_error *err);

/* Issues a new server key and certificate for names with the CA in tls_dir, whatever the
 * state of the old ones (for instance after the host was renamed, or when an operator wants a
 * new key). The CA is kept: devices need nothing new.
 * Errors: as mw_tlsca_ensure_ex(), plus MW_ENOTFOUND when ca.pem or ca.key is missing and
 * MW_EMALFORMED when either is invalid (no new CA is made here: that is mw_tlsca_ensure's
 * decision). */
MW_NODISCARD enum mw_err mw_tlsca_reissue_server(const char *tls_dir, const char *const *names,
                                                 struct mw_error *err);

/* A stable lower-case name for an outcome ("kept", "server_issued", "created"), for logs. */
const char *mw_tlsca_outcome_name(enum mw_tlsca_outcome outcome);

#endif
