/* test_proto.c - protocol v1 bodies: push envelopes and per-op verdicts, the incremental push
 * encoder, results, error bodies and pull pages, and allocation failures while decoding. */
#include "bounds.h"
#include "json.h"
#include "mem.h"
#include "proto.h"
#include "timestamp.h"
#include "uuid.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define CORR_TEXT "0191c3a8-7b2e-7c4d-8e5f-0123456789ab"
#define USER_TEXT "0191c3a8-7b2e-7c4d-8e5f-00000000beef"
#define AT_TEXT   "2026-11-25T07:30:00.123Z"
#define CORR      "\"correlation_id\":\"" CORR_TEXT "\""
#define USER      "\"user_id\":\"" USER_TEXT "\""
#define AT        "\"at\":\"" AT_TEXT "\""
#define COMMON    CORR "," AT "," USER
#define BATCH     "\"batch_id\":\"0191c3a8-0000-7000-8000-00000000ba7c\""

/* The nth op id: UUIDv7 with increasing time, so byte order is n order. */
static struct mw_uuid v7(unsigned n)
{
    struct mw_uuid u = {{0}};
    uint64_t ts = UINT64_C(0x0191c3a80000) + n;
    for (int i = 0; i < 6; i++)
        u.b[i] = (uint8_t)(ts >> (40 - 8 * i));
    u.b[6] = 0x70;
    u.b[7] = (uint8_t)n;
    u.b[8] = 0x80;
    u.b[15] = (uint8_t)(n * 7u);
    return u;
}

static const char *v7_text(unsigned n, char out[MW_UUID_STR_SIZE])
{
    struct mw_uuid u = v7(n);
    mw_uuid_format(&u, out);
    return out;
}

static struct mw_uuid uuid_of(const char *text)
{
    struct mw_uuid u;
    assert_int_equal(mw_uuid_parse(text, strlen(text), &u), MW_OK);
    return u;
}

static int64_t ms_of(const char *text)
{
    int64_t ms = 0;
    struct mw_error err = {0};
    assert_int_equal(mw_timestamp_parse(text, strlen(text), &ms, &err), MW_OK);
    return ms;
}

/* n copies of c, NUL-terminated; caller frees. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A growing text for building bodies in tests. */
struct text {
    char *s;
    size_t len;
    size_t cap;
};

static void t_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap : 256);
        while (cap < t->len + (size_t)n + 1)
            cap *= 2;
        t->s = realloc(t->s, cap);
        assert_non_null(t->s);
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static enum mw_err decode(const char *body, struct mw_push **out, struct mw_error *err)
{
    mw_error_clear(err);
    return mw_proto_push_decode(body, strlen(body), out, err);
}

/* ---- names ---- */

static void test_proto_names_round_trip(void **state)
{
    (void)state;
    for (int t = MW_OP_INVENTORY_ADJUST; t <= MW_OP_EVENT_RECORD; t++) {
        const char *name = mw_proto_op_type_name((enum mw_op_type)t);
        assert_non_null(name);
        assert_int_equal(mw_proto_op_type_parse(name, strlen(name)), t);
    }
    assert_null(mw_proto_op_type_name(MW_OP_UNKNOWN));
    assert_int_equal(mw_proto_op_type_parse("inventory.adjus", 15), MW_OP_UNKNOWN);
    assert_int_equal(mw_proto_op_type_parse("inventory.adjustx", 17), MW_OP_UNKNOWN);
    assert_string_equal(mw_proto_op_type_name(MW_OP_INVENTORY_RELOCATE), "inventory.relocate");

    for (int r = MW_REJECT_INSUFFICIENT_STOCK; r < MW_REJECT_OTHER; r++) {
        const char *name = mw_proto_reject_name((enum mw_reject)r);
        assert_non_null(name);
        assert_int_equal(mw_proto_reject_parse(name, strlen(name)), r);
    }
    assert_string_equal(mw_proto_reject_name(MW_REJECT_INSUFFICIENT_STOCK), "insufficient_stock");
    assert_string_equal(mw_proto_reject_name(MW_REJECT_BAD_TIME), "bad_time");
    assert_string_equal(mw_proto_reject_name(MW_REJECT_OP_ID_CONFLICT), "op_id_conflict");
    assert_null(mw_proto_reject_name(MW_REJECT_NONE));
    assert_null(mw_proto_reject_name(MW_REJECT_OTHER));
    assert_int_equal(mw_proto_reject_parse("", 0), MW_REJECT_OTHER);
    assert_int_equal(mw_proto_reject_parse("quota_exceeded", 14), MW_REJECT_OTHER);
}

/* ---- push round trip ---- */

/* One op of every type with every field, as the agent would hand them to the encoder. */
static const struct {
    enum mw_op_type type;
    const char *data;
} every_type[] = {
    {MW_OP_INVENTORY_ADJUST, "{\"sku\":\"SKU-1\",\"delta\":-3,\"reason\":\"dropped \\\"box\\\"\"}"},
    {MW_OP_INVENTORY_COUNT, "{\"sku\":\"SKU-2\",\"counted\":0}"},
    {MW_OP_INVENTORY_RELOCATE, "{\"sku\":\"SKU-3\",\"to_location_id\":42}"},
    {MW_OP_INVENTORY_RECEIVE, "{\"sku\":\"SKU-4\",\"name\":\"Caf\xC3\xA9 beans\",\"location_id\":7,"
                              "\"quantity\":12,\"description\":\"1 kg\\nbag\"}"},
    {MW_OP_INTERACTION_RECORD, "{\"action\":\"scan\",\"target_entity_id\":\"SKU-1\","
                               "\"target_entity_type\":\"item\",\"metadata\":{\"screen\":\"count\","
                               "\"n\":[1,2]}}"},
    {MW_OP_ALLOCATION_RECORD, "{\"sku\":\"SKU-5\",\"predicted_need\":30,\"manual_override\":true,"
                              "\"override_reason\":\"promo week\"}"},
    {MW_OP_EVENT_RECORD, "{\"source_system\":\"scanner\",\"event_type\":\"sync\","
                         "\"details\":{\"battery\":81,\"ok\":true}}"},
};
#define N_EVERY (sizeof(every_type) / sizeof(every_type[0]))

static void fill_every_type(struct mw_op *ops)
{
    for (size_t i = 0; i < N_EVERY; i++) {
        memset(&ops[i], 0, sizeof(ops[i]));
        ops[i].op_id = v7((unsigned)i + 1);
        ops[i].correlation_id = uuid_of(CORR_TEXT);
        ops[i].user_id = uuid_of(USER_TEXT);
        ops[i].at_ms = ms_of(AT_TEXT) + (int64_t)i;
        ops[i].type = every_type[i].type;
        ops[i].data_json = every_type[i].data;
        ops[i].data_len = strlen(every_type[i].data);
    }
}

static void test_proto_push_round_trip_every_type(void **state)
{
    (void)state;
    struct mw_op in[N_EVERY];
    struct mw_buf body;
    struct mw_error err = {0};
    struct mw_push *p = NULL;
    struct mw_uuid batch = v7(999);

    fill_every_type(in);
    mw_buf_init(&body, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_encode("gw-17.north_A", &batch, in, N_EVERY, &body, &err),
                     MW_OK);
    assert_int_equal(mw_proto_push_decode((const char *)body.data, body.len, &p, &err), MW_OK);
    assert_string_equal(p->device_id, "gw-17.north_A");
    assert_int_equal(mw_uuid_compare(&p->batch_id, &batch), 0);
    assert_int_equal(p->n_ops, N_EVERY);
    for (size_t i = 0; i < N_EVERY; i++) {
        const struct mw_op *op = &p->ops[i];
        if (op->reject != MW_REJECT_NONE)
            fail_msg("op %zu rejected: %s", i, op->reject_msg);
        assert_null(op->reject_msg);
        assert_int_equal(mw_uuid_compare(&op->op_id, &in[i].op_id), 0);
        assert_int_equal(mw_uuid_compare(&op->correlation_id, &in[i].correlation_id), 0);
        assert_int_equal(mw_uuid_compare(&op->user_id, &in[i].user_id), 0);
        assert_true(op->at_ms == in[i].at_ms);
        assert_int_equal(op->type, in[i].type);
        assert_string_equal(op->type_name, mw_proto_op_type_name(in[i].type));
        /* The audit copy is the compact text the agent sent. */
        assert_string_equal(op->data_json, in[i].data_json);
        assert_int_equal(op->data_len, in[i].data_len);
    }
    const struct mw_op_adjust *adj = &p->ops[0].u.adjust;
    assert_string_equal(adj->sku, "SKU-1");
    assert_int_equal(adj->delta, -3);
    assert_string_equal(adj->reason, "dropped \"box\"");
    assert_string_equal(p->ops[1].u.count.sku, "SKU-2");
    assert_int_equal(p->ops[1].u.count.counted, 0);
    assert_string_equal(p->ops[2].u.relocate.sku, "SKU-3");
    assert_int_equal(p->ops[2].u.relocate.to_location_id, 42);
    const struct mw_op_receive *rcv = &p->ops[3].u.receive;
    assert_string_equal(rcv->sku, "SKU-4");
    assert_string_equal(rcv->name, "Caf\xC3\xA9 beans");
    assert_int_equal(rcv->location_id, 7);
    assert_int_equal(rcv->quantity, 12);
    assert_string_equal(rcv->description, "1 kg\nbag");
    const struct mw_op_interaction *ia = &p->ops[4].u.interaction;
    assert_string_equal(ia->action, "scan");
    assert_string_equal(ia->target_entity_id, "SKU-1");
    assert_string_equal(ia->target_entity_type, "item");
    assert_string_equal(ia->metadata, "{\"screen\":\"count\",\"n\":[1,2]}");
    const struct mw_op_allocation *al = &p->ops[5].u.allocation;
    assert_string_equal(al->sku, "SKU-5");
    assert_int_equal(al->predicted_need, 30);
    assert_true(al->manual_override);
    assert_string_equal(al->override_reason, "promo week");
    const struct mw_op_event *ev = &p->ops[6].u.event;
    assert_string_equal(ev->source_system, "scanner");
    assert_string_equal(ev->event_type, "sync");
    assert_string_equal(ev->details, "{\"battery\":81,\"ok\":true}");
    mw_proto_push_free(p);
    mw_buf_free(&body);
}

