/* fuzz_push.c - mw_proto_push_decode, the server's reading of POST /v1/sync/push bodies.
 * Checks on every decoded push: the bounds the header promises (device_id, op count, strictly
 * increasing UUIDv7 op ids, times in range, data text within MW_OP_DATA_MAX, every string
 * valid UTF-8 within its bound, a message on every rejected op). Then the round trip: the
 * accepted ops are encoded with mw_proto_push_encode, decoded again, and must come back field
 * for field; encoding that second decode must give the same bytes as the first encoding. */
#include "buf.h"
#include "fuzz.h"
#include "json.h"
#include "proto.h"
#include "timestamp.h"

#include <string.h>

static void check_text(const char *s, size_t min, size_t max, bool optional)
{
    if (!s) {
        FUZZ_CHECK(optional);
        return;
    }
    size_t n = strlen(s);
    FUZZ_CHECK(n >= min && n <= max);
    FUZZ_CHECK(mw_json_utf8_valid(s, n));
}

static void check_json_object(const char *s, bool optional)
{
    if (!s) {
        FUZZ_CHECK(optional);
        return;
    }
    struct mw_json_info info;
    struct mw_error err = {0};
    FUZZ_CHECK_OK(mw_json_check(s, strlen(s), MW_JSON_DEPTH_MAX, &info, &err), &err);
    FUZZ_CHECK(info.root_type == cJSON_Object && !info.has_nul);
}

static bool same_text(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* The typed fields of an accepted op, which the decoder promises are within bounds. */
static void check_typed(const struct mw_op *op)
{
    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST:
        check_text(op->u.adjust.sku, 1, MW_SKU_MAX, false);
        FUZZ_CHECK(op->u.adjust.delta != 0);
        check_text(op->u.adjust.reason, 0, MW_FREE_TEXT_MAX, true);
        break;
    case MW_OP_INVENTORY_COUNT:
        check_text(op->u.count.sku, 1, MW_SKU_MAX, false);
        FUZZ_CHECK(op->u.count.counted >= 0);
        break;
    case MW_OP_INVENTORY_RELOCATE:
        check_text(op->u.relocate.sku, 1, MW_SKU_MAX, false);
        FUZZ_CHECK(op->u.relocate.to_location_id > 0);
        break;
    case MW_OP_INVENTORY_RECEIVE:
        check_text(op->u.receive.sku, 1, MW_SKU_MAX, false);
        check_text(op->u.receive.name, 1, MW_ITEM_NAME_MAX, false);
        FUZZ_CHECK(op->u.receive.location_id > 0 && op->u.receive.quantity > 0);
        check_text(op->u.receive.description, 0, MW_FREE_TEXT_MAX, true);
        break;
    case MW_OP_INTERACTION_RECORD:
        check_text(op->u.interaction.action, 1, MW_ACTION_MAX, false);
        check_text(op->u.interaction.target_entity_id, 0, MW_ENTITY_ID_MAX, true);
        check_text(op->u.interaction.target_entity_type, 0, MW_ENTITY_TYPE_MAX, true);
        check_json_object(op->u.interaction.metadata, true);
        break;
    case MW_OP_ALLOCATION_RECORD:
        check_text(op->u.allocation.sku, 1, MW_SKU_MAX, false);
        FUZZ_CHECK(op->u.allocation.predicted_need >= 0);
        check_text(op->u.allocation.override_reason, 0, MW_FREE_TEXT_MAX, true);
        if (op->u.allocation.manual_override)
            FUZZ_CHECK(op->u.allocation.override_reason != NULL);
        break;
    case MW_OP_EVENT_RECORD:
        check_text(op->u.event.source_system, 1, MW_SOURCE_SYSTEM_MAX, false);
        FUZZ_CHECK(op->u.event.event_type != NULL);
        check_json_object(op->u.event.details, false);
        break;
    case MW_OP_UNKNOWN:
        FUZZ_CHECK(op->type != MW_OP_UNKNOWN); /* accepted ops have a known type */
    }
}

