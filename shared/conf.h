/* conf.h - settings from a config file and from command-line flags, described by one table
 * per program (key, type, where the value lives in the program's struct, bounds, default,
 * help), so a setting is validated the same way wherever it comes from.
 *
 * File format, one setting per line:
 *     # a comment line
 *     listen_port = 8443          # a comment after whitespace
 *     db_path = "/var/lib/midway/agent.db"
 *     banner = "line with a # and a \" quote"
 * Keys are [a-z0-9_.-], at most MW_CONF_KEY_MAX bytes. Whitespace around keys and values is
 * trimmed. A '#' starts a comment at the start of a line or after whitespace; elsewhere it is
 * part of the value ("key=#abc" is "#abc", "key = #abc" is empty): quote values that hold '#'.
 * Quoted values know two escapes, \" and \\. A key given twice, an unknown key, a control
 * byte or a line over MW_CONF_LINE_MAX is an error naming FILE:LINE. CRLF line ends and a
 * leading UTF-8 byte order mark are accepted.
 *
 * Values by type, and the C type of the field at `offset` in the caller's struct:
 *     MW_CONF_STRING    char *   owned by the struct (mw_strdup), freed by mw_conf_free
 *     MW_CONF_INT       int64_t  decimal, optional '-'
 *     MW_CONF_BOOL      bool     true/false, yes/no, on/off, 1/0 (any case)
 *     MW_CONF_SIZE      int64_t  bytes: "512", "512B", "64KiB", "8MiB", "2GiB", "1TiB"
 *     MW_CONF_DURATION  int64_t  milliseconds: "250ms", "30s", "5m", "2h", "7d" (unit needed)
 *
 * Loading is all or nothing: on any error the target struct is left as it was.
 * Order: mw_conf_init (defaults), then mw_conf_load_file, then mw_conf_set for each flag, so
 * flags win over the file and the file over the defaults.
 * Thread safety: one target struct per thread; tables are read-only. */
#ifndef MIDWAY_CONF_H
#define MIDWAY_CONF_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

enum mw_conf_type {
    MW_CONF_STRING,
    MW_CONF_INT,
    MW_CONF_BOOL,
    MW_CONF_SIZE,
    MW_CONF_DURATION,
};

struct mw_conf_entry {
    const char *key; /* [a-z0-9_.-]+, unique within the table */
    enum mw_conf_type type;
    size_t offset; /* offsetof(struct <program conf>, field) */
    /* Inclusive bounds, unless both are 0 (no bounds beyond the type's). INT: the value;
     * SIZE: bytes; DURATION: milliseconds; STRING: length in bytes; BOOL: unused. */
    int64_t min;
    int64_t max;
    const char *def;  /* default in file syntax (unquoted), or NULL to leave the field */
    const char *help; /* one line for --help */
};

/* Sets every field that has a default to it, through the same parser as the file, so a bad
 * default fails at start-up in tests. Fields whose def is NULL are not touched; string fields
 * must start out NULL or owned (a zeroed struct is right).
 * Errors: MW_ENOMEM, MW_EMALFORMED (a default that does not parse: a bug in the table). */
MW_NODISCARD enum mw_err mw_conf_init(const struct mw_conf_entry *table, size_t n, void *target,
                                      struct mw_error *err);

/* Reads path and applies every setting in it (see the format above).
 * Errors: MW_ENOTFOUND (no such file), MW_EAUTH (a regular file that group or others may
 * write: whoever can change it decides the program's settings), MW_EIO (cannot open or read,
 * or not a regular file),
 * MW_ETOOBIG (file over MW_CONF_FILE_MAX, or a line over MW_CONF_LINE_MAX), MW_EMALFORMED
 * ("FILE:LINE: unknown key 'x'", "FILE:LINE: expected an integer for 'port'", ...),
 * MW_ENOMEM. On failure target is unchanged. */
MW_NODISCARD enum mw_err mw_conf_load_file(const struct mw_conf_entry *table, size_t n,
                                           void *target, const char *path, struct mw_error *err);

/* As mw_conf_load_file, from len bytes of text; name (may be NULL) stands for FILE in
 * messages. Errors: as mw_conf_load_file, without the file ones. */
MW_NODISCARD enum mw_err mw_conf_load_string(const struct mw_conf_entry *table, size_t n,
                                             void *target, const char *name, const char *text,
                                             size_t len, struct mw_error *err);

/* Sets one setting from a flag: value is taken literally (the shell already removed quotes)
 * and validated like a file value. Setting a key again is allowed here: the last flag wins.
 * Errors: MW_EMALFORMED (unknown key, bad value, out of bounds), MW_ETOOBIG (value over
 * MW_CONF_LINE_MAX), MW_ENOMEM. On failure target is unchanged. */
MW_NODISCARD enum mw_err mw_conf_set(const struct mw_conf_entry *table, size_t n, void *target,
                                     const char *key, const char *value, struct mw_error *err);

/* The entry for key, or NULL. */
const struct mw_conf_entry *mw_conf_find(const struct mw_conf_entry *table, size_t n,
                                         const char *key);

/* Frees every string field of target and sets it to NULL. NULL-safe for target. */
void mw_conf_free(const struct mw_conf_entry *table, size_t n, void *target);

#endif