static void test_proto_push_optional_fields_absent_or_null(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_push *p = NULL;
    char id1[MW_UUID_STR_SIZE], id2[MW_UUID_STR_SIZE], id3[MW_UUID_STR_SIZE];
    struct text t = {0};

    t_add(&t, "{\"device_id\":\"d\"," BATCH ",\"ops\":[");
    t_add(&t,
          "{\"op_id\":\"%s\"," COMMON ",\"type\":\"inventory.adjust\","
          "\"data\":{\"sku\":\"A\",\"delta\":1,\"reason\":null}},",
          v7_text(1, id1));
    t_add(&t,
          "{\"op_id\":\"%s\"," COMMON ",\"type\":\"interaction.record\","
          "\"data\":{\"action\":\"login\",\"metadata\":null,\"target_entity_id\":\"\"}},",
          v7_text(2, id2));
    t_add(&t,
          "{\"op_id\":\"%s\"," COMMON ",\"type\":\"allocation.record\","
          "\"data\":{\"sku\":\"A\",\"predicted_need\":0,\"manual_override\":false}}]}",
          v7_text(3, id3));
    assert_int_equal(decode(t.s, &p, &err), MW_OK);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(p->ops[i].reject, MW_REJECT_NONE);
    assert_null(p->ops[0].u.adjust.reason);
    assert_null(p->ops[1].u.interaction.metadata);
    assert_null(p->ops[1].u.interaction.target_entity_type);
    assert_string_equal(p->ops[1].u.interaction.target_entity_id, "");
    assert_false(p->ops[2].u.allocation.manual_override);
    assert_null(p->ops[2].u.allocation.override_reason);
    mw_proto_push_free(p);
    free(t.s);
}

static void test_proto_push_empty_batch_is_valid(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_push *p = NULL;
    struct mw_buf body;
    struct mw_uuid batch = v7(5);

    assert_int_equal(decode("{\"device_id\":\"dev-1\"," BATCH ",\"ops\":[]}", &p, &err), MW_OK);
    assert_int_equal(p->n_ops, 0);
    mw_proto_push_free(p);

    mw_buf_init(&body, 1024);
    assert_int_equal(mw_proto_push_encode("dev-1", &batch, NULL, 0, &body, &err), MW_OK);
    assert_int_equal(mw_proto_push_decode((const char *)body.data, body.len, &p, &err), MW_OK);
    assert_int_equal(p->n_ops, 0);
    mw_proto_push_free(p);
    mw_buf_free(&body);
    mw_proto_push_free(NULL); /* NULL-safe */
}

/* ---- push envelope errors ---- */

static void expect_envelope_error(const char *body, enum mw_err code, const char *msg_part)
{
    struct mw_error err = {0};
    struct mw_push *p = (struct mw_push *)(uintptr_t)1;
    enum mw_err rc = decode(body, &p, &err);
    if (rc != code)
        fail_msg("code %d (%s), wanted %d, for: %.200s", (int)rc, err.msg, (int)code, body);
    assert_null(p);
    if (!strstr(err.msg, msg_part))
        fail_msg("message \"%s\" lacks \"%s\" for: %.200s", err.msg, msg_part, body);
}

