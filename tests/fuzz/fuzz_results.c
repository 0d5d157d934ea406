/* fuzz_results.c - the agent's other two response decoders: mw_proto_results_decode (the
 * answer to a push) and mw_proto_error_decode (any error answer).
 * The first byte chooses: even, a results body answering n_sent = (byte / 2) % 6 ops whose ids
 * are the fixed UUIDv7s below (the seed corpus uses them); odd, an error body. The rest is
 * the body.
 * Checks, results: exactly n_sent items in the order sent; statuses and codes consistent
 * (a reject code only where the status carries one, code_name always with it, messages
 * within MW_RESULT_MSG_MAX). Results without an unknown code are encoded with
 * mw_proto_results_encode and decoded again: same ids, statuses, codes; encoding that gives
 * the same bytes. Error body: code is 1..MW_ERROR_CODE_MAX of [a-z0-9_.], message within
 * its bound; encode, decode, encode gives the same bytes and the same code. Both decoders
 * also run once more with an allocation failing (fuzz_fail_point). */
#include "buf.h"
#include "fuzz.h"
#include "json.h"
#include "proto.h"

#include <string.h>

#define SENT_MAX 5u

/* ids[i] = 0191c3a8-000<i>-7000-8000-00000000000<i>: UUIDv7, increasing. */
static void sent_ids(struct mw_uuid *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memset(&ids[i], 0, sizeof(ids[i]));
        ids[i].b[0] = 0x01;
        ids[i].b[1] = 0x91;
        ids[i].b[2] = 0xc3;
        ids[i].b[3] = 0xa8;
        ids[i].b[5] = (uint8_t)i;
        ids[i].b[6] = 0x70;
        ids[i].b[8] = 0x80;
        ids[i].b[15] = (uint8_t)i;
    }
}

static bool code_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > MW_ERROR_CODE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static void check_result(const struct mw_op_result *r)
{
    bool has_error = r->status == MW_RESULT_REJECTED ||
                     (r->status == MW_RESULT_DUPLICATE && r->first == MW_RESULT_REJECTED);
    FUZZ_CHECK(r->status == MW_RESULT_APPLIED || r->status == MW_RESULT_REJECTED ||
               r->status == MW_RESULT_DUPLICATE);
    if (r->status == MW_RESULT_DUPLICATE)
        FUZZ_CHECK(r->first == MW_RESULT_APPLIED || r->first == MW_RESULT_REJECTED);
    if (!has_error) {
        FUZZ_CHECK(r->code == MW_REJECT_NONE && r->code_name == NULL && r->message == NULL);
        return;
    }
    FUZZ_CHECK(r->code != MW_REJECT_NONE && r->code_name != NULL && r->message != NULL);
    FUZZ_CHECK(code_ok(r->code_name));
    FUZZ_CHECK(mw_proto_reject_parse(r->code_name, strlen(r->code_name)) == r->code);
    if (r->code != MW_REJECT_OTHER)
        FUZZ_CHECK(strcmp(mw_proto_reject_name(r->code), r->code_name) == 0);
    FUZZ_CHECK(strlen(r->message) <= MW_RESULT_MSG_MAX);
    FUZZ_CHECK(mw_json_utf8_valid(r->message, strlen(r->message)));
}

static bool encodable(const struct mw_results *res)
{
    for (size_t i = 0; i < res->n; i++) {
        if (res->items[i].code == MW_REJECT_OTHER)
            return false; /* a newer server's code: this version has no name to write */
    }
    return true;
}

