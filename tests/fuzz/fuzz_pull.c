/* fuzz_pull.c - mw_proto_pull_decode, the agent's reading of a GET /v1/sync/pull page (what
 * a broken or hostile server could send it).
 * Checks on every decoded page: the cursor is valid, the change count is within
 * MW_PULL_LIMIT_MAX, every field of every known change is within the bound the header
 * promises. Then the round trip: the known changes are encoded with mw_proto_pull_encode with
 * the same cursor and has_more, decoded again and compared field for field; encoding that
 * second decode gives the same bytes as the first encoding. Each input is also decoded once
 * more with an allocation failing (fuzz_fail_point). */
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

static void check_names(const char *const *names, size_t n, size_t n_max, size_t len_max)
{
    FUZZ_CHECK(n <= n_max);
    FUZZ_CHECK(n == 0 || names != NULL);
    for (size_t i = 0; i < n; i++)
        check_text(names[i], 1, len_max, false);
}

static void check_change(const struct mw_change *c)
{
    if (c->kind == MW_CHANGE_OTHER)
        return;
    FUZZ_CHECK(c->op == MW_CHANGE_UPSERT || c->op == MW_CHANGE_DELETE);
    bool up = c->op == MW_CHANGE_UPSERT;
    switch (c->kind) {
    case MW_CHANGE_LOCATION:
        FUZZ_CHECK(c->u.location.location_id > 0);
        if (up) {
            check_text(c->u.location.name, 1, MW_LOCATION_NAME_MAX, false);
            check_text(c->u.location.address, 0, MW_FREE_TEXT_MAX, true);
        }
        break;
    case MW_CHANGE_ITEM:
        check_text(c->u.item.sku, 1, MW_SKU_MAX, false);
        if (up) {
            check_text(c->u.item.name, 1, MW_ITEM_NAME_MAX, false);
            FUZZ_CHECK(c->u.item.location_id > 0 && c->u.item.quantity >= 0);
            check_text(c->u.item.description, 0, MW_FREE_TEXT_MAX, true);
            FUZZ_CHECK(c->u.item.updated_at_ms >= MW_TIMESTAMP_MIN_MS &&
                       c->u.item.updated_at_ms <= MW_TIMESTAMP_MAX_MS);
        }
        break;
    case MW_CHANGE_USER:
        if (up) {
            check_text(c->u.user.username, 1, MW_USERNAME_MAX, false);
            check_text(c->u.user.first_name, 0, MW_PERSON_NAME_MAX, true);
            check_text(c->u.user.last_name, 0, MW_PERSON_NAME_MAX, true);
            check_names(c->u.user.roles, c->u.user.n_roles, MW_USER_ROLES_MAX, MW_ROLE_NAME_MAX);
        }
        break;
    case MW_CHANGE_PERMISSION:
        check_text(c->u.permission.role, 1, MW_ROLE_NAME_MAX, false);
        if (up)
            check_names(c->u.permission.permissions, c->u.permission.n_permissions,
                        MW_ROLE_PERMISSIONS_MAX, MW_PERMISSION_NAME_MAX);
        break;
    case MW_CHANGE_OTHER:
        break;
    }
}