static void test_proto_push_envelope_errors_are_malformed(void **state)
{
    (void)state;
    char a[MW_UUID_STR_SIZE], b[MW_UUID_STR_SIZE];
    char buf[2048];
    const char *op_ok = "\"type\":\"inventory.count\",\"data\":{\"sku\":\"A\",\"counted\":1}";
    char *long_dev = repeat('d', MW_DEVICE_ID_MAX + 1);
    char *max_dev = repeat('d', MW_DEVICE_ID_MAX);
    struct mw_error err = {0};
    struct mw_push *p = NULL;

    v7_text(1, a);
    v7_text(2, b);
    expect_envelope_error("not json", MW_EMALFORMED, "JSON");
    expect_envelope_error("[]", MW_EMALFORMED, "not a JSON object");
    expect_envelope_error("{\"device_id\":\"d\"," BATCH ",\"ops\":[]} x", MW_EMALFORMED,
                          "trailing");
    expect_envelope_error("{\"device_id\":\"d\",\"device_id\":\"e\"," BATCH ",\"ops\":[]}",
                          MW_EMALFORMED, "duplicate key \"device_id\"");
    expect_envelope_error("{\"device_id\":\"d\xC0\xAF\"," BATCH ",\"ops\":[]}", MW_EMALFORMED,
                          "UTF-8");
    expect_envelope_error("{" BATCH ",\"ops\":[]}", MW_EMALFORMED, "device_id: missing");
    expect_envelope_error("{\"device_id\":7," BATCH ",\"ops\":[]}", MW_EMALFORMED,
                          "device_id: not a string");
    expect_envelope_error("{\"device_id\":\"\"," BATCH ",\"ops\":[]}", MW_EMALFORMED,
                          "device_id: empty");
    expect_envelope_error("{\"device_id\":\"dev 1\"," BATCH ",\"ops\":[]}", MW_EMALFORMED,
                          "device_id");
    expect_envelope_error("{\"device_id\":\"dev\\u0000x\"," BATCH ",\"ops\":[]}", MW_EMALFORMED,
                          "device_id");
    snprintf(buf, sizeof(buf), "{\"device_id\":\"%s\"," BATCH ",\"ops\":[]}", long_dev);
    expect_envelope_error(buf, MW_EMALFORMED, "device_id: longer than 64 bytes");
    snprintf(buf, sizeof(buf), "{\"device_id\":\"%s\"," BATCH ",\"ops\":[]}", max_dev);
    assert_int_equal(decode(buf, &p, &err), MW_OK);
    assert_string_equal(p->device_id, max_dev);
    mw_proto_push_free(p);

    expect_envelope_error("{\"device_id\":\"d\",\"ops\":[]}", MW_EMALFORMED, "batch_id: missing");
    expect_envelope_error("{\"device_id\":\"d\",\"batch_id\":\"b\",\"ops\":[]}", MW_EMALFORMED,
                          "batch_id: not a UUID");
    expect_envelope_error("{\"device_id\":\"d\"," BATCH "}", MW_EMALFORMED, "ops: missing");
    expect_envelope_error("{\"device_id\":\"d\"," BATCH ",\"ops\":{}}", MW_EMALFORMED,
                          "ops: not an array");
    expect_envelope_error("{\"device_id\":\"d\"," BATCH ",\"ops\":null}", MW_EMALFORMED,
                          "ops: missing");

    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":\"%s\"," COMMON ",%s},7]}", a,
             op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[1]: not an object");
    snprintf(buf, sizeof(buf), "{\"device_id\":\"d\"," BATCH ",\"ops\":[{" COMMON ",%s}]}", op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[0].op_id: missing");
    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":\"%.35s\"," COMMON ",%s}]}", a,
             op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[0].op_id: not a UUID");
    /* A version 4 id does not carry the device's order. */
    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":"
             "\"9b2f6a52-3c1e-4d7a-8f00-1234567890ab\"," COMMON ",%s}]}",
             op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[0].op_id: not a UUIDv7");
    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":\"%s\"," COMMON ",%s},"
             "{\"op_id\":\"%s\"," COMMON ",%s}]}",
             b, op_ok, a, op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[1].op_id: not after ops[0].op_id");
    snprintf(buf, sizeof(buf),
             "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":\"%s\"," COMMON ",%s},"
             "{\"op_id\":\"%s\"," COMMON ",%s}]}",
             a, op_ok, a, op_ok);
    expect_envelope_error(buf, MW_EMALFORMED, "ops[1].op_id: not after ops[0].op_id");

    /* Too deep: data nested past the limit fails the whole body, not one op. */
    struct text t = {0};
    t_add(&t,
          "{\"device_id\":\"d\"," BATCH ",\"ops\":[{\"op_id\":\"%s\"," COMMON ","
          "\"type\":\"event.record\",\"data\":{\"source_system\":\"s\",\"event_type\":\"sync\","
          "\"details\":",
          a);
    for (int i = 0; i < MW_JSON_DEPTH_MAX; i++)
        t_add(&t, "[");
    for (int i = 0; i < MW_JSON_DEPTH_MAX; i++)
        t_add(&t, "]");
    t_add(&t, "}}]}");
    expect_envelope_error(t.s, MW_EMALFORMED, "deeper");
    free(t.s);
    free(long_dev);
    free(max_dev);
}

static void test_proto_push_limits_are_too_big(void **state)
{
    (void)state;
    struct text t = {0};
    char id[MW_UUID_STR_SIZE];
    struct mw_error err = {0};
    struct mw_push *p = NULL;

    t_add(&t, "{\"device_id\":\"d\"," BATCH ",\"ops\":[");
    for (unsigned i = 1; i <= MW_OPS_PER_BATCH_MAX; i++)
        t_add(&t, "%s{\"op_id\":\"%s\"}", i > 1 ? "," : "", v7_text(i, id));
    size_t full = t.len;
    t_add(&t, "]}");
    /* Exactly the limit decodes; ops without content are each rejected, not the batch. */
    assert_int_equal(decode(t.s, &p, &err), MW_OK);
    assert_int_equal(p->n_ops, MW_OPS_PER_BATCH_MAX);
    assert_int_equal(p->ops[4999].reject, MW_REJECT_INVALID);
    mw_proto_push_free(p);

    t.len = full;
    t_add(&t, ",{\"op_id\":\"%s\"}]}", v7_text(MW_OPS_PER_BATCH_MAX + 1, id));
    expect_envelope_error(t.s, MW_ETOOBIG, "more than 5000");
    free(t.s);

    /* The body size is refused before anything is read. */
    static const char tiny[] = "{}";
    assert_int_equal(mw_proto_push_decode(tiny, (size_t)MW_PUSH_BODY_MAX + 1, &p, &err),
                     MW_ETOOBIG);
    assert_null(p);
}

/* ---- per-op verdicts ---- */

/* Decodes a batch of three ops whose middle one has the given members (after op_id), checks
 * that the outer two still decode cleanly, and returns the push for the middle op's checks. */
static struct mw_push *decode_middle(const char *members)
{
    char id[MW_UUID_STR_SIZE];
    struct text t = {0};
    struct mw_error err = {0};
    struct mw_push *p = NULL;

    t_add(&t, "{\"device_id\":\"dev-1\"," BATCH ",\"ops\":[");
    t_add(&t,
          "{\"op_id\":\"%s\"," COMMON ",\"type\":\"inventory.adjust\","
          "\"data\":{\"sku\":\"FIRST\",\"delta\":5}},",
          v7_text(1, id));
    t_add(&t, "{\"op_id\":\"%s\",%s},", v7_text(2, id), members);
    t_add(&t,
          "{\"op_id\":\"%s\"," COMMON ",\"type\":\"inventory.count\","
          "\"data\":{\"sku\":\"LAST\",\"counted\":9}}]}",
          v7_text(3, id));
    if (decode(t.s, &p, &err) != MW_OK)
        fail_msg("batch refused: %s", err.msg);
    free(t.s);
    assert_int_equal(p->n_ops, 3);
    assert_int_equal(p->ops[0].reject, MW_REJECT_NONE);
    assert_string_equal(p->ops[0].u.adjust.sku, "FIRST");
    assert_int_equal(p->ops[2].reject, MW_REJECT_NONE);
    assert_string_equal(p->ops[2].u.count.sku, "LAST");
    assert_int_equal(p->ops[2].u.count.counted, 9);
    return p;
}

static void expect_op(const char *members, enum mw_reject code, const char *msg_part)
{
    struct mw_push *p = decode_middle(members);
    const struct mw_op *op = &p->ops[1];
    if (op->reject != code)
        fail_msg("verdict %d (%s), wanted %d, for: %.300s", (int)op->reject,
                 op->reject_msg ? op->reject_msg : "-", (int)code, members);
    if (code == MW_REJECT_NONE) {
        assert_null(op->reject_msg);
    } else {
        assert_non_null(op->reject_msg);
        if (msg_part && !strstr(op->reject_msg, msg_part))
            fail_msg("message \"%s\" lacks \"%s\"", op->reject_msg, msg_part);
    }
    mw_proto_push_free(p);
}

/* The middle op with the common fields and the given type and data. */
static void expect_data(const char *type, const char *data, enum mw_reject code,
                        const char *msg_part)
{
    struct text t = {0};
    t_add(&t, COMMON ",\"type\":\"%s\",\"data\":%s", type, data);
    expect_op(t.s, code, msg_part);
    free(t.s);
}

static void test_proto_op_common_fields_checked(void **state)
{
    (void)state;
    const char *data = "\"data\":{\"sku\":\"A\",\"delta\":1}";
    char m[512];

    snprintf(m, sizeof(m), COMMON ",\"type\":\"inventory.adjust\",%s", data);
    expect_op(m, MW_REJECT_NONE, NULL);
    /* type */
    snprintf(m, sizeof(m), COMMON ",%s", data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].type: missing");
    snprintf(m, sizeof(m), COMMON ",\"type\":5,%s", data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].type: not a string");
    snprintf(m, sizeof(m), COMMON ",\"type\":\"inventory.teleport\",%s", data);
    expect_op(m, MW_REJECT_UNKNOWN_TYPE, "inventory.teleport");
    snprintf(m, sizeof(m), COMMON ",\"type\":\"\",%s", data);
    expect_op(m, MW_REJECT_UNKNOWN_TYPE, "ops[1].type");
    snprintf(m, sizeof(m), COMMON ",\"type\":\"Inventory.Adjust\",%s", data);
    expect_op(m, MW_REJECT_UNKNOWN_TYPE, NULL);
    snprintf(m, sizeof(m), COMMON ",\"type\":\"inventory.adjust\\u0000\",%s", data);
    expect_op(m, MW_REJECT_INVALID, "U+0000");
    /* An unknown type wins over other problems: it is the one a newer agent needs to see. */
    snprintf(m, sizeof(m), AT ",\"type\":\"inventory.teleport\",\"data\":7");
    expect_op(m, MW_REJECT_UNKNOWN_TYPE, NULL);

    /* correlation_id, at, user_id */
    snprintf(m, sizeof(m), AT "," USER ",\"type\":\"inventory.adjust\",%s", data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].correlation_id: missing");
    snprintf(m, sizeof(m),
             "\"correlation_id\":\"abc\"," AT "," USER ",\"type\":"
             "\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].correlation_id: not a UUID");
    snprintf(m, sizeof(m), CORR "," USER ",\"type\":\"inventory.adjust\",%s", data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].at: missing");
    snprintf(m, sizeof(m),
             CORR ",\"at\":\"2026-11-25T07:30:00\"," USER ",\"type\":\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].at: not an RFC 3339 time");
    snprintf(m, sizeof(m),
             CORR ",\"at\":\"2026-11-25 07:30:00Z\"," USER ",\"type\":\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].at");
    snprintf(m, sizeof(m),
             CORR ",\"at\":\"2026-02-30T07:30:00Z\"," USER ",\"type\":\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].at");
    snprintf(m, sizeof(m), CORR ",\"at\":1764055800123," USER ",\"type\":\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].at: not a string");
    snprintf(m, sizeof(m), CORR "," AT ",\"type\":\"inventory.adjust\",%s", data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].user_id: missing");
    snprintf(m, sizeof(m),
             CORR "," AT ",\"user_id\":\"0191c3a8-7b2e-7c4d-8e5f-00000000beeg\","
                  "\"type\":\"inventory.adjust\",%s",
             data);
    expect_op(m, MW_REJECT_INVALID, "ops[1].user_id: not a UUID");

    /* data */
    expect_op(COMMON ",\"type\":\"inventory.adjust\"", MW_REJECT_INVALID, "ops[1].data: missing");
    expect_op(COMMON ",\"type\":\"inventory.adjust\",\"data\":null", MW_REJECT_INVALID,
              "ops[1].data: missing");
    expect_op(COMMON ",\"type\":\"inventory.adjust\",\"data\":[]", MW_REJECT_INVALID,
              "ops[1].data: not an object");
    expect_op(COMMON ",\"type\":\"inventory.adjust\",\"data\":\"{}\"", MW_REJECT_INVALID,
              "ops[1].data: not an object");
}

static void test_proto_op_rejected_still_keeps_audit_fields(void **state)
{
    (void)state;
    struct mw_push *p =
        decode_middle(COMMON ",\"type\":\"inventory.adjust\",\"data\":{\"sku\":\"A\",\"delta\":0}");
    const struct mw_op *op = &p->ops[1];
    assert_int_equal(op->reject, MW_REJECT_INVALID);
    assert_string_equal(op->reject_msg, "ops[1].data.delta: must not be 0");
    assert_string_equal(op->data_json, "{\"sku\":\"A\",\"delta\":0}");
    assert_string_equal(op->type_name, "inventory.adjust");
    struct mw_uuid corr = uuid_of(CORR_TEXT);
    assert_int_equal(mw_uuid_compare(&op->correlation_id, &corr), 0);
    mw_proto_push_free(p);
}

static void test_proto_op_adjust_fields(void **state)
{
    (void)state;
    char *sku_max = repeat('S', MW_SKU_MAX);
    char *sku_over = repeat('S', MW_SKU_MAX + 1);
    char *text_max = repeat('r', MW_FREE_TEXT_MAX);
    char *text_over = repeat('r', MW_FREE_TEXT_MAX + 1);
    struct text t = {0};
    const char *ty = "inventory.adjust";

    expect_data(ty, "{\"sku\":\"A\",\"delta\":-2147483648}", MW_REJECT_NONE, NULL);
    expect_data(ty, "{\"delta\":1}", MW_REJECT_INVALID, "ops[1].data.sku: missing");
    expect_data(ty, "{\"sku\":7,\"delta\":1}", MW_REJECT_INVALID, "data.sku: not a string");
    expect_data(ty, "{\"sku\":true,\"delta\":1}", MW_REJECT_INVALID, "data.sku: not a string");
    expect_data(ty, "{\"sku\":\"\",\"delta\":1}", MW_REJECT_INVALID, "data.sku: empty");
    expect_data(ty, "{\"sku\":\"A\\u0000B\",\"delta\":1}", MW_REJECT_INVALID,
                "data.sku: holds U+0000");
    t_add(&t, "{\"sku\":\"%s\",\"delta\":1}", sku_max);
    expect_data(ty, t.s, MW_REJECT_NONE, NULL);
    t.len = 0;
    t_add(&t, "{\"sku\":\"%s\",\"delta\":1}", sku_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.sku: longer than 100 bytes");
    expect_data(ty, "{\"sku\":\"A\"}", MW_REJECT_INVALID, "data.delta: missing");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":0}", MW_REJECT_INVALID, "data.delta: must not be 0");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1.5}", MW_REJECT_INVALID,
                "data.delta: not an integer");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":2147483648}", MW_REJECT_INVALID, "data.delta");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":\"3\"}", MW_REJECT_INVALID,
                "data.delta: not a number");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1e300}", MW_REJECT_INVALID, "data.delta");
    t.len = 0;
    t_add(&t, "{\"sku\":\"A\",\"delta\":1,\"reason\":\"%s\"}", text_max);
    expect_data(ty, t.s, MW_REJECT_NONE, NULL);
    t.len = 0;
    t_add(&t, "{\"sku\":\"A\",\"delta\":1,\"reason\":\"%s\"}", text_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.reason: longer than 4096 bytes");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1,\"reason\":\"a\\u0000\"}", MW_REJECT_INVALID,
                "data.reason: holds U+0000");
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1,\"reason\":5}", MW_REJECT_INVALID,
                "data.reason: not a string");
    /* Keys this version does not know are ignored... */
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1,\"bin\":\"B-7\",\"extra\":{\"x\":[1]}}",
                MW_REJECT_NONE, NULL);
    /* ...but they still reach the audit copy, which PostgreSQL could not store with U+0000. */
    expect_data(ty, "{\"sku\":\"A\",\"delta\":1,\"note\":[\"\\u0000\"]}", MW_REJECT_INVALID,
                "data: a string in it holds U+0000");
    free(t.s);
    free(sku_max);
    free(sku_over);
    free(text_max);
    free(text_over);
}

static void test_proto_op_count_relocate_fields(void **state)
{
    (void)state;
    expect_data("inventory.count", "{\"sku\":\"A\",\"counted\":0}", MW_REJECT_NONE, NULL);
    expect_data("inventory.count", "{\"sku\":\"A\",\"counted\":-1}", MW_REJECT_INVALID,
                "data.counted: -1 is outside 0..2147483647");
    expect_data("inventory.count", "{\"sku\":\"A\"}", MW_REJECT_INVALID, "data.counted: missing");
    expect_data("inventory.count", "{\"counted\":3}", MW_REJECT_INVALID, "data.sku: missing");
    expect_data("inventory.relocate", "{\"sku\":\"A\",\"to_location_id\":1}", MW_REJECT_NONE, NULL);
    expect_data("inventory.relocate", "{\"sku\":\"A\",\"to_location_id\":0}", MW_REJECT_INVALID,
                "data.to_location_id");
    expect_data("inventory.relocate", "{\"sku\":\"A\",\"to_location_id\":-4}", MW_REJECT_INVALID,
                "data.to_location_id");
    expect_data("inventory.relocate", "{\"sku\":\"A\",\"to_location_id\":null}", MW_REJECT_INVALID,
                "data.to_location_id: missing");
}

