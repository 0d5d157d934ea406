/* it_agent_trust.c - whom the agent trusts on the way to the real server: only the configured
 * CA file (libcurl's built-in CA directory is cleared), and no proxy but the configured one
 * (the proxy environment variables are ignored).
 *
 * CURLINFO_CAPATH cannot show the first: it reports libcurl's built-in default whatever the
 * handle was told. What the handle used is in libcurl's own informational lines ("CApath:
 * ..."), which the agent hands to the log at debug level; the test reads them there. */
#include "midway/agent.h"
#include "midway/log.h"
#include "srvtest.h"
#include "testutil.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A closed port: a request sent to a proxy here fails at once with "connection refused". */
#define DEAD_PROXY "http://127.0.0.1:1"

static struct srvtest *srv;
static char *dir;
static char *token_file;
static char device_id[65];

/* Every log line of the agent library, joined with newlines. */
struct capture {
    char *text;
    size_t len;
};
static struct capture cap;

static void capture_sink(void *ctx, enum mw_log_level level, const char *line)
{
    (void)level;
    struct capture *c = ctx;
    size_t n = strlen(line);
    char *p = realloc(c->text, c->len + n + 2);
    if (!p)
        return;
    c->text = p;
    memcpy(c->text + c->len, line, n);
    c->len += n;
    c->text[c->len++] = '\n';
    c->text[c->len] = '\0';
}

static struct mw_agent *open_agent(const char *name, const char *proxy)
{
    char *db = tu_path(dir, name);
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.proxy = proxy;
    opt.connect_timeout_ms = 5000;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(db, &opt, &a, &err) != MW_OK)
        fail_msg("open agent: %s", err.msg);
    free(db);
    if (mw_agent_settings_set(a, srvtest_url(srv), device_id, token_file, srvtest_ca(srv), &err) !=
        MW_OK)
        fail_msg("settings: %s", err.msg);
    return a;
}

static enum mw_agent_sync_outcome sync_once(struct mw_agent *a, struct mw_error *err)
{
    struct mw_agent_sync_result res;
    if (mw_agent_sync(a, NULL, NULL, &res, err) != MW_OK && res.outcome == MW_AGENT_SYNC_DONE)
        fail_msg("sync failed but says done: %s", err->msg);
    return res.outcome;
}

static void only_the_configured_ca_is_trusted(void **state)
{
    (void)state;
    struct mw_agent *a = open_agent("ca.db", NULL);
    enum mw_log_level was = mw_log_threshold;
    mw_log_threshold = MW_LOG_DEBUG;
    mw_log_set_sink(capture_sink, &cap);
    struct mw_error err = {0};
    enum mw_agent_sync_outcome out = sync_once(a, &err);
    mw_log_set_sink(NULL, NULL);
    mw_log_threshold = was;
    assert_int_equal(out, MW_AGENT_SYNC_DONE);
    assert_non_null(cap.text);
    /* libcurl says which CA file and directory the handshake loaded. */
    char want[4200];
    snprintf(want, sizeof want, "CAfile: %s", srvtest_ca(srv));
    if (!strstr(cap.text, want) || !strstr(cap.text, "CApath: none"))
        fail_msg("libcurl did not report CAfile %s and no CApath; it said:\n%s", srvtest_ca(srv),
                 cap.text);
    /* Nothing secret went to the log: the token's prefix (mwd_) never appears. */
    assert_null(strstr(cap.text, "mwd_"));
    /* The built-in default the agent overrides; CURLINFO_CAPATH shows only this. */
    CURL *h = curl_easy_init();
    char *builtin = NULL;
    if (h && curl_easy_getinfo(h, CURLINFO_CAPATH, &builtin) == CURLE_OK && builtin)
        print_message("libcurl's built-in CA directory, not used: %s\n", builtin);
    curl_easy_cleanup(h);
    free(cap.text);
    cap.text = NULL;
    cap.len = 0;
    mw_agent_close(a);
}

static void proxy_variables_are_ignored(void **state)
{
    (void)state;
    static const char *const vars[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                       "http_proxy"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        setenv(vars[i], DEAD_PROXY, 1);
    unsetenv("no_proxy"); /* which could exempt 127.0.0.1 and hide the difference */
    unsetenv("NO_PROXY");
    struct mw_agent *a = open_agent("env.db", NULL);
    struct mw_error err = {0};
    enum mw_agent_sync_outcome out = sync_once(a, &err);
    if (out != MW_AGENT_SYNC_DONE)
        fail_msg("sync with proxy variables set: outcome %d: %s", (int)out, err.msg);
    mw_agent_close(a);

    /* A configured proxy is used: this one refuses, so the sync cannot reach the server. */
    a = open_agent("proxy.db", DEAD_PROXY);
    mw_error_clear(&err);
    assert_int_equal(sync_once(a, &err), MW_AGENT_SYNC_UNREACHABLE);
    mw_agent_close(a);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

static int setup(void **state)
{
    (void)state;
    srv = srvtest_start();
    char token[128];
    srvtest_add_device(srv, "trust-1", "scanner", device_id, token);
    dir = tu_mkdtemp("trust");
    token_file = tu_path(dir, "token");
    tu_write_file(token_file, token, strlen(token));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    free(token_file);
    return srvtest_stop(srv) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(only_the_configured_ca_is_trusted),
        cmocka_unit_test(proxy_variables_are_ignored),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