static bool same_text(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static void check_same_names(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    FUZZ_CHECK(na == nb);
    for (size_t i = 0; i < na; i++)
        FUZZ_CHECK(strcmp(a[i], b[i]) == 0);
}

static void check_same(const struct mw_change *a, const struct mw_change *b)
{
    FUZZ_CHECK(a->kind == b->kind && a->op == b->op);
    bool up = a->op == MW_CHANGE_UPSERT;
    switch (a->kind) {
    case MW_CHANGE_LOCATION:
        FUZZ_CHECK(a->u.location.location_id == b->u.location.location_id);
        if (up) {
            FUZZ_CHECK(same_text(a->u.location.name, b->u.location.name));
            FUZZ_CHECK(same_text(a->u.location.address, b->u.location.address));
            FUZZ_CHECK(a->u.location.is_active == b->u.location.is_active);
        }
        break;
    case MW_CHANGE_ITEM:
        FUZZ_CHECK(same_text(a->u.item.sku, b->u.item.sku));
        if (up) {
            FUZZ_CHECK(mw_uuid_compare(&a->u.item.resource_id, &b->u.item.resource_id) == 0);
            FUZZ_CHECK(same_text(a->u.item.name, b->u.item.name));
            FUZZ_CHECK(a->u.item.location_id == b->u.item.location_id);
            FUZZ_CHECK(a->u.item.quantity == b->u.item.quantity);
            FUZZ_CHECK(same_text(a->u.item.description, b->u.item.description));
            FUZZ_CHECK(a->u.item.updated_at_ms == b->u.item.updated_at_ms);
        }
        break;
    case MW_CHANGE_USER:
        FUZZ_CHECK(mw_uuid_compare(&a->u.user.user_id, &b->u.user.user_id) == 0);
        if (up) {
            FUZZ_CHECK(same_text(a->u.user.username, b->u.user.username));
            FUZZ_CHECK(same_text(a->u.user.first_name, b->u.user.first_name));
            FUZZ_CHECK(same_text(a->u.user.last_name, b->u.user.last_name));
            check_same_names(a->u.user.roles, a->u.user.n_roles, b->u.user.roles,
                             b->u.user.n_roles);
        }
        break;
    case MW_CHANGE_PERMISSION:
        FUZZ_CHECK(same_text(a->u.permission.role, b->u.permission.role));
        if (up)
            check_same_names(a->u.permission.permissions, a->u.permission.n_permissions,
                             b->u.permission.permissions, b->u.permission.n_permissions);
        break;
    case MW_CHANGE_OTHER:
        break;
    }
}

/* Encodes the known changes of p (kinds this version does not know are skipped, as the agent
 * skips them). Every change the decoder accepted must be one the server could have written. */
static size_t encode_known(const struct mw_pull *p, struct mw_buf *out)
{
    struct mw_change *known = NULL;
    size_t n = 0;
    struct mw_error err = {0};
    if (p->n_changes) {
        known = calloc(p->n_changes, sizeof(*known));
        FUZZ_CHECK(known != NULL);
    }
    for (size_t i = 0; i < p->n_changes; i++) {
        if (p->changes[i].kind != MW_CHANGE_OTHER)
            known[n++] = p->changes[i];
    }
    enum mw_err rc = mw_proto_pull_encode(known, n, p->cursor, p->has_more, out, &err);
    FUZZ_CHECK_OK(rc, &err);
    free(known);
    return n;
}

/* The same decode with one allocation failing: MW_ENOMEM or the first outcome, nothing leaked. */
static void decode_without_memory(const uint8_t *data, size_t size, enum mw_err first)
{
    struct mw_pull *p = NULL;
    struct mw_error err = {0};
    mw_mem_fail_at(fuzz_fail_point(data, size));
    enum mw_err rc = mw_proto_pull_decode((const char *)data, size, &p, &err);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    FUZZ_CHECK(rc == first || (fired && rc == MW_ENOMEM));
    FUZZ_CHECK((rc == MW_OK) == (p != NULL));
    mw_proto_pull_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_pull *p = (struct mw_pull *)(uintptr_t)1;
    struct mw_error err = {0};
    enum mw_err rc = mw_proto_pull_decode((const char *)data, size, &p, &err);
    decode_without_memory(data, size, rc);
    if (rc != MW_OK) {
        FUZZ_CHECK(p == NULL);
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(p != NULL);
    FUZZ_CHECK(mw_proto_cursor_valid(p->cursor));
    FUZZ_CHECK(p->n_changes <= MW_PULL_LIMIT_MAX);
    for (size_t i = 0; i < p->n_changes; i++)
        check_change(&p->changes[i]);

    struct mw_buf enc1;
    struct mw_buf enc2;
    mw_buf_init(&enc1, MW_PULL_BODY_MAX);
    mw_buf_init(&enc2, MW_PULL_BODY_MAX);
    size_t n = encode_known(p, &enc1);

    struct mw_pull *q = NULL;
    rc = mw_proto_pull_decode((const char *)enc1.data, enc1.len, &q, &err);
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(q->n_changes == n);
    FUZZ_CHECK(strcmp(q->cursor, p->cursor) == 0 && q->has_more == p->has_more);
    size_t j = 0;
    for (size_t i = 0; i < p->n_changes; i++) {
        if (p->changes[i].kind != MW_CHANGE_OTHER)
            check_same(&p->changes[i], &q->changes[j++]);
    }
    FUZZ_CHECK(encode_known(q, &enc2) == n);
    FUZZ_CHECK(enc1.len == enc2.len && memcmp(enc1.data, enc2.data, enc1.len) == 0);

    mw_proto_pull_free(q);
    mw_buf_free(&enc2);
    mw_buf_free(&enc1);
    mw_proto_pull_free(p);
    return 0;
}
