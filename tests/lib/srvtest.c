/* srvtest.c - the real server for integration tests. */
#define _GNU_SOURCE /* close_range */
#include "srvtest.h"

#include "pgcluster.h"
#include "testutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_S 90
#define STOP_TIMEOUT_S 60
#define FLAGS_MAX 24

struct srvtest {
    char *dir;
    char *data;
    char *log;
    char *ca;
    char url[64];
    char owner[1024];
    int port;
    pid_t pid;
    const char *flags[FLAGS_MAX];
    size_t nflags;
    int has_user; /* the flags name a --user */
};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void die(const char *what)
{
    fprintf(stderr, "test environment: %s\n", what);
    exit(2);
}

const char *srvtest_run_as(void)
{
    const char *u = getenv("MIDWAY_TEST_SERVE_USER");
    return u && *u ? u : "nobody";
}

static const char *server_bin(void)
{
    const char *bin = getenv("MIDWAY_SERVER_BIN");
    if (!bin || !*bin)
        die("MIDWAY_SERVER_BIN is not set (run the test through ctest)");
    return bin;
}

static void spawn(struct srvtest *t)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", t->port);
    const char *argv[FLAGS_MAX + 16];
    size_t n = 0;
    argv[n++] = server_bin();
    argv[n++] = "serve";
    argv[n++] = "--data";
    argv[n++] = t->data;
    argv[n++] = "--listen";
    argv[n++] = listen;
    /* Every test connection comes from 127.0.0.1, and tests open thousands of them (a new
     * one per srvtest_request, a thousand at once in it_server, 5,000 in bench_idle): the
     * per-address limits are off unless a test passes its own, which come later and win. */
    argv[n++] = "--max-connections-per-address";
    argv[n++] = "0";
    argv[n++] = "--handshakes-per-second-per-address";
    argv[n++] = "0";
    for (size_t i = 0; i < t->nflags; i++)
        argv[n++] = t->flags[i];
    /* serve refuses to run as root without a user to become; tests name one unless a test
     * chose its own. */
    if (geteuid() == 0 && !t->has_user) {
        argv[n++] = "--user";
        argv[n++] = srvtest_run_as();
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int fd = open(t->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
        }
        close_range(3, ~0U, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    t->pid = pid;
}

static void wait_healthy(struct srvtest *t)
{
    time_t until = time(NULL) + START_TIMEOUT_S;
    while (time(NULL) < until) {
        int st = 0;
        if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
            char *log = tu_read_file(t->log, NULL);
            fprintf(stderr, "server exited at start; its log:\n%s\n", log);
            free(log);
            die("midway-server serve did not start");
        }
        if (access(t->ca, R_OK) == 0) {
            char *body = NULL;
            int status = srvtest_request(t, "GET", "/healthz", NULL, NULL, 0, &body, NULL);
            free(body);
            if (status == 200)
                return;
        }
        sleep_ms(100);
    }
    die("midway-server serve did not become healthy in time");
}

struct srvtest *srvtest_start_with(const char *const *extra_flags)
{
    static int curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = 1;
    }
    struct srvtest *t = calloc(1, sizeof *t);
    if (!t)
        die("calloc");
    t->dir = tu_mkdtemp("srv");
    /* As root, the server's PostgreSQL runs as postgres and must pass through here. */
    if (chmod(t->dir, 0755) != 0)
        die("chmod scratch directory");
    t->data = tu_path(t->dir, "data");
    t->log = tu_path(t->dir, "server.log");
    t->ca = tu_path(t->data, "tls/ca.pem");
    for (size_t i = 0; extra_flags && extra_flags[i] && t->nflags < FLAGS_MAX; i++) {
        t->flags[t->nflags++] = extra_flags[i];
        if (strcmp(extra_flags[i], "--user") == 0 || strncmp(extra_flags[i], "--user=", 7) == 0)
            t->has_user = 1;
    }
    struct mw_error err = {0};
    if (mw_pgcluster_free_port(&t->port, &err) != MW_OK)
        die(err.msg);
    snprintf(t->url, sizeof t->url, "https://127.0.0.1:%d", t->port);
    /* The local cluster wants passwords; they are in DATA/pgpass (server/localdb.h). */
    snprintf(t->owner, sizeof t->owner,
             "host=%s/run port=5432 dbname=midway user=midway_owner passfile=%s/pgpass", t->data,
             t->data);
    spawn(t);
    wait_healthy(t);
    return t;
}

struct srvtest *srvtest_start(void)
{
    return srvtest_start_with(NULL);
}

const char *srvtest_url(const struct srvtest *t) { return t->url; }
const char *srvtest_ca(const struct srvtest *t) { return t->ca; }
const char *srvtest_data_dir(const struct srvtest *t) { return t->data; }
int srvtest_port(const struct srvtest *t) { return t->port; }
int srvtest_pid(const struct srvtest *t) { return (int)t->pid; }
const char *srvtest_log(const struct srvtest *t) { return t->log; }
const char *srvtest_owner_conninfo(const struct srvtest *t) { return t->owner; }

