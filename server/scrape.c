/* scrape.c - plain-HTTP /metrics on its own listener (see scrape.h). */
#define _GNU_SOURCE /* accept4 */
#include "scrape.h"

#include "http.h"
#include "mem.h"
#include "midway/log.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A scrape answer is the exposition: tens of KiB. */
#define OUT_MAX    (4u * 1024u * 1024u)
#define READ_CHUNK 4096

struct sconn {
    struct mw_loop_watch watch;
    struct mw_scrape *sc;
    struct sconn *prev, *next;
    struct mw_http_parser parser;
    struct mw_buf out;
    size_t out_off;
    bool writing;
    int64_t deadline_ms;
};

struct mw_scrape {
    struct mw_loop *loop;
    struct mw_loop_watch listen_watch;
    int listen_fd;
    int64_t timeout_ms;
    mw_scrape_render_fn render;
    void *render_arg;
    struct sconn *conns;
    int nconns;
};

static void sconn_close(struct sconn *c)
{
    struct mw_scrape *sc = c->sc;
    mw_loop_del(sc->loop, &c->watch);
    close(c->watch.fd);
    mw_http_parser_cleanup(&c->parser);
    mw_buf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        sc->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sc->nconns--;
    mw_free(c);
}

/* The request is whole (or refused): build the one answer. */
static void answer(struct sconn *c, enum mw_http_result r)
{
    struct mw_http_request *req = &c->parser.req;
    enum mw_err rc;
    if (r == MW_HTTP_ERROR) {
        rc = mw_http_error_write(&c->out, c->parser.status,
                                 c->parser.code ? c->parser.code : "malformed", c->parser.err.msg,
                                 NULL, false, NULL);
    } else if (strcmp(req->path, "/metrics") != 0) {
        rc = mw_http_error_write(&c->out, 404, "not_found", "this port serves /metrics only", NULL,
                                 false, NULL);
    } else if (req->method != MW_HTTP_GET && req->method != MW_HTTP_HEAD) {
        rc = mw_http_error_write(&c->out, 405, "method_not_allowed", "use GET", NULL, false,
                                 "Allow: GET, HEAD\r\n");
    } else {
        struct mw_buf body;
        mw_buf_init(&body, OUT_MAX);
        rc = c->sc->render(c->sc->render_arg, &body);
        if (rc == MW_OK)
            rc = mw_http_response_write(&c->out, 200, "text/plain; version=0.0.4; charset=utf-8",
                                        NULL, false, NULL,
                                        req->method == MW_HTTP_HEAD ? NULL : body.data, body.len);
        else
            rc = mw_http_error_write(&c->out, 500, "internal", "could not render the metrics", NULL,
                                     false, NULL);
        mw_buf_free(&body);
    }
    if (rc != MW_OK) {
        sconn_close(c);
        return;
    }
    c->writing = true;
    struct mw_error err = {0};
    if (mw_loop_set(c->sc->loop, &c->watch, MW_LOOP_WRITE, &err) != MW_OK)
        sconn_close(c);
}

static void on_sconn_event(void *arg, uint32_t events)
{
    struct sconn *c = arg;
    if (events & MW_LOOP_ERROR) {
        sconn_close(c);
        return;
    }
    if (!c->writing) {
        uint8_t chunk[READ_CHUNK];
        ssize_t n = recv(c->watch.fd, chunk, sizeof chunk, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            sconn_close(c);
            return;
        }
        size_t used = 0;
        enum mw_http_result r = mw_http_parser_feed(&c->parser, chunk, (size_t)n, &used);
        if (r == MW_HTTP_NEED_MORE)
            return;
        answer(c, r); /* bytes after the request are ignored: the connection closes */
        return;
    }
    while (c->out_off < c->out.len) {
        ssize_t n =
            send(c->watch.fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0)
            break;
        c->out_off += (size_t)n;
    }
    sconn_close(c);
}

static void on_listen_event(void *arg, uint32_t events)
{
    (void)events;
    struct mw_scrape *sc = arg;
    for (int i = 0; i < MW_SCRAPE_CONNECTIONS_MAX; i++) {
        int fd = accept4(sc->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct sconn *c = sc->nconns < MW_SCRAPE_CONNECTIONS_MAX ? mw_calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->sc = sc;
        c->watch = (struct mw_loop_watch){.fd = fd, .fn = on_sconn_event, .arg = c};
        /* A scrape has no body: anything over one byte is answered 413 unread. */
        mw_http_parser_init(&c->parser, 0, 1);
        mw_buf_init(&c->out, OUT_MAX + 4096);
        c->deadline_ms = mw_loop_now_ms() + sc->timeout_ms;
        struct mw_error err = {0};
        if (mw_loop_add(sc->loop, &c->watch, MW_LOOP_READ, &err) != MW_OK) {
            mw_http_parser_cleanup(&c->parser);
            mw_free(c);
            close(fd);
            continue;
        }
        c->next = sc->conns;
        if (sc->conns)
            sc->conns->prev = c;
        sc->conns = c;
        sc->nconns++;
    }
}

enum mw_err mw_scrape_new(struct mw_loop *loop, int listen_fd, int64_t timeout_ms,
                          mw_scrape_render_fn render, void *render_arg, struct mw_scrape **out,
                          struct mw_error *err)
{
    *out = NULL;
    struct mw_scrape *sc = mw_calloc(1, sizeof *sc);
    if (!sc) {
        close(listen_fd);
        return mw_fail(err, MW_ENOMEM, "metrics listener");
    }
    sc->loop = loop;
    sc->listen_fd = listen_fd;
    sc->timeout_ms = timeout_ms;
    sc->render = render;
    sc->render_arg = render_arg;
    sc->listen_watch = (struct mw_loop_watch){.fd = listen_fd, .fn = on_listen_event, .arg = sc};
    enum mw_err rc = mw_loop_add(loop, &sc->listen_watch, MW_LOOP_READ, err);
    if (rc != MW_OK) {
        close(listen_fd);
        mw_free(sc);
        return rc;
    }
    *out = sc;
    return MW_OK;
}

void mw_scrape_tick(struct mw_scrape *sc, int64_t now_ms)
{
    if (!sc)
        return;
    struct sconn *next = NULL;
    for (struct sconn *c = sc->conns; c; c = next) {
        next = c->next;
        if (now_ms >= c->deadline_ms)
            sconn_close(c);
    }
}

void mw_scrape_free(struct mw_scrape *sc)
{
    if (!sc)
        return;
    while (sc->conns)
        sconn_close(sc->conns);
    mw_loop_del(sc->loop, &sc->listen_watch);
    close(sc->listen_fd);
    mw_free(sc);
}
