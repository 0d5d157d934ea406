/* limits.h - every bound on untrusted input, in one place, each with the reason for its size.
 * Checked before any work is done on the input. Changing one is a protocol decision: the
 * server answers past it with 413 / 400 and the agent never builds anything larger.
 * Thread safety: constants only. */
#ifndef MIDWAY_LIMITS_H
#define MIDWAY_LIMITS_H

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

#endif