static void test_proto_op_receive_fields(void **state)
{
    (void)state;
    const char *ty = "inventory.receive";
    char *name_max = repeat('n', MW_ITEM_NAME_MAX);
    char *name_over = repeat('n', MW_ITEM_NAME_MAX + 1);
    char *desc_over = repeat('d', MW_FREE_TEXT_MAX + 1);
    struct text t = {0};

    t_add(&t, "{\"sku\":\"A\",\"name\":\"%s\",\"location_id\":1,\"quantity\":1}", name_max);
    expect_data(ty, t.s, MW_REJECT_NONE, NULL);
    t.len = 0;
    t_add(&t, "{\"sku\":\"A\",\"name\":\"%s\",\"location_id\":1,\"quantity\":1}", name_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.name: longer than 255 bytes");
    expect_data(ty, "{\"sku\":\"A\",\"name\":\"\",\"location_id\":1,\"quantity\":1}",
                MW_REJECT_INVALID, "data.name: empty");
    expect_data(ty, "{\"sku\":\"A\",\"name\":\"N\",\"quantity\":1}", MW_REJECT_INVALID,
                "data.location_id: missing");
    expect_data(ty, "{\"sku\":\"A\",\"name\":\"N\",\"location_id\":1,\"quantity\":0}",
                MW_REJECT_INVALID, "data.quantity: 0 is outside 1..");
    expect_data(ty, "{\"sku\":\"A\",\"name\":\"N\",\"location_id\":1,\"quantity\":-3}",
                MW_REJECT_INVALID, "data.quantity");
    t.len = 0;
    t_add(&t,
          "{\"sku\":\"A\",\"name\":\"N\",\"location_id\":1,\"quantity\":1,\"description\":"
          "\"%s\"}",
          desc_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.description: longer than 4096 bytes");
    free(t.s);
    free(name_max);
    free(name_over);
    free(desc_over);
}

static void test_proto_op_interaction_fields(void **state)
{
    (void)state;
    const char *ty = "interaction.record";
    char *action_max = repeat('a', MW_ACTION_MAX);
    char *action_over = repeat('a', MW_ACTION_MAX + 1);
    char *etype_max = repeat('t', MW_ENTITY_TYPE_MAX);
    char *etype_over = repeat('t', MW_ENTITY_TYPE_MAX + 1);
    char *eid_over = repeat('i', MW_ENTITY_ID_MAX + 1);
    struct text t = {0};

    t_add(&t, "{\"action\":\"%s\",\"target_entity_type\":\"%s\"}", action_max, etype_max);
    expect_data(ty, t.s, MW_REJECT_NONE, NULL);
    t.len = 0;
    t_add(&t, "{\"action\":\"%s\"}", action_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.action: longer than 100 bytes");
    t.len = 0;
    t_add(&t, "{\"action\":\"x\",\"target_entity_type\":\"%s\"}", etype_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.target_entity_type: longer than 50 bytes");
    t.len = 0;
    t_add(&t, "{\"action\":\"x\",\"target_entity_id\":\"%s\"}", eid_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.target_entity_id: longer than 255 bytes");
    expect_data(ty, "{}", MW_REJECT_INVALID, "data.action: missing");
    expect_data(ty, "{\"action\":\"x\",\"metadata\":\"{}\"}", MW_REJECT_INVALID,
                "data.metadata: not an object");
    expect_data(ty, "{\"action\":\"x\",\"metadata\":[1]}", MW_REJECT_INVALID,
                "data.metadata: not an object");
    expect_data(ty, "{\"action\":\"x\",\"metadata\":{\"k\":{\"deep\":\"\\u0000\"}}}",
                MW_REJECT_INVALID, "data.metadata: a string in it holds U+0000");
    free(t.s);
    free(action_max);
    free(action_over);
    free(etype_max);
    free(etype_over);
    free(eid_over);
}

static void test_proto_op_allocation_fields(void **state)
{
    (void)state;
    const char *ty = "allocation.record";
    expect_data(ty, "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":true}",
                MW_REJECT_INVALID, "data.override_reason: required when manual_override is true");
    expect_data(ty,
                "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":true,"
                "\"override_reason\":\" \\t \"}",
                MW_REJECT_INVALID, "data.override_reason: required");
    expect_data(ty,
                "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":true,"
                "\"override_reason\":null}",
                MW_REJECT_INVALID, "data.override_reason: required");
    expect_data(ty,
                "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":true,"
                "\"override_reason\":\"vip\"}",
                MW_REJECT_NONE, NULL);
    expect_data(ty, "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":\"yes\"}",
                MW_REJECT_INVALID, "data.manual_override: not true or false");
    expect_data(ty, "{\"sku\":\"A\",\"predicted_need\":5,\"manual_override\":1}", MW_REJECT_INVALID,
                "data.manual_override");
    expect_data(ty, "{\"sku\":\"A\",\"predicted_need\":5}", MW_REJECT_INVALID,
                "data.manual_override: missing");
    expect_data(ty, "{\"sku\":\"A\",\"predicted_need\":-1,\"manual_override\":false}",
                MW_REJECT_INVALID, "data.predicted_need");
}

static void test_proto_op_event_fields(void **state)
{
    (void)state;
    const char *ty = "event.record";
    char *src_max = repeat('s', MW_SOURCE_SYSTEM_MAX);
    char *src_over = repeat('s', MW_SOURCE_SYSTEM_MAX + 1);
    struct text t = {0};
    static const char *const types[] = {"sync", "update", "error", "create", "delete"};

    for (size_t i = 0; i < 5; i++) {
        t.len = 0;
        t_add(&t, "{\"source_system\":\"%s\",\"event_type\":\"%s\",\"details\":{}}", src_max,
              types[i]);
        expect_data(ty, t.s, MW_REJECT_NONE, NULL);
    }
    t.len = 0;
    t_add(&t, "{\"source_system\":\"%s\",\"event_type\":\"sync\",\"details\":{}}", src_over);
    expect_data(ty, t.s, MW_REJECT_INVALID, "data.source_system: longer than 50 bytes");
    expect_data(ty, "{\"source_system\":\"s\",\"event_type\":\"bogus\",\"details\":{}}",
                MW_REJECT_INVALID, "data.event_type: \"bogus\" is not");
    expect_data(ty, "{\"source_system\":\"s\",\"event_type\":\"SYNC\",\"details\":{}}",
                MW_REJECT_INVALID, "data.event_type");
    expect_data(ty, "{\"source_system\":\"s\",\"event_type\":\"sync\"}", MW_REJECT_INVALID,
                "data.details: missing");
    expect_data(ty, "{\"source_system\":\"s\",\"event_type\":\"sync\",\"details\":[]}",
                MW_REJECT_INVALID, "data.details: not an object");
    expect_data(ty, "{\"source_system\":\"s\",\"event_type\":\"sync\",\"details\":null}",
                MW_REJECT_INVALID, "data.details: missing");
    free(t.s);
    free(src_max);
    free(src_over);
}

static void test_proto_op_data_size_limit(void **state)
{
    (void)state;
    /* {"sku":"A","delta":1,"pad":"…"} is 32 bytes plus the padding. */
    size_t fixed = strlen("{\"sku\":\"A\",\"delta\":1,\"pad\":\"\"}");
    char *pad = repeat('p', MW_OP_DATA_MAX - fixed);
    struct text t = {0};

    t_add(&t, "{\"sku\":\"A\",\"delta\":1,\"pad\":\"%s\"}", pad);
    assert_int_equal(t.len, MW_OP_DATA_MAX);
    expect_data("inventory.adjust", t.s, MW_REJECT_NONE, NULL);
    t.len = 0;
    t_add(&t, "{\"sku\":\"A\",\"delta\":1,\"pad\":\"%sp\"}", pad);
    expect_data("inventory.adjust", t.s, MW_REJECT_INVALID, "ops[1].data: longer than 65536");
    free(t.s);
    free(pad);
}

/* ---- push encoder ---- */

static struct mw_op simple_op(unsigned n, const char *data)
{
    struct mw_op op;
    memset(&op, 0, sizeof(op));
    op.op_id = v7(n);
    op.correlation_id = uuid_of(CORR_TEXT);
    op.user_id = uuid_of(USER_TEXT);
    op.at_ms = ms_of(AT_TEXT);
    op.type = MW_OP_INVENTORY_ADJUST;
    op.data_json = data;
    op.data_len = strlen(data);
    return op;
}

static void test_proto_push_encoder_stops_at_budget(void **state)
{
    (void)state;
    const char *data = "{\"sku\":\"SKU-0001\",\"delta\":-1}";
    struct mw_buf out;
    struct mw_push_enc enc;
    struct mw_error err = {0};
    struct mw_uuid batch = v7(0);
    size_t budget = 2000;
    unsigned n = 0;

    mw_buf_init(&out, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_begin(&enc, &out, budget, "dev-1", &batch, &err), MW_OK);
    for (;;) {
        struct mw_op op = simple_op(n + 1, data);
        size_t before = out.len;
        size_t size_before = mw_proto_push_size(&enc);
        enum mw_err rc = mw_proto_push_add(&enc, &op, &err);
        if (rc == MW_EFULL) {
            assert_int_equal(out.len, before); /* nothing half-written */
            assert_int_equal(mw_proto_push_size(&enc), size_before);
            break;
        }
        assert_int_equal(rc, MW_OK);
        assert_true(mw_proto_push_size(&enc) <= budget);
        n++;
    }
    assert_true(n > 3);
    size_t predicted = mw_proto_push_size(&enc);
    assert_int_equal(mw_proto_push_end(&enc, &err), MW_OK);
    assert_int_equal(out.len, predicted);
    assert_true(out.len <= budget);
    assert_true(out.len > budget - 250); /* it filled the budget, give or take one op */
    mw_error_clear(&err);
    assert_int_equal(mw_proto_push_end(&enc, &err), MW_EINVAL);

    struct mw_push *p = NULL;
    assert_int_equal(mw_proto_push_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_ops, n);
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(p->ops[i].reject, MW_REJECT_NONE);
    mw_proto_push_free(p);
    mw_buf_free(&out);
}

static void test_proto_push_encoder_refuses_unsendable_ops(void **state)
{
    (void)state;
    struct mw_buf out;
    struct mw_push_enc enc;
    struct mw_error err = {0};
    struct mw_uuid batch = v7(0);
    char *big = malloc(MW_OP_DATA_MAX + 2);
    struct text deep = {0};

    assert_non_null(big);
    memset(big, ' ', MW_OP_DATA_MAX + 1);
    big[0] = '{';
    big[MW_OP_DATA_MAX] = '}';
    big[MW_OP_DATA_MAX + 1] = '\0';
    /* Data nested deeper than what fits below the envelope (3 levels) would sink the batch. */
    t_add(&deep, "{\"a\":");
    for (int i = 0; i < MW_JSON_DEPTH_MAX - 3; i++)
        t_add(&deep, "[");
    for (int i = 0; i < MW_JSON_DEPTH_MAX - 3; i++)
        t_add(&deep, "]");
    t_add(&deep, "}");

    mw_buf_init(&out, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_begin(&enc, &out, MW_PUSH_BODY_MAX, "dev-1", &batch, &err),
                     MW_OK);
    size_t start_len = out.len;
    struct {
        struct mw_op op;
        enum mw_err want;
    } cases[] = {
        {simple_op(1, big), MW_ETOOBIG},
        {simple_op(1, "[1,2]"), MW_EMALFORMED},
        {simple_op(1, "{\"a\":1,\"a\":2}"), MW_EMALFORMED},
        {simple_op(1, "{\"a\":1} x"), MW_EMALFORMED},
        {simple_op(1, "{\"a\":\"\xC0\xAF\"}"), MW_EMALFORMED},
        {simple_op(1, deep.s), MW_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mw_error_clear(&err);
        if (mw_proto_push_add(&enc, &cases[i].op, &err) != cases[i].want)
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(out.len, start_len);
    }
    /* One level less fits. */
    deep.len = 0;
    t_add(&deep, "{\"a\":");
    for (int i = 0; i < MW_JSON_DEPTH_MAX - 4; i++)
        t_add(&deep, "[");
    for (int i = 0; i < MW_JSON_DEPTH_MAX - 4; i++)
        t_add(&deep, "]");
    t_add(&deep, "}");
    struct mw_op fits = simple_op(1, deep.s);
    assert_int_equal(mw_proto_push_add(&enc, &fits, &err), MW_OK);

    /* Caller bugs. */
    struct mw_op same = simple_op(1, "{}");
    mw_error_clear(&err);
    assert_int_equal(mw_proto_push_add(&enc, &same, &err), MW_EINVAL);
    struct mw_op v4 = simple_op(2, "{}");
    v4.op_id = uuid_of("9b2f6a52-3c1e-4d7a-8f00-1234567890ab");
    assert_int_equal(mw_proto_push_add(&enc, &v4, &err), MW_EINVAL);
    struct mw_op unknown = simple_op(2, "{}");
    unknown.type = MW_OP_UNKNOWN;
    assert_int_equal(mw_proto_push_add(&enc, &unknown, &err), MW_EINVAL);
    struct mw_op bad_time = simple_op(2, "{}");
    bad_time.at_ms = MW_TIMESTAMP_MAX_MS + 1;
    assert_int_equal(mw_proto_push_add(&enc, &bad_time, &err), MW_EINVAL);

    assert_int_equal(mw_proto_push_end(&enc, &err), MW_OK);
    struct mw_push *p = NULL;
    assert_int_equal(mw_proto_push_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_ops, 1);
    mw_proto_push_free(p);

    /* A device_id the server would refuse is a caller bug, caught before a byte is written. */
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_push_begin(&enc, &out, MW_PUSH_BODY_MAX, "dev 1", &batch, &err),
                     MW_EINVAL);
    assert_int_equal(out.len, 0);
    assert_int_equal(mw_proto_push_begin(&enc, &out, 10, "dev-1", &batch, &err), MW_EINVAL);
    assert_int_equal(out.len, 0);
    mw_buf_free(&out);
    free(big);
    free(deep.s);
}

static void test_proto_push_encoder_counts_ops_and_values(void **state)
{
    (void)state;
    struct mw_buf out;
    struct mw_push_enc enc;
    struct mw_error err = {0};
    struct mw_uuid batch = v7(0);
    unsigned n = 0;

    mw_buf_init(&out, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_begin(&enc, &out, MW_PUSH_BODY_MAX, "d", &batch, &err), MW_OK);
    for (;;) {
        struct mw_op op = simple_op(n + 1, "{}");
        enum mw_err rc = mw_proto_push_add(&enc, &op, &err);
        if (rc != MW_OK) {
            assert_int_equal(rc, MW_EFULL);
            break;
        }
        n++;
    }
    assert_int_equal(n, MW_OPS_PER_BATCH_MAX);
    assert_int_equal(mw_proto_push_end(&enc, &err), MW_OK);
    mw_buf_free(&out);

    /* Ops with many values end the batch at the value limit, which the server enforces. */
    struct text data = {0};
    t_add(&data, "{\"a\":[0");
    for (int i = 1; i < 999; i++)
        t_add(&data, ",0");
    t_add(&data, "]}");
    mw_buf_init(&out, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_begin(&enc, &out, MW_PUSH_BODY_MAX, "d", &batch, &err), MW_OK);
    n = 0;
    for (;;) {
        struct mw_op op = simple_op(n + 1, data.s);
        enum mw_err rc = mw_proto_push_add(&enc, &op, &err);
        if (rc != MW_OK) {
            assert_int_equal(rc, MW_EFULL);
            break;
        }
        n++;
    }
    assert_int_equal(n, (MW_JSON_NODES_MAX - 4) / (6 + 1001));
    assert_int_equal(mw_proto_push_end(&enc, &err), MW_OK);
    struct mw_push *p = NULL;
    assert_int_equal(mw_proto_push_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_ops, n);
    mw_proto_push_free(p);
    mw_buf_free(&out);
    free(data.s);
}

/* ---- results ---- */

static void test_proto_results_round_trip(void **state)
{
    (void)state;
    struct mw_op_result in[] = {
        {.op_id = v7(1), .status = MW_RESULT_APPLIED},
        {.op_id = v7(2),
         .status = MW_RESULT_REJECTED,
         .code = MW_REJECT_INSUFFICIENT_STOCK,
         .message = "SKU \"A\" has 2, delta -3"},
        {.op_id = v7(3), .status = MW_RESULT_DUPLICATE, .first = MW_RESULT_APPLIED},
        {.op_id = v7(4),
         .status = MW_RESULT_DUPLICATE,
         .first = MW_RESULT_REJECTED,
         .code = MW_REJECT_UNKNOWN_SKU,
         .message = "no SKU \"Z\""},
        {.op_id = v7(5),
         .status = MW_RESULT_REJECTED,
         .code = MW_REJECT_FORBIDDEN,
         .message = NULL},
    };
    size_t n = sizeof(in) / sizeof(in[0]);
    struct mw_uuid sent[5];
    struct mw_buf out;
    struct mw_error err = {0};
    struct mw_results *r = NULL;

    for (size_t i = 0; i < n; i++)
        sent[i] = in[i].op_id;
    mw_buf_init(&out, MW_JSON_DOC_MAX);
    assert_int_equal(mw_proto_results_encode(in, n, &out, &err), MW_OK);
    assert_non_null(
        strstr((const char *)out.data,
               "\"status\":\"duplicate\",\"first\":{\"status\":\"rejected\","
               "\"error\":{\"code\":\"unknown_sku\",\"message\":\"no SKU \\\"Z\\\"\"}}"));
    assert_int_equal(mw_proto_results_decode((const char *)out.data, out.len, sent, n, &r, &err),
                     MW_OK);
    assert_int_equal(r->n, n);
    assert_int_equal(r->items[0].status, MW_RESULT_APPLIED);
    assert_int_equal(r->items[0].code, MW_REJECT_NONE);
    assert_null(r->items[0].message);
    assert_int_equal(r->items[1].status, MW_RESULT_REJECTED);
    assert_int_equal(r->items[1].code, MW_REJECT_INSUFFICIENT_STOCK);
    assert_string_equal(r->items[1].code_name, "insufficient_stock");
    assert_string_equal(r->items[1].message, "SKU \"A\" has 2, delta -3");
    assert_int_equal(r->items[2].status, MW_RESULT_DUPLICATE);
    assert_int_equal(r->items[2].first, MW_RESULT_APPLIED);
    assert_int_equal(r->items[2].code, MW_REJECT_NONE);
    assert_int_equal(r->items[3].status, MW_RESULT_DUPLICATE);
    assert_int_equal(r->items[3].first, MW_RESULT_REJECTED);
    assert_int_equal(r->items[3].code, MW_REJECT_UNKNOWN_SKU);
    assert_string_equal(r->items[3].message, "no SKU \"Z\"");
    assert_int_equal(r->items[4].code, MW_REJECT_FORBIDDEN);
    assert_string_equal(r->items[4].message, "");
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mw_uuid_compare(&r->items[i].op_id, &sent[i]), 0);
    mw_proto_results_free(r);
    mw_proto_results_free(NULL);

    /* An empty batch has an empty answer. */
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_results_encode(NULL, 0, &out, &err), MW_OK);
    assert_string_equal((const char *)out.data, "{\"results\":[]}");
    assert_int_equal(mw_proto_results_decode((const char *)out.data, out.len, NULL, 0, &r, &err),
                     MW_OK);
    assert_int_equal(r->n, 0);
    mw_proto_results_free(r);
    mw_buf_free(&out);
}

static void test_proto_results_encode_cleans_messages(void **state)
{
    (void)state;
    struct mw_buf out;
    struct mw_error err = {0};
    struct mw_results *r = NULL;
    struct mw_uuid id = v7(1);
    /* 511 ASCII bytes then a 2-byte character: it does not fit in 512 and is left out whole. */
    char *long_msg = malloc(MW_RESULT_MSG_MAX + 16);
    assert_non_null(long_msg);
    memset(long_msg, 'm', MW_RESULT_MSG_MAX - 1);
    strcpy(long_msg + MW_RESULT_MSG_MAX - 1, "\xC3\xA9tail");
    struct mw_op_result in[] = {
        {.op_id = id,
         .status = MW_RESULT_REJECTED,
         .code = MW_REJECT_INVALID,
         .message = "line1\nline2\t\x1b[31m\xC0 end"},
    };

    mw_buf_init(&out, MW_JSON_DOC_MAX);
    assert_int_equal(mw_proto_results_encode(in, 1, &out, &err), MW_OK);
    assert_int_equal(mw_proto_results_decode((const char *)out.data, out.len, &id, 1, &r, &err),
                     MW_OK);
    assert_string_equal(r->items[0].message, "line1 line2  [31m? end");
    mw_proto_results_free(r);

    in[0].message = long_msg;
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_results_encode(in, 1, &out, &err), MW_OK);
    assert_int_equal(mw_proto_results_decode((const char *)out.data, out.len, &id, 1, &r, &err),
                     MW_OK);
    assert_int_equal(strlen(r->items[0].message), MW_RESULT_MSG_MAX - 1);
    mw_proto_results_free(r);

    /* A code that cannot go with its status is a bug on the encoding side. */
    struct mw_op_result bad[] = {{.op_id = id, .status = MW_RESULT_REJECTED}};
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_results_encode(bad, 1, &out, &err), MW_EINVAL);
    assert_int_equal(out.len, 0);
    bad[0].status = MW_RESULT_DUPLICATE;
    bad[0].first = MW_RESULT_DUPLICATE;
    assert_int_equal(mw_proto_results_encode(bad, 1, &out, &err), MW_EINVAL);
    mw_buf_free(&out);
    free(long_msg);
}

