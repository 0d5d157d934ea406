/* pgcluster.c - initdb / pg_ctl driven from C, without a shell and without PATH surprises.
 *
 * Every program runs through run_program(): fork, drop to the postgres OS user when we are
 * root (PostgreSQL refuses to run as root), exec with an argv array. Output is captured into
 * a bounded tail so a failure message can say what PostgreSQL said. */
/* pipe2() and setgroups() are Linux/BSD extensions, not POSIX. */
#define _GNU_SOURCE
#include "pgcluster.h"

#include "mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROGRAM_PATH_MAX 4096
#define OUTPUT_TAIL_MAX 1024 /* what a failure message quotes of the program's output */
#define ARGV_MAX 32

/* The OS user PostgreSQL programs run as when we are root. */
#define PG_OS_USER "postgres"

struct run_as {
    bool drop;
    uid_t uid;
    gid_t gid;
};

static enum mw_err resolve_run_as(struct run_as *ra, struct mw_error *err)
{
    ra->uid = 0;
    ra->gid = 0;
    ra->drop = geteuid() == 0;
    if (!ra->drop)
        return MW_OK;
    struct passwd *pw = getpwnam(PG_OS_USER);
    if (!pw)
        return mw_fail(err, MW_ENOTFOUND,
                       "running as root, but there is no '" PG_OS_USER "' user to run "
                       "PostgreSQL as (apt-get install postgresql-15 creates it)");
    ra->uid = pw->pw_uid;
    ra->gid = pw->pw_gid;
    return MW_OK;
}

static bool is_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* "15" > "9.6": compare the version directory names numerically. */
static double pg_dir_version(const char *path)
{
    const char *v = strstr(path, "/postgresql/");
    return v ? strtod(v + strlen("/postgresql/"), NULL) : 0.0;
}

static enum mw_err find_program(const char *name, char *out, size_t size, struct mw_error *err)
{
    const char *path = getenv("PATH");
    if (path) {
        const char *p = path;
        while (*p) {
            const char *colon = strchr(p, ':');
            size_t n = colon ? (size_t)(colon - p) : strlen(p);
            if (n > 0 && n + strlen(name) + 2 <= size) {
                int w = snprintf(out, size, "%.*s/%s", (int)n, p, name);
                if (w > 0 && (size_t)w < size && is_executable(out))
                    return MW_OK;
            }
            if (!colon)
                break;
            p = colon + 1;
        }
    }
    char pattern[256];
    snprintf(pattern, sizeof pattern, "/usr/lib/postgresql/*/bin/%s", name);
    glob_t g;
    memset(&g, 0, sizeof g);
    double best = -1.0;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            double v = pg_dir_version(g.gl_pathv[i]);
            if (v > best && is_executable(g.gl_pathv[i]) && strlen(g.gl_pathv[i]) < size) {
                best = v;
                snprintf(out, size, "%s", g.gl_pathv[i]);
            }
        }
    }
    globfree(&g);
    if (best >= 0.0)
        return MW_OK;
    return mw_fail(err, MW_ENOTFOUND,
                   "PostgreSQL program '%s' not found on PATH or in /usr/lib/postgresql/*/bin "
                   "(apt-get install postgresql-15)",
                   name);
}

/* Keeps the last OUTPUT_TAIL_MAX bytes read, as a ring flattened on demand. */
struct tail {
    char buf[OUTPUT_TAIL_MAX];
    size_t len;
};

