-- 002: dead letters, one row per refused report or refused sample.
--
-- Source: topic flow-deadletter-v1, schema schemas/wire/deadletter.v1.json.
-- source.{topic,partition,offset} are flattened to source_*; the refused value is kept
-- verbatim in `payload`: JSON text when it could be decoded (payload_encoding 'json'),
-- the raw bytes in base64 when it could not ('base64'), '' when absent ('').
--
-- Delivery is at least once: (source_topic, source_partition, source_offset,
-- sample_index) identifies a dead letter, so duplicates collapse in the
-- ReplacingMergeTree (the latest `at` wins) and a retried batch is dropped by its
-- insert_deduplication_token. sample_index is NULL when the whole message was refused
-- (hence allow_nullable_key). No PARTITION BY: two copies of one dead letter may carry
-- different `at` values, and rows only collapse within a partition.
-- Exact counts: SELECT ... FROM deadletter FINAL, or the view deadletter_final.
CREATE TABLE IF NOT EXISTS deadletter
(
    version          UInt8,
    reason           LowCardinality(String)    COMMENT 'malformed_json, missing_field, late, ...',
    field            Nullable(String)          COMMENT 'JSON path of the offending field',
    detail           String,
    stage            LowCardinality(String)    COMMENT 'ingest | aggregate',
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    sample_index     Nullable(Int32)           COMMENT 'NULL: the whole message was refused',
    samples          UInt32                    COMMENT 'how many samples this dead letter stands for',
    payload          String                    COMMENT 'refused value: JSON text, or base64 of raw bytes',
    payload_encoding LowCardinality(String)    COMMENT 'json | base64 | empty when no payload',
    at               DateTime64(3, 'UTC')      COMMENT 'wall clock of the decision'
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (source_topic, source_partition, source_offset, sample_index)
SETTINGS allow_nullable_key = 1, non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS deadletter_final AS
SELECT * FROM deadletter FINAL;