static void check_same_typed(const struct mw_op *a, const struct mw_op *b)
{
    switch (a->type) {
    case MW_OP_INVENTORY_ADJUST:
        FUZZ_CHECK(same_text(a->u.adjust.sku, b->u.adjust.sku));
        FUZZ_CHECK(a->u.adjust.delta == b->u.adjust.delta);
        FUZZ_CHECK(same_text(a->u.adjust.reason, b->u.adjust.reason));
        break;
    case MW_OP_INVENTORY_COUNT:
        FUZZ_CHECK(same_text(a->u.count.sku, b->u.count.sku));
        FUZZ_CHECK(a->u.count.counted == b->u.count.counted);
        break;
    case MW_OP_INVENTORY_RELOCATE:
        FUZZ_CHECK(same_text(a->u.relocate.sku, b->u.relocate.sku));
        FUZZ_CHECK(a->u.relocate.to_location_id == b->u.relocate.to_location_id);
        break;
    case MW_OP_INVENTORY_RECEIVE:
        FUZZ_CHECK(same_text(a->u.receive.sku, b->u.receive.sku));
        FUZZ_CHECK(same_text(a->u.receive.name, b->u.receive.name));
        FUZZ_CHECK(a->u.receive.location_id == b->u.receive.location_id);
        FUZZ_CHECK(a->u.receive.quantity == b->u.receive.quantity);
        FUZZ_CHECK(same_text(a->u.receive.description, b->u.receive.description));
        break;
    case MW_OP_INTERACTION_RECORD:
        FUZZ_CHECK(same_text(a->u.interaction.action, b->u.interaction.action));
        FUZZ_CHECK(same_text(a->u.interaction.target_entity_id, b->u.interaction.target_entity_id));
        FUZZ_CHECK(
            same_text(a->u.interaction.target_entity_type, b->u.interaction.target_entity_type));
        FUZZ_CHECK(same_text(a->u.interaction.metadata, b->u.interaction.metadata));
        break;
    case MW_OP_ALLOCATION_RECORD:
        FUZZ_CHECK(same_text(a->u.allocation.sku, b->u.allocation.sku));
        FUZZ_CHECK(a->u.allocation.predicted_need == b->u.allocation.predicted_need);
        FUZZ_CHECK(a->u.allocation.manual_override == b->u.allocation.manual_override);
        FUZZ_CHECK(same_text(a->u.allocation.override_reason, b->u.allocation.override_reason));
        break;
    case MW_OP_EVENT_RECORD:
        FUZZ_CHECK(same_text(a->u.event.source_system, b->u.event.source_system));
        FUZZ_CHECK(same_text(a->u.event.event_type, b->u.event.event_type));
        FUZZ_CHECK(same_text(a->u.event.details, b->u.event.details));
        break;
    case MW_OP_UNKNOWN:
        break;
    }
}

static void check_push(const struct mw_push *p)
{
    size_t dlen = strlen(p->device_id);
    FUZZ_CHECK(dlen >= 1 && dlen <= MW_DEVICE_ID_MAX);
    FUZZ_CHECK(p->n_ops <= MW_OPS_PER_BATCH_MAX);
    for (size_t i = 0; i < p->n_ops; i++) {
        const struct mw_op *op = &p->ops[i];
        FUZZ_CHECK(mw_uuid_v7_time_ms(&op->op_id) >= 0);
        if (i > 0)
            FUZZ_CHECK(mw_uuid_compare(&p->ops[i - 1].op_id, &op->op_id) < 0);
        if (op->type_name)
            check_text(op->type_name, 1, MW_OP_TYPE_MAX, false);
        if (op->data_json) {
            FUZZ_CHECK(op->data_len == strlen(op->data_json));
            FUZZ_CHECK(op->data_len <= MW_OP_DATA_MAX);
        }
        if (op->reject != MW_REJECT_NONE) {
            FUZZ_CHECK(op->reject == MW_REJECT_INVALID || op->reject == MW_REJECT_UNKNOWN_TYPE);
            FUZZ_CHECK(op->reject_msg != NULL && op->reject_msg[0] != '\0');
            continue;
        }
        FUZZ_CHECK(op->reject_msg == NULL);
        FUZZ_CHECK(op->type != MW_OP_UNKNOWN && op->type_name != NULL);
        FUZZ_CHECK(strcmp(op->type_name, mw_proto_op_type_name(op->type)) == 0);
        FUZZ_CHECK(op->at_ms >= MW_TIMESTAMP_MIN_MS && op->at_ms <= MW_TIMESTAMP_MAX_MS);
        FUZZ_CHECK(op->data_json != NULL);
        check_json_object(op->data_json, false);
        check_typed(op);
    }
}