static void expect_results_error(const char *body, const struct mw_uuid *sent, size_t n,
                                 const char *msg_part)
{
    struct mw_error err = {0};
    struct mw_results *r = (struct mw_results *)(uintptr_t)1;
    enum mw_err rc = mw_proto_results_decode(body, strlen(body), sent, n, &r, &err);
    if (rc != MW_EMALFORMED)
        fail_msg("code %d for: %s", (int)rc, body);
    assert_null(r);
    if (!strstr(err.msg, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, msg_part);
}

static void test_proto_results_decode_validates(void **state)
{
    (void)state;
    char a[MW_UUID_STR_SIZE], b[MW_UUID_STR_SIZE], body[1024];
    struct mw_uuid sent[2] = {v7(1), v7(2)};
    struct mw_error err = {0};
    struct mw_results *r = NULL;

    v7_text(1, a);
    v7_text(2, b);
    snprintf(body, sizeof(body), "{\"results\":[{\"op_id\":\"%s\",\"status\":\"applied\"}]}", a);
    expect_results_error(body, sent, 2, "results: 1 results for 2 ops sent");
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"applied\"},"
             "{\"op_id\":\"%s\",\"status\":\"applied\"}]}",
             b, a);
    expect_results_error(body, sent, 2, "results[0].op_id: not the op sent");
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"applied\"},"
             "{\"op_id\":\"%s\",\"status\":\"done\"}]}",
             a, b);
    expect_results_error(body, sent, 2, "results[1].status");
    snprintf(body, sizeof(body), "{\"results\":[{\"op_id\":\"%s\",\"status\":\"rejected\"}]}", a);
    expect_results_error(body, sent, 1, "results[0].error: missing");
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"rejected\",\"error\":{\"code\":"
             "\"Bad Code\"}}]}",
             a);
    expect_results_error(body, sent, 1, "results[0].error.code");
    snprintf(body, sizeof(body), "{\"results\":[{\"op_id\":\"%s\",\"status\":\"duplicate\"}]}", a);
    expect_results_error(body, sent, 1, "results[0].first: missing");
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"duplicate\",\"first\":{\"status\":"
             "\"duplicate\"}}]}",
             a);
    expect_results_error(body, sent, 1, "results[0].first.status");
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"duplicate\",\"first\":{\"status\":"
             "\"rejected\"}}]}",
             a);
    expect_results_error(body, sent, 1, "results[0].first.error: missing");
    expect_results_error("{\"results\":{}}", sent, 0, "results: not an array");
    expect_results_error("[]", sent, 0, "not a JSON object");

    /* A code from a newer server is kept, not fatal. */
    snprintf(body, sizeof(body),
             "{\"results\":[{\"op_id\":\"%s\",\"status\":\"rejected\",\"error\":{\"code\":"
             "\"quota_exceeded\",\"message\":\"m\"},\"extra\":1}]}",
             a);
    assert_int_equal(mw_proto_results_decode(body, strlen(body), sent, 1, &r, &err), MW_OK);
    assert_int_equal(r->items[0].code, MW_REJECT_OTHER);
    assert_string_equal(r->items[0].code_name, "quota_exceeded");
    mw_proto_results_free(r);
}