static void fuzz_results(const char *body, size_t len, size_t n_sent)
{
    struct mw_uuid sent[SENT_MAX];
    struct mw_results *res = (struct mw_results *)(uintptr_t)1;
    struct mw_error err = {0};
    sent_ids(sent, n_sent);
    enum mw_err rc = mw_proto_results_decode(body, len, n_sent ? sent : NULL, n_sent, &res, &err);

    /* Once more with one allocation failing: MW_ENOMEM or the same outcome, nothing leaked. */
    struct mw_results *res2 = NULL;
    struct mw_error e2 = {0};
    mw_mem_fail_at(fuzz_fail_point((const uint8_t *)body, len));
    enum mw_err rc2 = mw_proto_results_decode(body, len, n_sent ? sent : NULL, n_sent, &res2, &e2);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    FUZZ_CHECK(rc2 == rc || (fired && rc2 == MW_ENOMEM));
    FUZZ_CHECK((rc2 == MW_OK) == (res2 != NULL));
    mw_proto_results_free(res2);

    if (rc != MW_OK) {
        FUZZ_CHECK(res == NULL);
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0');
        return;
    }
    FUZZ_CHECK(res->n == n_sent);
    for (size_t i = 0; i < res->n; i++) {
        FUZZ_CHECK(mw_uuid_compare(&res->items[i].op_id, &sent[i]) == 0);
        check_result(&res->items[i]);
    }
    if (encodable(res)) {
        struct mw_buf enc1;
        struct mw_buf enc2;
        struct mw_results *again = NULL;
        mw_buf_init(&enc1, MW_JSON_DOC_MAX);
        mw_buf_init(&enc2, MW_JSON_DOC_MAX);
        FUZZ_CHECK_OK(mw_proto_results_encode(res->items, res->n, &enc1, &err), &err);
        rc = mw_proto_results_decode((const char *)enc1.data, enc1.len, n_sent ? sent : NULL,
                                     n_sent, &again, &err);
        FUZZ_CHECK_OK(rc, &err);
        for (size_t i = 0; i < res->n; i++) {
            const struct mw_op_result *a = &res->items[i];
            const struct mw_op_result *b = &again->items[i];
            FUZZ_CHECK(a->status == b->status && a->first == b->first && a->code == b->code);
        }
        FUZZ_CHECK_OK(mw_proto_results_encode(again->items, again->n, &enc2, &err), &err);
        FUZZ_CHECK(enc1.len == enc2.len && memcmp(enc1.data, enc2.data, enc1.len) == 0);
        mw_proto_results_free(again);
        mw_buf_free(&enc2);
        mw_buf_free(&enc1);
    }
    mw_proto_results_free(res);
}

static void fuzz_error(const char *body, size_t len)
{
    struct mw_proto_error pe;
    struct mw_error err = {0};
    enum mw_err rc = mw_proto_error_decode(body, len, &pe, &err);

    struct mw_proto_error pe2;
    struct mw_error e2 = {0};
    mw_mem_fail_at(fuzz_fail_point((const uint8_t *)body, len));
    enum mw_err rc2 = mw_proto_error_decode(body, len, &pe2, &e2);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    FUZZ_CHECK(rc2 == rc || (fired && rc2 == MW_ENOMEM));

    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0');
        return;
    }
    FUZZ_CHECK(code_ok(pe.code));
    FUZZ_CHECK(strlen(pe.message) <= MW_RESULT_MSG_MAX);

    struct mw_buf enc1;
    struct mw_buf enc2;
    struct mw_proto_error again;
    mw_buf_init(&enc1, MW_JSON_DOC_MAX);
    mw_buf_init(&enc2, MW_JSON_DOC_MAX);
    FUZZ_CHECK_OK(mw_proto_error_encode(pe.code, pe.message, &enc1, &err), &err);
    rc = mw_proto_error_decode((const char *)enc1.data, enc1.len, &again, &err);
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(strcmp(again.code, pe.code) == 0);
    FUZZ_CHECK_OK(mw_proto_error_encode(again.code, again.message, &enc2, &err), &err);
    FUZZ_CHECK(enc1.len == enc2.len && memcmp(enc1.data, enc2.data, enc1.len) == 0);
    mw_buf_free(&enc2);
    mw_buf_free(&enc1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    if (data[0] & 1)
        fuzz_error(body, size - 1);
    else
        fuzz_results(body, size - 1, (size_t)(data[0] / 2) % (SENT_MAX + 1));
    return 0;
}