/* Encodes the accepted ops of p into out. MW_OK, or MW_EFULL when they do not fit a batch. */
static enum mw_err encode_accepted(const struct mw_push *p, struct mw_buf *out, size_t *n_out)
{
    struct mw_op *ops = NULL;
    size_t n = 0;
    struct mw_error err = {0};
    if (p->n_ops) {
        ops = calloc(p->n_ops, sizeof(*ops));
        FUZZ_CHECK(ops != NULL);
    }
    for (size_t i = 0; i < p->n_ops; i++) {
        if (p->ops[i].reject == MW_REJECT_NONE)
            ops[n++] = p->ops[i];
    }
    enum mw_err rc = mw_proto_push_encode(p->device_id, &p->batch_id, ops, n, out, &err);
    free(ops);
    /* An op the server accepted must be one the agent could have sent. */
    FUZZ_CHECK(rc == MW_OK || rc == MW_EFULL);
    *n_out = n;
    return rc;
}

/* The same decode with one allocation failing: MW_ENOMEM or the first outcome, nothing leaked. */
static void decode_without_memory(const uint8_t *data, size_t size, enum mw_err first)
{
    struct mw_push *p = NULL;
    struct mw_error err = {0};
    mw_mem_fail_at(fuzz_fail_point(data, size));
    enum mw_err rc = mw_proto_push_decode((const char *)data, size, &p, &err);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    FUZZ_CHECK(rc == first || (fired && rc == MW_ENOMEM));
    FUZZ_CHECK((rc == MW_OK) == (p != NULL));
    mw_proto_push_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_push *p = (struct mw_push *)(uintptr_t)1;
    struct mw_error err = {0};
    enum mw_err rc = mw_proto_push_decode((const char *)data, size, &p, &err);
    decode_without_memory(data, size, rc);
    if (rc != MW_OK) {
        FUZZ_CHECK(p == NULL);
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(p != NULL);
    check_push(p);

    struct mw_buf enc1;
    struct mw_buf enc2;
    mw_buf_init(&enc1, MW_PUSH_BODY_MAX);
    mw_buf_init(&enc2, MW_PUSH_BODY_MAX);
    size_t n = 0;
    if (encode_accepted(p, &enc1, &n) == MW_OK) {
        struct mw_push *q = NULL;
        rc = mw_proto_push_decode((const char *)enc1.data, enc1.len, &q, &err);
        FUZZ_CHECK_OK(rc, &err);
        FUZZ_CHECK(strcmp(q->device_id, p->device_id) == 0);
        FUZZ_CHECK(mw_uuid_compare(&q->batch_id, &p->batch_id) == 0);
        FUZZ_CHECK(q->n_ops == n);
        size_t j = 0;
        for (size_t i = 0; i < p->n_ops; i++) {
            const struct mw_op *a = &p->ops[i];
            if (a->reject != MW_REJECT_NONE)
                continue;
            const struct mw_op *b = &q->ops[j++];
            FUZZ_CHECK(b->reject == MW_REJECT_NONE);
            FUZZ_CHECK(mw_uuid_compare(&a->op_id, &b->op_id) == 0);
            FUZZ_CHECK(mw_uuid_compare(&a->correlation_id, &b->correlation_id) == 0);
            FUZZ_CHECK(mw_uuid_compare(&a->user_id, &b->user_id) == 0);
            FUZZ_CHECK(a->at_ms == b->at_ms);
            FUZZ_CHECK(a->type == b->type);
            FUZZ_CHECK(a->data_len == b->data_len);
            FUZZ_CHECK(strcmp(a->data_json, b->data_json) == 0);
            check_same_typed(a, b);
        }
        size_t n2 = 0;
        FUZZ_CHECK(encode_accepted(q, &enc2, &n2) == MW_OK);
        FUZZ_CHECK(n2 == n);
        FUZZ_CHECK(enc1.len == enc2.len && memcmp(enc1.data, enc2.data, enc1.len) == 0);
        mw_proto_push_free(q);
    }
    mw_buf_free(&enc2);
    mw_buf_free(&enc1);
    mw_proto_push_free(p);
    return 0;
}
