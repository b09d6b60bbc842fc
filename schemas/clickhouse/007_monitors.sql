-- 007: monitors (named scopes: local resources -> remote resources), evaluated live.
-- (No apostrophes in these comments: pipeline/clickhouse/columns.py would read one as a string literal.)
--
-- monitors: the definitions, landed from the compacted topic flow-monitors-v1 (key = name,
-- value = schemas/wire/flow_monitor.v1.json, no value = deleted). One row per message;
-- `updated` is the Kafka timestamp of the message, so ReplacingMergeTree(updated) keeps
-- the latest state of each monitor (a deletion is a row with deleted = 1). Live monitors:
--   SELECT * FROM monitors FINAL WHERE deleted = 0
--
-- monitor_windows: one row per (monitor, subnet pair, window) from topic
-- flow-monitor-windows-v1 (flow_monitor_window.v1.json): the counters and RTT histogram
-- of the pair window, under the name of the monitor, for every pair window that fell in
-- the monitor when it closed. The series of a monitor = sums per window_start
-- (sumMap(rtt_hist) for the merged histogram); read WITH FINAL for exact totals (a
-- re-emitted window collapses on the key, the latest closed_at wins).
--
-- monitor_nhi: one row per (monitor, NHI period) from topic flow-monitor-nhi-v1
-- (flow_monitor_nhi.v1.json): the degraded periods of the NHI scopes that touch the
-- monitor; a period is written when it starts (end NULL) and when it ends, the latest
-- `updated` wins.
CREATE TABLE IF NOT EXISTS monitors
(
    version     UInt8,
    name        String,
    definition  String                  COMMENT 'the definition as published (JSON); empty when deleted',
    local       Array(String)           COMMENT 'kind:id of the local resources',
    remote      Array(String)           COMMENT 'kind:id of the remote resources, or the one element any',
    description String,
    deleted     UInt8                   COMMENT '1: deleted (a tombstone on the topic)',
    updated     DateTime64(3, 'UTC')    COMMENT 'Kafka timestamp of the message (version column)'
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY name
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS monitor_windows
(
    version         UInt8,
    monitor         LowCardinality(String),
    src_subnet      LowCardinality(String),
    src_az          LowCardinality(String),
    src_vpc         LowCardinality(String),
    dst_subnet      LowCardinality(String),
    dst_az          LowCardinality(String),
    dst_vpc         LowCardinality(String),
    window_start    DateTime('UTC'),
    window_s        UInt32,
    bytes           UInt64,
    bytes_sent      UInt64,
    bytes_received  UInt64,
    retransmissions UInt64,
    timeouts        UInt64,
    flows           UInt64,
    rtt_count       UInt64,
    rtt_sum_us      UInt64,
    rtt_hist        Map(UInt16, UInt64)     COMMENT 'bucket floor(16*log2(rtt_us)) -> count; merge with sumMap',
    closed_at       DateTime64(3, 'UTC')    COMMENT 'when the pair window closed (version column)'
)
ENGINE = ReplacingMergeTree(closed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (monitor, window_start, src_subnet, dst_subnet)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS monitor_nhi
(
    version    UInt8,
    monitor    LowCardinality(String),
    scope_kind LowCardinality(String)    COMMENT 'az | az_pair | subnet | vpc',
    scope      String,
    status     LowCardinality(String)    COMMENT 'degraded',
    start      DateTime('UTC'),
    end        Nullable(DateTime('UTC')) COMMENT 'NULL while the period lasts',
    element    String                    COMMENT 'blamed element, kind:id',
    updated    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY (monitor, scope_kind, scope, start)
SETTINGS non_replicated_deduplication_window = 1000;
