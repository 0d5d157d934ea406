/* faultproxy.c - a loopback TCP proxy that can lose an answer after the request (faultproxy.h). */
#define _GNU_SOURCE /* accept4 */
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNS_MAX 64

struct conn {
    struct faultproxy *p;
    int client;
    int server;
    pthread_t thread;
    int used; /* guarded by p->mu */
    int done; /* guarded by p->mu: the pump ended, the thread can be joined */
};

struct faultproxy {
    int listen_fd;
    int port;
    int target_port;
    int stop_pipe[2];
    pthread_t acceptor;
    pthread_mutex_t mu;
    size_t cut_after; /* guarded by mu; 0 = pass */
    int cuts;         /* guarded by mu */
    struct conn conns[CONNS_MAX];
};

static void die(const char *what)
{
    fprintf(stderr, "faultproxy: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int connect_target(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(s);
        return -1;
    }
    return s;
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *pump(void *arg)
{
    struct conn *c = arg;
    struct faultproxy *p = c->p;
    size_t from_client = 0;
    char buf[16384];
    for (;;) {
        struct pollfd fds[3] = {
            {c->client, POLLIN, 0}, {c->server, POLLIN, 0}, {p->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[2].revents)
            break;
        if (fds[0].revents) {
            ssize_t n = recv(c->client, buf, sizeof buf, 0);
            if (n <= 0 || send_all(c->server, buf, (size_t)n) != 0)
                break;
            from_client += (size_t)n;
        }
        if (fds[1].revents) {
            ssize_t n = recv(c->server, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            int cut = 0;
            pthread_mutex_lock(&p->mu);
            if (p->cut_after > 0 && from_client > p->cut_after) {
                p->cut_after = 0;
                p->cuts++;
                cut = 1;
            }
            pthread_mutex_unlock(&p->mu);
            if (cut)
                break; /* the answer the server sent is dropped on the floor */
            if (send_all(c->client, buf, (size_t)n) != 0)
                break;
        }
    }
    /* RST rather than FIN towards the client, like a connection that really broke. */
    struct linger lg = {1, 0};
    setsockopt(c->client, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->client);
    close(c->server);
    pthread_mutex_lock(&p->mu);
    c->done = 1;
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *acceptor(void *arg)
{
    struct faultproxy *p = arg;
    for (;;) {
        struct pollfd fds[2] = {{p->listen_fd, POLLIN, 0}, {p->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (fds[1].revents)
            return NULL;
        int cl = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (cl < 0)
            continue;
        int sv = connect_target(p->target_port);
        if (sv < 0) {
            close(cl);
            continue;
        }
        struct conn *c = NULL;
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < CONNS_MAX; i++) {
            if (p->conns[i].used && p->conns[i].done) {
                pthread_join(p->conns[i].thread, NULL);
                p->conns[i].used = 0;
                p->conns[i].done = 0;
            }
        }
        for (int i = 0; i < CONNS_MAX && !c; i++) {
            if (!p->conns[i].used) {
                c = &p->conns[i];
                c->used = 1;
            }
        }
        pthread_mutex_unlock(&p->mu);
        if (!c) {
            close(cl);
            close(sv);
            continue;
        }
        c->p = p;
        c->client = cl;
        c->server = sv;
        if (pthread_create(&c->thread, NULL, pump, c) != 0) {
            close(cl);
            close(sv);
            c->used = 0;
        }
    }
}

struct faultproxy *faultproxy_start(int target_port)
{
    struct faultproxy *p = calloc(1, sizeof *p);
    if (!p)
        die("calloc");
    p->target_port = target_port;
    pthread_mutex_init(&p->mu, NULL);
    if (pipe(p->stop_pipe) != 0)
        die("pipe");
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listen_fd < 0)
        die("socket");
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listen_fd, 16) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&sa, &len) != 0)
        die("listen");
    p->port = ntohs(sa.sin_port);
    if (pthread_create(&p->acceptor, NULL, acceptor, p) != 0)
        die("thread");
    return p;
}

int faultproxy_port(const struct faultproxy *p)
{
    return p->port;
}

void faultproxy_cut_after_request(struct faultproxy *p, size_t client_bytes)
{
    pthread_mutex_lock(&p->mu);
    p->cut_after = client_bytes ? client_bytes : 1;
    pthread_mutex_unlock(&p->mu);
}

void faultproxy_pass(struct faultproxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->cut_after = 0;
    pthread_mutex_unlock(&p->mu);
}

int faultproxy_cuts(struct faultproxy *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->cuts;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void faultproxy_stop(struct faultproxy *p)
{
    if (!p)
        return;
    if (write(p->stop_pipe[1], "x", 1) != 1)
        die("stop");
    pthread_join(p->acceptor, NULL);
    for (int i = 0; i < CONNS_MAX; i++) {
        if (p->conns[i].used)
            pthread_join(p->conns[i].thread, NULL);
    }
    close(p->listen_fd);
    close(p->stop_pipe[0]);
    close(p->stop_pipe[1]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