/* Reads all of fd into a malloc'd string. */
static char *slurp(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        die("malloc");
    for (;;) {
        if (cap - len < 1024) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                die("realloc");
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

int srvtest_admin(struct srvtest *t, char **stdout_out, const char *stdin_text,
                  const char *const *args)
{
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        die("pipe");
    const char *argv[40];
    size_t n = 0;
    argv[n++] = server_bin();
    for (size_t i = 0; args && args[i] && n < 36; i++)
        argv[n++] = args[i];
    argv[n++] = "--data";
    argv[n++] = t->data;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        int logfd = open(t->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (logfd >= 0)
            dup2(logfd, STDERR_FILENO);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        close_range(3, ~0U, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (stdin_text) {
        size_t len = strlen(stdin_text);
        ssize_t w = write(in[1], stdin_text, len);
        (void)w;
    }
    close(in[1]);
    char *text = slurp(out[0]);
    close(out[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (stdout_out)
        *stdout_out = text;
    else
        free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The string value of "key" in a flat JSON object printed by an admin command. */
static void json_field(const char *json, const char *key, char *out, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p)
        die("admin output lacks an expected key");
    p = strchr(p + strlen(pat), ':');
    while (p && (*p == ':' || *p == ' '))
        p++;
    if (!p || *p != '"')
        die("admin output: expected a string");
    p++;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < size)
        out[n++] = *p++;
    out[n] = '\0';
}

void srvtest_add_device(struct srvtest *t, const char *name, const char *kind, char *device_id,
                        char *token)
{
    const char *args[] = {"device", "add", "--name", name, "--kind", kind, "--json", NULL};
    char *out = NULL;
    int st = srvtest_admin(t, &out, NULL, args);
    if (st != 0) {
        fprintf(stderr, "device add exited %d: %s\n", st, out);
        die("device add failed");
    }
    json_field(out, "device_id", device_id, 65);
    json_field(out, "token", token, 128);
    free(out);
}

char *srvtest_query(struct srvtest *t, const char *sql)
{
    PGconn *conn = PQconnectdb(t->owner);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "srvtest_query: %s", PQerrorMessage(conn));
        die("connect to the server's database");
    }
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "srvtest_query: %s: %s", sql, PQerrorMessage(conn));
        die("query failed");
    }
    char *v = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        v = strdup(PQgetvalue(res, 0, 0));
        if (!v)
            die("strdup");
    }
    PQclear(res);
    PQfinish(conn);
    return v;
}

long long srvtest_query_ll(struct srvtest *t, const char *sql)
{
    char *v = srvtest_query(t, sql);
    long long n = v ? strtoll(v, NULL, 10) : 0;
    free(v);
    return n;
}

struct sink {
    char *data;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t add = size * n;
    char *nb = realloc(s->data, s->len + add + 1);
    if (!nb)
        return 0;
    s->data = nb;
    memcpy(s->data + s->len, p, add);
    s->len += add;
    s->data[s->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    char *cid = arg;
    size_t len = size * n;
    const char *name = "x-correlation-id:";
    if (cid && len > strlen(name) && strncasecmp(p, name, strlen(name)) == 0) {
        const char *v = p + strlen(name);
        while (*v == ' ')
            v++;
        size_t k = 0;
        while (v < p + len && *v != '\r' && *v != '\n' && k < 64)
            cid[k++] = *v++;
        cid[k] = '\0';
    }
    return len;
}

int srvtest_request(const struct srvtest *t, const char *method, const char *path,
                    const char *const *headers, const void *body, size_t len, char **body_out,
                    char *cid_out)
{
    CURL *c = curl_easy_init();
    if (!c)
        die("curl_easy_init");
    char url[512];
    snprintf(url, sizeof url, "%s%s", t->url, path);
    struct sink s = {NULL, 0};
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    if (cid_out)
        cid_out[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, t->ca);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, cid_out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    } else {
        free(s.data);
        s.data = strdup(curl_easy_strerror(rc));
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (body_out)
        *body_out = s.data;
    else
        free(s.data);
    return (int)status;
}

int srvtest_kill(struct srvtest *t, int sig)
{
    if (t->pid <= 0)
        return 0;
    kill(t->pid, sig);
    time_t until = time(NULL) + STOP_TIMEOUT_S;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(t->pid, &st, WNOHANG);
        if (r == t->pid)
            break;
        if (time(NULL) > until) {
            fprintf(stderr, "srvtest: server did not exit on signal %d; killing it\n", sig);
            kill(t->pid, SIGKILL);
            waitpid(t->pid, &st, 0);
            break;
        }
        sleep_ms(50);
    }
    t->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void srvtest_restart(struct srvtest *t)
{
    if (t->pid > 0)
        srvtest_kill(t, SIGTERM);
    spawn(t);
    wait_healthy(t);
}

int srvtest_stop(struct srvtest *t)
{
    if (!t)
        return 0;
    int st = srvtest_kill(t, SIGTERM);
    /* A killed server leaves its PostgreSQL running. */
    char *pg = tu_path(t->data, "pg");
    char *sock = tu_path(t->data, "run");
    struct mw_pgcluster_config cfg = {.data_dir = pg, .socket_dir = sock, .port = 5432};
    if (mw_pgcluster_running(&cfg)) {
        struct mw_error err = {0};
        if (mw_pgcluster_stop(&cfg, "immediate", &err) != MW_OK)
            fprintf(stderr, "srvtest: stop PostgreSQL: %s\n", err.msg);
    }
    free(pg);
    free(sock);
    if (tu_keep())
        fprintf(stderr, "srvtest: kept %s\n", t->dir);
    tu_rmrf(t->dir);
    free(t->dir);
    free(t->data);
    free(t->log);
    free(t->ca);
    free(t);
    return st;
}
