-- 008: per-instance totals of every closed window, one row per (instance, src_subnet -> dst_subnet,
-- window), for "workload insights" (top instances by data transferred, retransmissions,
-- timeouts, RTT).
--
-- Source: the `instances` entries of the closed windows (topic flow-windows-v1, schema
-- schemas/wire/flow_window.v1.json): the sink lands each window's entries here in the same
-- batch as the window's flow_windows row, so the two tables always agree: for every window,
-- the sum of a counter over its instances equals the window's (the aggregate stage counts
-- them together). `instance` is the reporting host (it is in src_subnet); bytes =
-- bytes_sent + bytes_received as that host saw them. A window emitted without its instances
-- (opened by an older worker, or too many instances for one message) has no rows here.
--
-- Idempotency as flow_windows (see 001): the sink's insert_deduplication_token per batch,
-- then ReplacingMergeTree(closed_at) on the instance-window key. EXACT TOTALS ARE READ
-- WITH FINAL (or the view instance_windows_final).
CREATE TABLE IF NOT EXISTS instance_windows
(
    instance        LowCardinality(String)     COMMENT 'the reporting instance (host), in src_subnet',
    src_subnet      LowCardinality(String),
    src_az          LowCardinality(String),
    src_vpc         LowCardinality(String),
    dst_subnet      LowCardinality(String),
    dst_az          LowCardinality(String),
    dst_vpc         LowCardinality(String),
    window_start    DateTime('UTC')            COMMENT 'start of the tumbling window (event time)',
    window_s        UInt32                     COMMENT 'window length, seconds',
    bytes_sent      UInt64,
    bytes_received  UInt64,
    bytes           UInt64                     COMMENT 'bytes_sent + bytes_received as this instance saw it',
    retransmissions UInt64,
    timeouts        UInt64,
    flows           UInt64                     COMMENT 'flow-intervals, not distinct connections',
    samples         UInt64,
    rtt_count       UInt64,
    rtt_sum_us      UInt64,
    closed_at       DateTime64(3, 'UTC')       COMMENT 'wall clock of the close of the window (version column)'
)
ENGINE = ReplacingMergeTree(closed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (src_subnet, dst_subnet, window_s, window_start, instance)
SETTINGS non_replicated_deduplication_window = 1000;

-- Exact view: one row per instance-window, duplicates collapsed.
CREATE VIEW IF NOT EXISTS instance_windows_final AS
SELECT * FROM instance_windows FINAL;