/* ---- error body ---- */

static void test_proto_error_body_round_trip(void **state)
{
    (void)state;
    struct mw_buf out;
    struct mw_error err = {0};
    struct mw_proto_error pe;

    mw_buf_init(&out, 4096);
    assert_int_equal(mw_proto_error_encode("malformed", "ops[3].op_id: missing\n", &out, &err),
                     MW_OK);
    assert_string_equal(
        (const char *)out.data,
        "{\"error\":{\"code\":\"malformed\",\"message\":\"ops[3].op_id: missing \"}}");
    assert_int_equal(mw_proto_error_decode((const char *)out.data, out.len, &pe, &err), MW_OK);
    assert_string_equal(pe.code, "malformed");
    assert_string_equal(pe.message, "ops[3].op_id: missing ");

    mw_buf_reset(&out);
    assert_int_equal(mw_proto_error_encode("too_big", NULL, &out, &err), MW_OK);
    assert_int_equal(mw_proto_error_decode((const char *)out.data, out.len, &pe, &err), MW_OK);
    assert_string_equal(pe.message, "");

    mw_buf_reset(&out);
    assert_int_equal(mw_proto_error_encode("Bad Code", "x", &out, &err), MW_EINVAL);
    assert_int_equal(mw_proto_error_encode("", "x", &out, &err), MW_EINVAL);
    assert_int_equal(out.len, 0);

    static const char *const bad[] = {
        "{}",
        "{\"error\":\"x\"}",
        "{\"error\":{\"message\":\"m\"}}",
        "{\"error\":{\"code\":\"\"}}",
        "{\"error\":{\"code\":\"a b\"}}",
        "{\"error\":{\"code\":\"x\",\"message\":7}}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        if (mw_proto_error_decode(bad[i], strlen(bad[i]), &pe, &err) != MW_EMALFORMED)
            fail_msg("accepted: %s", bad[i]);
    }
    mw_buf_free(&out);
}

/* ---- pull ---- */

static void test_proto_pull_round_trip(void **state)
{
    (void)state;
    const char *roles[] = {"operator", "supervisor"};
    const char *perms[] = {"inventory.adjust", "inventory.count"};
    struct mw_change in[8];
    struct mw_buf out;
    struct mw_error err = {0};
    struct mw_pull *p = NULL;

    memset(in, 0, sizeof(in));
    in[0].kind = MW_CHANGE_LOCATION;
    in[0].op = MW_CHANGE_UPSERT;
    in[0].u.location = (struct mw_change_location){
        .location_id = 1, .name = "Dock \"A\"", .address = NULL, .is_active = true};
    in[1].kind = MW_CHANGE_LOCATION;
    in[1].op = MW_CHANGE_DELETE;
    in[1].u.location.location_id = 2;
    in[2].kind = MW_CHANGE_ITEM;
    in[2].op = MW_CHANGE_UPSERT;
    in[2].u.item = (struct mw_change_item){.resource_id = v7(9),
                                           .sku = "SKU-1",
                                           .name = "Bolt M8",
                                           .location_id = 1,
                                           .quantity = 0,
                                           .description = "zinc\tplated",
                                           .updated_at_ms = ms_of(AT_TEXT)};
    in[3].kind = MW_CHANGE_ITEM;
    in[3].op = MW_CHANGE_DELETE;
    in[3].u.item.sku = "SKU-2";
    in[4].kind = MW_CHANGE_USER;
    in[4].op = MW_CHANGE_UPSERT;
    in[4].u.user = (struct mw_change_user){.user_id = uuid_of(USER_TEXT),
                                           .username = "jdoe",
                                           .first_name = "J\xC3\xBCrgen",
                                           .last_name = NULL,
                                           .roles = roles,
                                           .n_roles = 2};
    in[5].kind = MW_CHANGE_USER;
    in[5].op = MW_CHANGE_DELETE;
    in[5].u.user.user_id = uuid_of(CORR_TEXT);
    in[6].kind = MW_CHANGE_PERMISSION;
    in[6].op = MW_CHANGE_UPSERT;
    in[6].u.permission =
        (struct mw_change_permission){.role = "operator", .permissions = perms, .n_permissions = 2};
    in[7].kind = MW_CHANGE_PERMISSION;
    in[7].op = MW_CHANGE_UPSERT;
    in[7].u.permission = (struct mw_change_permission){.role = "guest", .n_permissions = 0};

    mw_buf_init(&out, MW_PULL_BODY_MAX);
    assert_int_equal(mw_proto_pull_encode(in, 8, "42:7", true, &out, &err), MW_OK);
    assert_null(strstr((const char *)out.data, "password"));
    assert_int_equal(mw_proto_pull_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_changes, 8);
    assert_string_equal(p->cursor, "42:7");
    assert_true(p->has_more);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(p->changes[i].kind, in[i].kind);
        assert_int_equal(p->changes[i].op, in[i].op);
    }
    const struct mw_change_location *l = &p->changes[0].u.location;
    assert_int_equal(l->location_id, 1);
    assert_string_equal(l->name, "Dock \"A\"");
    assert_null(l->address);
    assert_true(l->is_active);
    assert_int_equal(p->changes[1].u.location.location_id, 2);
    const struct mw_change_item *it = &p->changes[2].u.item;
    assert_int_equal(mw_uuid_compare(&it->resource_id, &in[2].u.item.resource_id), 0);
    assert_string_equal(it->sku, "SKU-1");
    assert_string_equal(it->name, "Bolt M8");
    assert_int_equal(it->location_id, 1);
    assert_int_equal(it->quantity, 0);
    assert_string_equal(it->description, "zinc\tplated");
    assert_true(it->updated_at_ms == in[2].u.item.updated_at_ms);
    assert_string_equal(p->changes[3].u.item.sku, "SKU-2");
    const struct mw_change_user *u = &p->changes[4].u.user;
    assert_int_equal(mw_uuid_compare(&u->user_id, &in[4].u.user.user_id), 0);
    assert_string_equal(u->username, "jdoe");
    assert_string_equal(u->first_name, "J\xC3\xBCrgen");
    assert_null(u->last_name);
    assert_int_equal(u->n_roles, 2);
    assert_string_equal(u->roles[0], "operator");
    assert_string_equal(u->roles[1], "supervisor");
    assert_int_equal(mw_uuid_compare(&p->changes[5].u.user.user_id, &in[5].u.user.user_id), 0);
    const struct mw_change_permission *pm = &p->changes[6].u.permission;
    assert_string_equal(pm->role, "operator");
    assert_int_equal(pm->n_permissions, 2);
    assert_string_equal(pm->permissions[1], "inventory.count");
    assert_int_equal(p->changes[7].u.permission.n_permissions, 0);
    mw_proto_pull_free(p);
    mw_proto_pull_free(NULL);

    /* A snapshot's first page, and an empty last page. */
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_pull_encode(NULL, 0, "0", false, &out, &err), MW_OK);
    assert_string_equal((const char *)out.data,
                        "{\"changes\":[],\"cursor\":\"0\",\"has_more\":false}");
    assert_int_equal(mw_proto_pull_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_changes, 0);
    assert_false(p->has_more);
    mw_proto_pull_free(p);
    mw_buf_free(&out);
}

