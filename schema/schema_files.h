/* schema_files.h - the schema files compiled into the binaries, in the order they apply.
 * The .sql files under schema/postgres/ and schema/agent/ are the source of truth; the build
 * turns each directory into one of the arrays below (cmake/embed_sql.cmake).
 * Thread safety: read-only data, any thread. */
#ifndef MIDWAY_SCHEMA_FILES_H
#define MIDWAY_SCHEMA_FILES_H
#include <stddef.h>

struct mw_schema_file {
    const char *name; /* file name, e.g. "001_core.sql"; the number is its version */
    const char *sql;  /* contents, NUL-terminated */
    size_t len;       /* bytes, without the NUL */
};

/* PostgreSQL migrations (schema/postgres/NNN_*.sql), in version order. */
extern const struct mw_schema_file mw_schema_pg[];
extern const size_t mw_schema_pg_count;

/* Agent SQLite schema steps (schema/agent/NNN_*.sql); step N sets PRAGMA user_version = N. */
extern const struct mw_schema_file mw_schema_agent[];
extern const size_t mw_schema_agent_count;

#endif