static void tail_add(struct tail *t, const char *p, size_t n)
{
    /* Only the last sizeof buf bytes of p can survive. */
    size_t skip = n > sizeof t->buf ? n - sizeof t->buf : 0;
    p += skip;
    n -= skip;
    if (t->len + n > sizeof t->buf) {
        size_t drop = t->len + n - sizeof t->buf;
        memmove(t->buf, t->buf + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

/* The tail as one line for an error message: newlines become " | ". */
static void tail_flatten(const struct tail *t, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < t->len && o + 4 < size; i++) {
        char c = t->buf[i];
        if (c == '\n') {
            if (i + 1 < t->len) {
                memcpy(out + o, " | ", 3);
                o += 3;
            }
        } else if ((unsigned char)c >= 0x20 && c != 0x7f) {
            out[o++] = c;
        }
    }
    out[o] = '\0';
}

/* Runs argv[0] (a full path) with stdin from in_fd (-1: /dev/null). out_file NULL: output
 * captured into *tail (may be NULL to inherit instead). Returns MW_OK when the program ran;
 * its status is in *status_out. */
static enum mw_err run_program(char *const argv[], int in_fd, const char *out_file,
                               struct tail *tail, int *status_out, struct mw_error *err)
{
    struct run_as ra;
    enum mw_err rc = resolve_run_as(&ra, err);
    if (rc != MW_OK)
        return rc;

    int pipefd[2] = {-1, -1};
    if (!out_file && tail && pipe2(pipefd, O_CLOEXEC) != 0)
        return mw_fail(err, MW_EIO, "pipe: %s", strerror(errno));

    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        if (pipefd[0] >= 0) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return mw_fail(err, MW_EIO, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        int out = -1;
        if (out_file)
            out = open(out_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        else if (tail)
            out = pipefd[1];
        if (out >= 0) {
            dup2(out, STDOUT_FILENO);
            dup2(out, STDERR_FILENO);
        }
        int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in >= 0)
            dup2(in, STDIN_FILENO);
        /* PostgreSQL counts inherited descriptors against its own limit and refuses to start
         * when a busy parent (a server with thousands of clients) leaves too few. */
        close_range(3, ~0U, 0);
        if (ra.drop) {
            if (setgroups(0, NULL) != 0 || setgid(ra.gid) != 0 || setuid(ra.uid) != 0)
                _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }

    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (pipefd[0] >= 0) {
        char chunk[512];
        for (;;) {
            ssize_t r = read(pipefd[0], chunk, sizeof chunk);
            if (r > 0) {
                tail_add(tail, chunk, (size_t)r);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        close(pipefd[0]);
    }
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0) {
        if (errno != EINTR)
            return mw_fail(err, MW_EIO, "waitpid: %s", strerror(errno));
    }
    if (WIFEXITED(wstatus))
        *status_out = WEXITSTATUS(wstatus);
    else if (WIFSIGNALED(wstatus))
        *status_out = 128 + WTERMSIG(wstatus);
    else
        *status_out = 255;
    if (*status_out == 126 && ra.drop)
        return mw_fail(err, MW_EIO, "could not switch to the '" PG_OS_USER "' user");
    if (*status_out == 127)
        return mw_fail(err, MW_EIO, "could not execute %s", argv[0]);
    return MW_OK;
}

/* Creates dir (and missing parents) with mode; when root, hands it to the postgres user. */
static enum mw_err make_owned_dir(const char *dir, mode_t mode, struct mw_error *err)
{
    char path[PROGRAM_PATH_MAX];
    if (strlen(dir) >= sizeof path)
        return mw_fail(err, MW_EINVAL, "path too long: %s", dir);
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return mw_fail(err, MW_EIO, "mkdir %s: %s", path, strerror(errno));
        *p = '/';
    }
    bool existed = false;
    if (mkdir(path, mode) != 0) {
        if (errno != EEXIST)
            return mw_fail(err, MW_EIO, "mkdir %s: %s", path, strerror(errno));
        existed = true;
    }
    struct run_as ra;
    enum mw_err rc = resolve_run_as(&ra, err);
    if (rc != MW_OK)
        return rc;
    /* A directory shared with one group (mw_pgcluster_share_socket) keeps that group and its
     * group search bits; nothing else survives. */
    struct stat st;
    gid_t gid = ra.gid;
    mode_t keep = 0;
    if (existed && stat(path, &st) == 0 && st.st_uid == (ra.drop ? ra.uid : geteuid())) {
        keep = st.st_mode & 0050;
        if (keep)
            gid = st.st_gid;
    }
    if (ra.drop && chown(path, ra.uid, gid) != 0)
        return mw_fail(err, MW_EIO, "chown %s to " PG_OS_USER ": %s", path, strerror(errno));
    if (chmod(path, mode | keep) != 0)
        return mw_fail(err, MW_EIO, "chmod %s: %s", path, strerror(errno));
    return MW_OK;
}

static const char *superuser_of(const struct mw_pgcluster_config *cfg)
{
    return cfg->superuser ? cfg->superuser : "postgres";
}

static enum mw_err check_config(const struct mw_pgcluster_config *cfg, struct mw_error *err)
{
    if (!cfg || !cfg->data_dir || !cfg->socket_dir || cfg->port < 1 || cfg->port > 65535)
        return mw_fail(err, MW_EINVAL, "cluster config needs data_dir, socket_dir and a port");
    /* The socket directory goes into postgres' -o option string, which pg_ctl hands to a
     * shell: a quote in it would break (or inject into) that command line. */
    if (strchr(cfg->socket_dir, '\'') || strchr(cfg->socket_dir, '\\'))
        return mw_fail(err, MW_EINVAL, "socket directory may not contain quotes: %s",
                       cfg->socket_dir);
    return MW_OK;
}

enum mw_err mw_pgcluster_init(const struct mw_pgcluster_config *cfg, struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    char version_file[PROGRAM_PATH_MAX];
    snprintf(version_file, sizeof version_file, "%s/PG_VERSION", cfg->data_dir);
    if (access(version_file, F_OK) == 0)
        return MW_OK;

    char initdb[PROGRAM_PATH_MAX];
    rc = find_program("initdb", initdb, sizeof initdb, err);
    if (rc != MW_OK)
        return rc;
    rc = make_owned_dir(cfg->data_dir, 0700, err);
    if (rc != MW_OK)
        return rc;
    rc = make_owned_dir(cfg->socket_dir, 0700, err);
    if (rc != MW_OK)
        return rc;

    char user_opt[128];
    snprintf(user_opt, sizeof user_opt, "--username=%s", superuser_of(cfg));
    char pw_opt[PROGRAM_PATH_MAX + 16] = "";
    /* With a password file, every connection proves a password: a socket directory's mode
     * alone would let in any process of the cluster's OS user, or root's, as any role.
     * Without one (test clusters), local and loopback connections are trusted. TCP is
     * loopback-only and only for test clusters. */
    const bool pw = cfg->superuser_password_file != NULL;
    if (pw && snprintf(pw_opt, sizeof pw_opt, "--pwfile=%s", cfg->superuser_password_file) >=
                  (int)sizeof pw_opt)
        return mw_fail(err, MW_EINVAL, "password file path too long");
    const char *host_auth = !cfg->listen_loopback ? "--auth-host=reject"
                            : pw                  ? "--auth-host=scram-sha-256"
                                                  : "--auth-host=trust";
    char *const argv[] = {initdb,
                          "--pgdata",
                          (char *)cfg->data_dir,
                          user_opt,
                          "--encoding=UTF8",
                          "--locale=C.UTF-8",
                          pw ? "--auth-local=scram-sha-256" : "--auth-local=trust",
                          (char *)host_auth,
                          pw ? pw_opt : NULL,
                          NULL};
    struct tail out = {.len = 0};
    int status = 0;
    rc = run_program(argv, -1, NULL, &out, &status, err);
    if (rc != MW_OK)
        return rc;
    if (status != 0) {
        char msg[OUTPUT_TAIL_MAX + 1];
        tail_flatten(&out, msg, sizeof msg);
        return mw_fail(err, MW_EIO, "initdb %s exited with %d: %s", cfg->data_dir, status,
                       msg);
    }
    return MW_OK;
}

static void default_log_file(const struct mw_pgcluster_config *cfg, char *out, size_t size)
{
    if (cfg->log_file)
        snprintf(out, size, "%s", cfg->log_file);
    else
        snprintf(out, size, "%s.log", cfg->data_dir);
}

/* The last lines of the server log, for a failure message. */
static void log_tail(const char *log_file, char *out, size_t size)
{
    out[0] = '\0';
    int fd = open(log_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct tail t = {.len = 0};
    off_t end = lseek(fd, 0, SEEK_END);
    if (end > (off_t)OUTPUT_TAIL_MAX)
        lseek(fd, end - (off_t)OUTPUT_TAIL_MAX, SEEK_SET);
    else
        lseek(fd, 0, SEEK_SET);
    char chunk[OUTPUT_TAIL_MAX];
    ssize_t r = read(fd, chunk, sizeof chunk);
    if (r > 0)
        tail_add(&t, chunk, (size_t)r);
    close(fd);
    tail_flatten(&t, out, size);
}

enum mw_err mw_pgcluster_start(const struct mw_pgcluster_config *cfg, struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    if (mw_pgcluster_running(cfg))
        return mw_fail(err, MW_EBUSY, "a PostgreSQL server already runs on %s", cfg->data_dir);
    char pg_ctl[PROGRAM_PATH_MAX];
    rc = find_program("pg_ctl", pg_ctl, sizeof pg_ctl, err);
    if (rc != MW_OK)
        return rc;
    rc = make_owned_dir(cfg->socket_dir, 0700, err);
    if (rc != MW_OK)
        return rc;

    char log_file[PROGRAM_PATH_MAX];
    default_log_file(cfg, log_file, sizeof log_file);
    /* pg_ctl opens the log as the postgres user: create it first and hand it over. */
    int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "open %s: %s", log_file, strerror(errno));
    close(fd);
    struct run_as ra;
    rc = resolve_run_as(&ra, err);
    if (rc != MW_OK)
        return rc;
    if (ra.drop && chown(log_file, ra.uid, ra.gid) != 0)
        return mw_fail(err, MW_EIO, "chown %s: %s", log_file, strerror(errno));

    char opts[PROGRAM_PATH_MAX + 128];
    snprintf(opts, sizeof opts, "-p %d -k '%s' -c listen_addresses='%s'%s", cfg->port,
             cfg->socket_dir, cfg->listen_loopback ? "127.0.0.1" : "",
             cfg->no_fsync ? " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                           : "");
    char *const argv[] = {pg_ctl, "start",       "--pgdata", (char *)cfg->data_dir,
                          "--wait", "--timeout=120", "--log",    log_file,
                          "-o",     opts,          NULL};
    struct tail out = {.len = 0};
    int status = 0;
    rc = run_program(argv, -1, NULL, &out, &status, err);
    if (rc != MW_OK)
        return rc;
    if (status != 0) {
        char msg[OUTPUT_TAIL_MAX + 1];
        log_tail(log_file, msg, sizeof msg);
        return mw_fail(err, MW_EIO, "PostgreSQL on %s did not start (pg_ctl exited %d); "
                       "its log %s ends: %s", cfg->data_dir, status, log_file, msg);
    }
    return MW_OK;
}

/* pg_hba.conf is PostgreSQL's own small file; a larger one is not the one we wrote. */
#define HBA_MAX 65536

enum mw_err mw_pgcluster_hba_trusts(const struct mw_pgcluster_config *cfg, bool *trusts_out,
                                    struct mw_error *err)
{
    *trusts_out = false;
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    char path[PROGRAM_PATH_MAX];
    snprintf(path, sizeof path, "%s/pg_hba.conf", cfg->data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "open %s: %s", path, strerror(errno));
    char *text = mw_malloc(HBA_MAX + 1);
    size_t len = 0;
    if (!text) {
        close(fd);
        return mw_fail(err, MW_ENOMEM, "out of memory");
    }
    for (;;) {
        ssize_t r = read(fd, text + len, HBA_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mw_fail(err, MW_EIO, "read %s: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > HBA_MAX) {
            rc = mw_fail(err, MW_ETOOBIG, "%s is larger than %d bytes", path, HBA_MAX);
            break;
        }
    }
    close(fd);
    if (rc == MW_OK) {
        text[len] = '\0';
        /* A record is whitespace-separated fields; the method is the first field after the
         * address ones, and "trust" appears as a whole field nowhere else in a record. */
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char *hash = strchr(line, '#');
            if (hash)
                *hash = '\0';
            for (char *fs = NULL, *f = strtok_r(line, " \t\r", &fs); f;
                 f = strtok_r(NULL, " \t\r", &fs)) {
                if (strcmp(f, "trust") == 0)
                    *trusts_out = true;
            }
        }
    }
    mw_free(text);
    return rc;
}

/* Writes text to path atomically: a temporary file beside it, fsynced, renamed over, and the
 * directory fsynced; owned by the cluster's OS user when we are root. */
static enum mw_err write_cluster_file(const char *dir, const char *name, const char *text,
                                      struct mw_error *err)
{
    char path[PROGRAM_PATH_MAX], tmp[PROGRAM_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct run_as ra;
    enum mw_err rc = resolve_run_as(&ra, err);
    if (rc != MW_OK)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "create %s: %s", tmp, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = mw_fail(err, MW_EIO, "write %s: %s", tmp, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (rc == MW_OK && ra.drop && fchown(fd, ra.uid, ra.gid) != 0)
        rc = mw_fail(err, MW_EIO, "chown %s: %s", tmp, strerror(errno));
    if (rc == MW_OK && fsync(fd) != 0)
        rc = mw_fail(err, MW_EIO, "fsync %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == MW_OK && rename(tmp, path) != 0)
        rc = mw_fail(err, MW_EIO, "rename %s: %s", tmp, strerror(errno));
    if (rc != MW_OK) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return MW_OK;
}

enum mw_err mw_pgcluster_hba_require_scram(const struct mw_pgcluster_config *cfg,
                                           struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    const char *text =
        cfg->listen_loopback
            ? "# Written by Midway: every connection proves a SCRAM password.\n"
              "local all all scram-sha-256\n"
              "host all all 127.0.0.1/32 scram-sha-256\n"
            : "# Written by Midway: every connection proves a SCRAM password; no TCP.\n"
              "local all all scram-sha-256\n";
    rc = write_cluster_file(cfg->data_dir, "pg_hba.conf", text, err);
    if (rc != MW_OK || !mw_pgcluster_running(cfg))
        return rc;
    char pg_ctl[PROGRAM_PATH_MAX];
    rc = find_program("pg_ctl", pg_ctl, sizeof pg_ctl, err);
    if (rc != MW_OK)
        return rc;
    char *const argv[] = {pg_ctl, "reload", "--pgdata", (char *)cfg->data_dir, NULL};
    struct tail out = {.len = 0};
    int status = 0;
    rc = run_program(argv, -1, NULL, &out, &status, err);
    if (rc == MW_OK && status != 0) {
        char msg[OUTPUT_TAIL_MAX + 1];
        tail_flatten(&out, msg, sizeof msg);
        rc = mw_fail(err, MW_EIO, "pg_ctl reload %s exited with %d: %s", cfg->data_dir, status,
                     msg);
    }
    return rc;
}

enum mw_err mw_pgcluster_share_socket(const struct mw_pgcluster_config *cfg, gid_t gid,
                                      struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    struct run_as ra;
    rc = resolve_run_as(&ra, err);
    if (rc != MW_OK || !ra.drop)
        return rc;
    if (chown(cfg->socket_dir, ra.uid, gid) != 0 || chmod(cfg->socket_dir, 0710) != 0)
        return mw_fail(err, MW_EIO, "share %s with group %u: %s", cfg->socket_dir,
                       (unsigned)gid, strerror(errno));
    return MW_OK;
}

bool mw_pgcluster_running(const struct mw_pgcluster_config *cfg)
{
    char pg_ctl[PROGRAM_PATH_MAX];
    struct mw_error ignored = {0};
    if (!cfg || find_program("pg_ctl", pg_ctl, sizeof pg_ctl, &ignored) != MW_OK)
        return false;
    char *const argv[] = {pg_ctl, "status", "--pgdata", (char *)cfg->data_dir, NULL};
    struct tail out = {.len = 0};
    int status = 0;
    if (run_program(argv, -1, NULL, &out, &status, &ignored) != MW_OK)
        return false;
    return status == 0;
}

enum mw_err mw_pgcluster_stop(const struct mw_pgcluster_config *cfg, const char *mode,
                              struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    if (!mode || (strcmp(mode, "fast") != 0 && strcmp(mode, "immediate") != 0 &&
                  strcmp(mode, "smart") != 0))
        return mw_fail(err, MW_EINVAL, "stop mode must be fast, immediate or smart");
    if (!mw_pgcluster_running(cfg))
        return MW_OK;
    char pg_ctl[PROGRAM_PATH_MAX];
    rc = find_program("pg_ctl", pg_ctl, sizeof pg_ctl, err);
    if (rc != MW_OK)
        return rc;
    char *const argv[] = {pg_ctl,  "stop",          "--pgdata", (char *)cfg->data_dir,
                          "--mode", (char *)mode,   "--wait",   "--timeout=120",
                          NULL};
    struct tail out = {.len = 0};
    int status = 0;
    rc = run_program(argv, -1, NULL, &out, &status, err);
    if (rc != MW_OK)
        return rc;
    if (status != 0) {
        char msg[OUTPUT_TAIL_MAX + 1];
        tail_flatten(&out, msg, sizeof msg);
        return mw_fail(err, MW_EIO, "pg_ctl stop %s exited with %d: %s", cfg->data_dir,
                       status, msg);
    }
    return MW_OK;
}

enum mw_err mw_pgcluster_run(const char *name, const char *const *args, const char *in_file,
                             const char *out_file, int *status_out, struct mw_error *err)
{
    char path[PROGRAM_PATH_MAX];
    enum mw_err rc = find_program(name, path, sizeof path, err);
    if (rc != MW_OK)
        return rc;
    char *argv[ARGV_MAX];
    size_t n = 0;
    argv[n++] = path;
    for (; args && args[n - 1]; n++) {
        if (n + 1 >= ARGV_MAX)
            return mw_fail(err, MW_EINVAL, "too many arguments for %s", name);
        argv[n] = (char *)args[n - 1];
    }
    argv[n] = NULL;
    int in_fd = -1;
    if (in_file) {
        in_fd = open(in_file, O_RDONLY | O_CLOEXEC);
        if (in_fd < 0)
            return mw_fail(err, MW_EIO, "open %s: %s", in_file, strerror(errno));
    }
    rc = run_program(argv, in_fd, out_file, NULL, status_out, err);
    if (in_fd >= 0)
        close(in_fd);
    return rc;
}

enum mw_err mw_pgcluster_free_port(int *port_out, struct mw_error *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "socket: %s", strerror(errno));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int e = errno;
        close(fd);
        return mw_fail(err, MW_EIO, "finding a free port: %s", strerror(e));
    }
    close(fd);
    *port_out = ntohs(sa.sin_port);
    return MW_OK;
}

/* Appends key='value' with libpq's quoting (backslash before ' and \). */
static size_t append_kv(char *out, size_t o, size_t size, const char *key, const char *value)
{
    int n = snprintf(out + o, size - o, "%s%s='", o ? " " : "", key);
    if (n < 0 || (size_t)n >= size - o)
        return size;
    o += (size_t)n;
    for (const char *p = value; *p; p++) {
        if (o + 3 >= size)
            return size;
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    if (o + 2 >= size)
        return size;
    out[o++] = '\'';
    out[o] = '\0';
    return o;
}

char *mw_pgcluster_conninfo(const struct mw_pgcluster_config *cfg, const char *dbname,
                            const char *user)
{
    size_t size = 2 * (strlen(cfg->socket_dir) + strlen(dbname) + strlen(user)) + 64;
    char *out = mw_malloc(size);
    if (!out)
        return NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    size_t o = 0;
    o = append_kv(out, o, size, "host", cfg->socket_dir);
    if (o < size)
        o = append_kv(out, o, size, "port", port);
    if (o < size)
        o = append_kv(out, o, size, "dbname", dbname);
    if (o < size)
        o = append_kv(out, o, size, "user", user);
    if (o >= size) { /* cannot happen: size covers doubled quoting */
        mw_free(out);
        return NULL;
    }
    return out;
}
