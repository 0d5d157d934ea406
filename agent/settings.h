/* settings.h - where and as whom the device syncs (the settings row of the data file), and the
 * device token, which is read from its own file at every sync and never stored in the data
 * file or logged.
 * Thread safety: as struct mw_agent, one per thread; mw_settings_read_token is any thread. */
#ifndef MIDWAY_AGENT_SETTINGS_H
#define MIDWAY_AGENT_SETTINGS_H
#include "client.h"
#include "midway/agent.h"
#include "midway/err.h"
#include "store.h"

#include <stddef.h>

/* Reads the settings row into *out (empty strings for unset values).
 * Errors: MW_EIO, MW_EBUSY, MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_settings_load(struct mw_store *s, struct mw_agent_settings *out,
                                          struct mw_error *err);

/* Reads the bearer token from path into out (size bytes; at least MW_CLIENT_TOKEN_MAX + 1),
 * without the trailing newline. Refuses a file that everyone may read: a token there is as
 * good as published.
 * Errors: MW_ENOTFOUND (no such file), MW_EAUTH (readable by everyone, empty, not printable
 * ASCII, longer than MW_CLIENT_TOKEN_MAX), MW_EIO (not a regular file, cannot read). On
 * failure out holds no part of the token. */
MW_NODISCARD enum mw_err mw_settings_read_token(const char *path, char *out, size_t size,
                                                struct mw_error *err);

/* Overwrites a buffer that held a token (not optimised away). */
void mw_settings_wipe(void *p, size_t n);

#endif
