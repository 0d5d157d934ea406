/* secretfile.h - a setting that holds a secret (a connection string with a password) read
 * from a file of its own, so it never has to be on a command line, where every user of the
 * machine can read it in /proc/PID/cmdline and the shell keeps it in its history.
 * Thread safety: any thread. */
#ifndef MIDWAY_SERVER_SECRETFILE_H
#define MIDWAY_SERVER_SECRETFILE_H
#include "midway/err.h"

#include <stddef.h>

/* A conninfo is at most this long (the db setting's bound). */
#define MW_SECRETFILE_MAX 4096

/* Reads path's one line of text into a new string (*out, mw_free; wipe it first), without
 * the line end and surrounding blanks. Refuses a file that is not regular, that others may
 * read, or that group or others may write: one that anyone could read or replace is not a
 * place for a password. Errors: MW_ENOTFOUND, MW_EAUTH (the mode; the message gives the
 * chmod), MW_EIO, MW_ETOOBIG (over MW_SECRETFILE_MAX), MW_EMALFORMED (empty, more than one
 * line, control bytes), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_secretfile_read(const char *path, char **out, struct mw_error *err);

/* Overwrites and frees a string read by mw_secretfile_read. NULL-safe. */
void mw_secretfile_free(char *s);

#endif
