-- title: Latest dead letters
-- description: The newest refused reports or samples in the range, with where they were read and the start of their payload.
-- params: from DateTime, to DateTime
-- grafana: table
SELECT
    at, reason, stage, ifNull(field, '') AS field, detail,
    source_topic, source_partition, source_offset, sample_index,
    samples, substring(payload, 1, 300) AS payload_head
FROM deadletter FINAL
WHERE at >= {from:DateTime} AND at < {to:DateTime}
ORDER BY at DESC
LIMIT 200
