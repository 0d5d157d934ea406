/* testutil.h - small helpers every test program shares: scratch directories and files.
 * Failures here are the test environment's, so they print and exit(2) rather than return.
 * Thread safety: main thread only. */
#ifndef MIDWAY_TESTUTIL_H
#define MIDWAY_TESTUTIL_H
#include <stddef.h>

/* Makes a fresh directory under $TMPDIR (or /tmp) named after tag; caller frees the path
 * with free() after tu_rmrf(). */
char *tu_mkdtemp(const char *tag);

/* Removes path and everything below it; a missing path is fine. */
void tu_rmrf(const char *path);

/* Joins dir and name with "/" into a malloc'd string. */
char *tu_path(const char *dir, const char *name);

/* Writes len bytes to path (created 0600, truncated). */
void tu_write_file(const char *path, const void *data, size_t len);

/* Reads a whole file into a NUL-terminated malloc'd buffer; *len_out (may be NULL) gets the
 * size. Exits on failure. */
char *tu_read_file(const char *path, size_t *len_out);

/* Whether the environment asks to keep scratch data for inspection (MIDWAY_TEST_KEEP=1). */
int tu_keep(void);

#endif