static void expect_pull_error(const char *body, enum mw_err code, const char *msg_part)
{
    struct mw_error err = {0};
    struct mw_pull *p = (struct mw_pull *)(uintptr_t)1;
    enum mw_err rc = mw_proto_pull_decode(body, strlen(body), &p, &err);
    if (rc != code)
        fail_msg("code %d (%s) for: %.200s", (int)rc, err.msg, body);
    assert_null(p);
    if (!strstr(err.msg, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, msg_part);
}

#define PAGE(changes, cursor) \
    "{\"changes\":[" changes "],\"cursor\":\"" cursor "\",\"has_more\":false}"

static void test_proto_pull_decode_validates(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_pull *p = NULL;
    char *cursor_max = repeat('c', MW_CURSOR_MAX);
    char *cursor_over = repeat('c', MW_CURSOR_MAX + 1);
    struct text t = {0};

    expect_pull_error(PAGE("", "a b"), MW_EMALFORMED, "cursor");
    expect_pull_error(PAGE("", "a/b"), MW_EMALFORMED, "cursor");
    expect_pull_error(PAGE("", ""), MW_EMALFORMED, "cursor: empty");
    expect_pull_error("{\"changes\":[],\"has_more\":false}", MW_EMALFORMED, "cursor: missing");
    expect_pull_error("{\"changes\":[],\"cursor\":\"1\"}", MW_EMALFORMED, "has_more: missing");
    expect_pull_error("{\"changes\":[],\"cursor\":\"1\",\"has_more\":\"no\"}", MW_EMALFORMED,
                      "has_more");
    expect_pull_error("{\"cursor\":\"1\",\"has_more\":false}", MW_EMALFORMED, "changes: missing");
    t_add(&t, "{\"changes\":[],\"cursor\":\"%s\",\"has_more\":false}", cursor_over);
    expect_pull_error(t.s, MW_EMALFORMED, "cursor: longer than 128 bytes");
    t.len = 0;
    t_add(&t, "{\"changes\":[],\"cursor\":\"%s\",\"has_more\":false}", cursor_max);
    assert_int_equal(mw_proto_pull_decode(t.s, t.len, &p, &err), MW_OK);
    assert_string_equal(p->cursor, cursor_max);
    mw_proto_pull_free(p);

    expect_pull_error(PAGE("7", "1"), MW_EMALFORMED, "changes[0]: not an object");
    expect_pull_error(PAGE("{\"op\":\"upsert\"}", "1"), MW_EMALFORMED, "changes[0].kind: missing");
    expect_pull_error(PAGE("{\"kind\":\"item\",\"op\":\"replace\",\"sku\":\"A\"}", "1"),
                      MW_EMALFORMED, "changes[0].op: not upsert or delete");
    expect_pull_error(PAGE("{\"kind\":\"location\",\"op\":\"upsert\",\"location_id\":0,"
                           "\"name\":\"n\",\"address\":null,\"is_active\":true}",
                           "1"),
                      MW_EMALFORMED, "changes[0].location_id");
    expect_pull_error(PAGE("{\"kind\":\"location\",\"op\":\"upsert\",\"location_id\":1,"
                           "\"name\":\"n\",\"address\":null}",
                           "1"),
                      MW_EMALFORMED, "changes[0].is_active: missing");
    expect_pull_error(PAGE("{\"kind\":\"item\",\"op\":\"upsert\",\"resource_id\":\"x\","
                           "\"sku\":\"A\",\"name\":\"n\",\"location_id\":1,\"quantity\":1,"
                           "\"description\":null,\"updated_at\":\"" AT_TEXT "\"}",
                           "1"),
                      MW_EMALFORMED, "changes[0].resource_id: not a UUID");
    expect_pull_error(PAGE("{\"kind\":\"item\",\"op\":\"upsert\",\"resource_id\":\"" CORR_TEXT
                           "\",\"sku\":\"A\",\"name\":\"n\",\"location_id\":1,\"quantity\":-1,"
                           "\"description\":null,\"updated_at\":\"" AT_TEXT "\"}",
                           "1"),
                      MW_EMALFORMED, "changes[0].quantity");
    expect_pull_error(PAGE("{\"kind\":\"item\",\"op\":\"upsert\",\"resource_id\":\"" CORR_TEXT
                           "\",\"sku\":\"A\",\"name\":\"n\",\"location_id\":1,\"quantity\":1,"
                           "\"description\":null,\"updated_at\":\"yesterday\"}",
                           "1"),
                      MW_EMALFORMED, "changes[0].updated_at");
    expect_pull_error(PAGE("{\"kind\":\"item\",\"op\":\"delete\"}", "1"), MW_EMALFORMED,
                      "changes[0].sku: missing");
    expect_pull_error(PAGE("{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" USER_TEXT
                           "\",\"username\":\"u\",\"roles\":[\"ok\",\"\"]}",
                           "1"),
                      MW_EMALFORMED, "changes[0].roles[1]: empty");
    expect_pull_error(PAGE("{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" USER_TEXT
                           "\",\"username\":\"u\",\"roles\":\"operator\"}",
                           "1"),
                      MW_EMALFORMED, "changes[0].roles: not an array");
    expect_pull_error(PAGE("{\"kind\":\"permission\",\"op\":\"upsert\",\"role\":\"r\","
                           "\"permissions\":[1]}",
                           "1"),
                      MW_EMALFORMED, "changes[0].permissions[0]: not a string");

    t.len = 0;
    t_add(&t, "{\"changes\":[{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" USER_TEXT
              "\",\"username\":\"u\",\"roles\":[");
    for (unsigned i = 0; i <= MW_USER_ROLES_MAX; i++)
        t_add(&t, "%s\"r%u\"", i ? "," : "", i);
    t_add(&t, "]}],\"cursor\":\"1\",\"has_more\":false}");
    expect_pull_error(t.s, MW_EMALFORMED, "changes[0].roles: more than 64 entries");

    /* Unknown keys are ignored (a password hash has nowhere to go), unknown kinds skipped. */
    const char *lenient =
        PAGE("{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" USER_TEXT "\","
             "\"username\":\"u\",\"first_name\":null,\"roles\":[],\"password_hash\":\"$argon2id$\","
             "\"email\":\"u@example.com\"},{\"kind\":\"supplier\",\"op\":\"merge\",\"id\":5}",
             "9");
    assert_int_equal(mw_proto_pull_decode(lenient, strlen(lenient), &p, &err), MW_OK);
    assert_int_equal(p->n_changes, 2);
    assert_int_equal(p->changes[0].kind, MW_CHANGE_USER);
    assert_int_equal(p->changes[0].u.user.n_roles, 0);
    assert_int_equal(p->changes[1].kind, MW_CHANGE_OTHER);
    mw_proto_pull_free(p);

    /* Too many changes. */
    t.len = 0;
    t_add(&t, "{\"changes\":[");
    for (unsigned i = 0; i <= MW_PULL_LIMIT_MAX; i++)
        t_add(&t, "%s{\"kind\":\"location\",\"op\":\"delete\",\"location_id\":1}", i ? "," : "");
    t_add(&t, "],\"cursor\":\"1\",\"has_more\":true}");
    expect_pull_error(t.s, MW_ETOOBIG, "more than 5000");
    free(t.s);
    free(cursor_max);
    free(cursor_over);
}

static void test_proto_pull_encoder_budget_and_bounds(void **state)
{
    (void)state;
    struct mw_buf out;
    struct mw_pull_enc enc;
    struct mw_error err = {0};
    struct mw_change c;
    char *cursor = repeat('9', MW_CURSOR_MAX);
    size_t budget = 4096;
    unsigned n = 0;

    memset(&c, 0, sizeof(c));
    c.kind = MW_CHANGE_ITEM;
    c.op = MW_CHANGE_UPSERT;
    c.u.item = (struct mw_change_item){.resource_id = v7(1),
                                       .sku = "SKU-1",
                                       .name = "thing",
                                       .location_id = 3,
                                       .quantity = 10,
                                       .updated_at_ms = ms_of(AT_TEXT)};
    mw_buf_init(&out, MW_PULL_BODY_MAX);
    assert_int_equal(mw_proto_pull_begin(&enc, &out, budget, &err), MW_OK);
    for (;;) {
        size_t before = out.len;
        enum mw_err rc = mw_proto_pull_add(&enc, &c, &err);
        if (rc == MW_EFULL) {
            assert_int_equal(out.len, before);
            break;
        }
        assert_int_equal(rc, MW_OK);
        n++;
    }
    assert_true(n > 10);
    /* The longest cursor still fits: room for it was kept. */
    assert_int_equal(mw_proto_pull_end(&enc, cursor, true, &err), MW_OK);
    assert_true(out.len <= budget);
    struct mw_pull *p = NULL;
    assert_int_equal(mw_proto_pull_decode((const char *)out.data, out.len, &p, &err), MW_OK);
    assert_int_equal(p->n_changes, n);
    mw_proto_pull_free(p);

    /* Changes out of their bounds are refused, so the agent never gets a page it refuses. */
    mw_buf_reset(&out);
    assert_int_equal(mw_proto_pull_begin(&enc, &out, MW_PULL_BODY_MAX, &err), MW_OK);
    struct mw_change bad = c;
    bad.u.item.quantity = -1;
    assert_int_equal(mw_proto_pull_add(&enc, &bad, &err), MW_EINVAL);
    bad = c;
    bad.u.item.sku = "";
    assert_int_equal(mw_proto_pull_add(&enc, &bad, &err), MW_EINVAL);
    bad = c;
    bad.u.item.name = "\xC0\xAF";
    assert_int_equal(mw_proto_pull_add(&enc, &bad, &err), MW_EINVAL);
    bad = c;
    bad.kind = MW_CHANGE_OTHER;
    assert_int_equal(mw_proto_pull_add(&enc, &bad, &err), MW_EINVAL);
    bad = c;
    bad.op = 0;
    assert_int_equal(mw_proto_pull_add(&enc, &bad, &err), MW_EINVAL);
    assert_int_equal(mw_proto_pull_end(&enc, "bad cursor", false, &err), MW_EINVAL);
    assert_int_equal(mw_proto_pull_end(&enc, "", false, &err), MW_EINVAL);
    assert_int_equal(mw_proto_pull_end(&enc, "5", false, &err), MW_OK);
    assert_string_equal((const char *)out.data,
                        "{\"changes\":[],\"cursor\":\"5\",\"has_more\":false}");
    assert_int_equal(mw_proto_pull_end(&enc, "5", false, &err), MW_EINVAL);
    assert_true(mw_proto_cursor_valid("0"));
    assert_true(mw_proto_cursor_valid("1732519800123:abc-DEF_9.x"));
    assert_false(mw_proto_cursor_valid("a+b"));
    assert_false(mw_proto_cursor_valid(NULL));
    mw_buf_free(&out);
    free(cursor);
}

/* ---- allocation failures ---- */

/* Runs fn with the nth allocation failing, for n = 1, 2, ... until it succeeds without the
 * hook firing. Every failure must be MW_ENOMEM with nothing returned (ASan checks leaks). */
static void fail_every_allocation(enum mw_err (*fn)(void *ctx, void **out), void (*release)(void *),
                                  void *ctx)
{
    int done = 0;
    long i;
    for (i = 1; i < 100000 && !done; i++) {
        void *obj = NULL;
        mw_mem_fail_at(i);
        enum mw_err rc = fn(ctx, &obj);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (rc == MW_OK) {
            assert_non_null(obj);
            release(obj);
            done = !fired;
        } else {
            if (rc != MW_ENOMEM)
                fail_msg("allocation %ld failing gave code %d", i, (int)rc);
            assert_true(fired);
            assert_null(obj);
        }
    }
    assert_true(done);
    assert_true(i > 5); /* the run did exercise failures */
}

static enum mw_err push_decode_fn(void *ctx, void **out)
{
    struct mw_error err = {0};
    const char *body = ctx;
    struct mw_push *p = NULL;
    enum mw_err rc = mw_proto_push_decode(body, strlen(body), &p, &err);
    *out = p;
    return rc;
}

static void push_free_fn(void *p)
{
    mw_proto_push_free(p);
}

static void test_proto_push_decode_survives_allocation_failures(void **state)
{
    (void)state;
    struct mw_op ops[N_EVERY];
    struct mw_buf body;
    struct mw_error err = {0};
    struct mw_uuid batch = v7(0);
    struct text t = {0};
    char id[MW_UUID_STR_SIZE];

    fill_every_type(ops);
    mw_buf_init(&body, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_proto_push_encode("dev-1", &batch, ops, N_EVERY, &body, &err), MW_OK);
    /* Add ops rejected in different ways, so their paths fail allocations too. */
    t_add(&t, "%.*s", (int)(body.len - 2), (const char *)body.data);
    t_add(&t, ",{\"op_id\":\"%s\"," COMMON ",\"type\":\"inventory.fly\",\"data\":{}}",
          v7_text(100, id));
    t_add(&t,
          ",{\"op_id\":\"%s\"," COMMON ",\"type\":\"inventory.adjust\",\"data\":{\"sku\":"
          "\"A\",\"delta\":0}}",
          v7_text(101, id));
    t_add(&t,
          ",{\"op_id\":\"%s\"," COMMON ",\"type\":\"event.record\",\"data\":{\"source_system\":"
          "\"s\",\"event_type\":\"sync\",\"details\":{\"x\":\"\\u0000\"}}}]}",
          v7_text(102, id));

    struct mw_push *p = NULL;
    assert_int_equal(push_decode_fn(t.s, (void **)&p), MW_OK);
    assert_int_equal(p->n_ops, N_EVERY + 3);
    assert_int_equal(p->ops[N_EVERY].reject, MW_REJECT_UNKNOWN_TYPE);
    assert_int_equal(p->ops[N_EVERY + 1].reject, MW_REJECT_INVALID);
    assert_int_equal(p->ops[N_EVERY + 2].reject, MW_REJECT_INVALID);
    mw_proto_push_free(p);

    fail_every_allocation(push_decode_fn, push_free_fn, t.s);
    mw_buf_free(&body);
    free(t.s);
}

static enum mw_err pull_decode_fn(void *ctx, void **out)
{
    struct mw_error err = {0};
    const char *body = ctx;
    struct mw_pull *p = NULL;
    enum mw_err rc = mw_proto_pull_decode(body, strlen(body), &p, &err);
    *out = p;
    return rc;
}

static void pull_free_fn(void *p)
{
    mw_proto_pull_free(p);
}

static void test_proto_pull_decode_survives_allocation_failures(void **state)
{
    (void)state;
    const char *body = PAGE(
        "{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" USER_TEXT "\",\"username\":\"u\","
        "\"first_name\":\"F\",\"last_name\":null,\"roles\":[\"a\",\"b\"]},"
        "{\"kind\":\"item\",\"op\":\"upsert\",\"resource_id\":\"" CORR_TEXT "\",\"sku\":\"A\","
        "\"name\":\"n\",\"location_id\":1,\"quantity\":1,\"description\":\"d\",\"updated_at\":"
        "\"" AT_TEXT
        "\"},{\"kind\":\"permission\",\"op\":\"upsert\",\"role\":\"r\",\"permissions\":[\"x\"]}",
        "77");
    fail_every_allocation(pull_decode_fn, pull_free_fn, (void *)(uintptr_t)body);
}

struct results_ctx {
    const char *body;
    const struct mw_uuid *sent;
    size_t n;
};

static enum mw_err results_decode_fn(void *ctx, void **out)
{
    struct results_ctx *c = ctx;
    struct mw_error err = {0};
    struct mw_results *r = NULL;
    enum mw_err rc = mw_proto_results_decode(c->body, strlen(c->body), c->sent, c->n, &r, &err);
    *out = r;
    return rc;
}

static void results_free_fn(void *r)
{
    mw_proto_results_free(r);
}

static void test_proto_results_decode_survives_allocation_failures(void **state)
{
    (void)state;
    struct mw_op_result in[] = {
        {.op_id = v7(1), .status = MW_RESULT_APPLIED},
        {.op_id = v7(2),
         .status = MW_RESULT_REJECTED,
         .code = MW_REJECT_UNKNOWN_LOCATION,
         .message = "no location 9"},
        {.op_id = v7(3),
         .status = MW_RESULT_DUPLICATE,
         .first = MW_RESULT_REJECTED,
         .code = MW_REJECT_UNKNOWN_USER,
         .message = "who"},
    };
    struct mw_uuid sent[3] = {v7(1), v7(2), v7(3)};
    struct mw_buf out;
    struct mw_error err = {0};

    mw_buf_init(&out, 65536);
    assert_int_equal(mw_proto_results_encode(in, 3, &out, &err), MW_OK);
    struct results_ctx ctx = {(const char *)out.data, sent, 3};
    fail_every_allocation(results_decode_fn, results_free_fn, &ctx);
    mw_buf_free(&out);
}

static void test_proto_encoders_leave_buffer_on_allocation_failure(void **state)
{
    (void)state;
    struct mw_op ops[N_EVERY];
    struct mw_uuid batch = v7(0);
    int done = 0;

    fill_every_type(ops);
    for (long i = 1; i < 10000 && !done; i++) {
        struct mw_buf out;
        struct mw_error err = {0};
        mw_buf_init(&out, MW_PUSH_BODY_MAX);
        mw_mem_fail_at(i);
        enum mw_err rc = mw_proto_push_encode("dev-1", &batch, ops, N_EVERY, &out, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (rc == MW_OK) {
            done = !fired;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_int_equal(out.len, 0);
        }
        mw_buf_free(&out);
    }
    assert_true(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_names_round_trip),
        cmocka_unit_test(test_proto_push_round_trip_every_type),
        cmocka_unit_test(test_proto_push_optional_fields_absent_or_null),
        cmocka_unit_test(test_proto_push_empty_batch_is_valid),
        cmocka_unit_test(test_proto_push_envelope_errors_are_malformed),
        cmocka_unit_test(test_proto_push_limits_are_too_big),
        cmocka_unit_test(test_proto_op_common_fields_checked),
        cmocka_unit_test(test_proto_op_rejected_still_keeps_audit_fields),
        cmocka_unit_test(test_proto_op_adjust_fields),
        cmocka_unit_test(test_proto_op_count_relocate_fields),
        cmocka_unit_test(test_proto_op_receive_fields),
        cmocka_unit_test(test_proto_op_interaction_fields),
        cmocka_unit_test(test_proto_op_allocation_fields),
        cmocka_unit_test(test_proto_op_event_fields),
        cmocka_unit_test(test_proto_op_data_size_limit),
        cmocka_unit_test(test_proto_push_encoder_stops_at_budget),
        cmocka_unit_test(test_proto_push_encoder_refuses_unsendable_ops),
        cmocka_unit_test(test_proto_push_encoder_counts_ops_and_values),
        cmocka_unit_test(test_proto_results_round_trip),
        cmocka_unit_test(test_proto_results_encode_cleans_messages),
        cmocka_unit_test(test_proto_results_decode_validates),
        cmocka_unit_test(test_proto_error_body_round_trip),
        cmocka_unit_test(test_proto_pull_round_trip),
        cmocka_unit_test(test_proto_pull_decode_validates),
        cmocka_unit_test(test_proto_pull_encoder_budget_and_bounds),
        cmocka_unit_test(test_proto_push_decode_survives_allocation_failures),
        cmocka_unit_test(test_proto_pull_decode_survives_allocation_failures),
        cmocka_unit_test(test_proto_results_decode_survives_allocation_failures),
        cmocka_unit_test(test_proto_encoders_leave_buffer_on_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
