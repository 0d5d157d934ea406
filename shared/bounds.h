/* bounds.h - every bound on untrusted input, in one place, each with the reason for its size.
 * Checked before any work is done on the input. Changing one is a protocol decision: the
 * server answers past it with 413 / 400 and the agent never builds anything larger.
 * Thread safety: constants only. */
#ifndef MIDWAY_BOUNDS_H
#define MIDWAY_BOUNDS_H

/* A push body, after gzip inflation. 500 ops of a few hundred bytes each is ~250 KiB; 8 MiB
 * leaves room for large event details while keeping one request's memory small. */
#define MW_PUSH_BODY_MAX (8u * 1024u * 1024u)

/* Ops in one push. The agent sends 500 by default; 5,000 bounds the server's per-batch
 * arrays and keeps one transaction's lock time short. */
#define MW_OPS_PER_BATCH_MAX 5000u

/* Nesting of JSON in a push (envelope 3 levels + data). Deeper input is hostile: it costs
 * stack in the parser and in PostgreSQL's jsonb code for no business meaning. */
#define MW_JSON_DEPTH_MAX 16

/* Text fields. Each matches the width of the column it lands in (seed schema), so a value
 * that passes here never fails a VARCHAR(n) in PostgreSQL and aborts a whole batch. */
#define MW_DEVICE_ID_MAX      64u  /* devices.device_id text form (a UUID is 36) */
#define MW_OP_TYPE_MAX        32u  /* "inventory.relocate" is the longest known type */
#define MW_SKU_MAX            100u /* Inventory.item_sku VARCHAR(100) */
#define MW_ITEM_NAME_MAX      255u /* Inventory.item_name VARCHAR(255) */
#define MW_USERNAME_MAX       255u /* Users.username VARCHAR(255) */
#define MW_ACTION_MAX         100u /* UserInteraction.action VARCHAR(100) */
#define MW_ENTITY_ID_MAX      255u /* UserInteraction.target_entity_id VARCHAR(255) */
#define MW_ENTITY_TYPE_MAX    50u  /* UserInteraction.target_entity_type VARCHAR(50) */
#define MW_SOURCE_SYSTEM_MAX  50u  /* IntegrationEvent.source_system VARCHAR(50) */
#define MW_LOCATION_NAME_MAX  255u /* Locations.location_name VARCHAR(255) */
#define MW_FREE_TEXT_MAX      4096u /* reasons, descriptions, override reasons (TEXT columns) */

/* Serialized JSON of one op's data: details/metadata end up in JSONB; 64 KiB is far above any
 * scanner payload and keeps a single op from dominating a batch. */
#define MW_OP_DATA_MAX (64u * 1024u)

/* A config file. Settings are a few dozen lines; a megabyte means a wrong file. */
#define MW_CONF_FILE_MAX (1024u * 1024u)
/* One config line, and one key. */
#define MW_CONF_LINE_MAX 4096u
#define MW_CONF_KEY_MAX  64u

/* Log strings taken from input are cut to this many bytes, so a hostile SKU cannot flood. */
#define MW_LOG_QUOTE_MAX 128u

/* RFC 3339 text of one instant: "YYYY-MM-DDTHH:MM:SS" (19) + "." and at most 9 fraction
 * digits (10) + "+HH:MM" (6). Anything longer is not a timestamp, so it is refused unread. */
#define MW_TIMESTAMP_TEXT_MAX 35u

/* JSON documents and the protocol codec (json.h, proto.h). */

/* The largest JSON document either side parses: a push body, its results, a pull page. */
#define MW_JSON_DOC_MAX (8u * 1024u * 1024u)
/* JSON values (scalars and containers) in one document. cJSON spends ~100 bytes per value, so
 * "[0,0,0,...]" would cost 50x its size in memory; 131,072 values caps a parse tree near 13 MiB
 * while a full batch of typical ops needs about half of it. Encoders end a batch or a page
 * before this bound, so our own peer never sends a document the other side refuses. */
#define MW_JSON_NODES_MAX 131072u
/* Characters of one JSON number. cJSON 1.7.15 copies a number into a 64-byte stack buffer and
 * silently stops after 63 characters, so a longer number would parse differently there. */
#define MW_JSON_NUMBER_MAX 63u

/* A pull page, as the server writes it and the agent reads it. */
#define MW_PULL_BODY_MAX (8u * 1024u * 1024u)
/* Changes in one pull page: the same bound as ops in a push, for the same reason. */
#define MW_PULL_LIMIT_MAX 5000u
/* The opaque pull cursor: a short printable token ([A-Za-z0-9._:-]); a snapshot starts at "0". */
#define MW_CURSOR_MAX 128u

/* Error codes on the wire (reject codes, the error body): short lower-case tokens. */
#define MW_ERROR_CODE_MAX 64u
/* Human text of a rejection or an error body. Encoders cut longer text at a character
 * boundary, so 5,000 results with messages stay far below MW_JSON_DOC_MAX. */
#define MW_RESULT_MSG_MAX 512u

/* Reference data in pull pages whose width the seed schema leaves to us. The agent only caches
 * it; the bounds keep a broken or hostile server from growing the agent's memory. */
#define MW_PERSON_NAME_MAX      255u /* Users.first_name, Users.last_name */
#define MW_ROLE_NAME_MAX        100u /* Roles.role_name */
#define MW_PERMISSION_NAME_MAX  100u /* one permission: an op type or an admin right */
#define MW_USER_ROLES_MAX       64u  /* roles of one user */
#define MW_ROLE_PERMISSIONS_MAX 256u /* permissions of one role */

#endif
