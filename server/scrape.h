/* scrape.h - the metrics listener (metrics-listen): plain HTTP on an address of its own, for
 * Prometheus, so /metrics can stay off the public port.
 *
 * Plain HTTP and no token, on purpose: a scraper on the same host or a private network is the
 * only intended client, and bind it there (127.0.0.1:9464 by default in the docs). It answers
 * GET and HEAD /metrics (200), other paths 404, other methods 405, one request per connection
 * (Connection: close). Bounded like the public port but smaller: at most
 * MW_SCRAPE_CONNECTIONS_MAX connections at once (more are closed at accept), a request head
 * of at most MW_HTTP_HEADER_MAX bytes and no body, and timeout_ms for the whole exchange.
 *
 * Thread safety: main (I/O) thread only; everything runs in the server's loop. */
#ifndef MIDWAY_SERVER_SCRAPE_H
#define MIDWAY_SERVER_SCRAPE_H
#include "buf.h"
#include "loop.h"
#include "midway/err.h"

#include <stdint.h>

/* Scrapers at once. Prometheus keeps one; a few more allow a second scraper and curl. */
#define MW_SCRAPE_CONNECTIONS_MAX 16

/* Appends the whole exposition to out (the server's gauges and counters). */
typedef enum mw_err (*mw_scrape_render_fn)(void *arg, struct mw_buf *out);

struct mw_scrape;

/* Serves on listen_fd (bound, listening, non-blocking; the scrape owns it from now on, also on
 * failure) in loop. Errors: MW_ENOMEM, MW_EIO (epoll). */
MW_NODISCARD enum mw_err mw_scrape_new(struct mw_loop *loop, int listen_fd, int64_t timeout_ms,
                                       mw_scrape_render_fn render, void *render_arg,
                                       struct mw_scrape **out, struct mw_error *err);

/* Closes connections past their time. Call it from the loop's tick. */
void mw_scrape_tick(struct mw_scrape *sc, int64_t now_ms);

/* Closes every connection and the listening socket. NULL-safe. */
void mw_scrape_free(struct mw_scrape *sc);

#endif
