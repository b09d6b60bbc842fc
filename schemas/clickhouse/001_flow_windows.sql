-- 001: closed windows, one row per (src_subnet -> dst_subnet, window).
--
-- Source: topic flow-windows-v1, schema schemas/wire/flow_window.v1.json (every field
-- is a column; window_start is stored as DateTime('UTC'), closed_at as DateTime64(3)).
--
-- Idempotency. A window can be emitted twice after a worker crash (an identical copy),
-- and the sink may retry a batch. Two layers keep one copy:
--   1. insert deduplication: the sink sends every batch with an
--      insert_deduplication_token derived from its content, and the table keeps the
--      tokens of its last `non_replicated_deduplication_window` inserted blocks, so the
--      same batch inserted again is dropped at insert time (exact, immediate);
--   2. ReplacingMergeTree on the window key: any other duplicate (the same window in
--      two different batches) collapses to one row when parts merge, keeping the row
--      with the greatest closed_at (the version column).
-- Merges happen "eventually", so EXACT TOTALS ARE READ WITH FINAL:
--   SELECT sum(bytes) FROM flow_windows FINAL WHERE ...
-- or through the view flow_windows_final below (dashboards, ad-hoc SQL). A plain
-- SELECT on flow_windows may count a duplicate that has not been merged yet.
--
-- Dedup happens within a partition; the partition (month of window_start) is a
-- function of the sort key, so two copies of one window always share a partition.
CREATE TABLE IF NOT EXISTS flow_windows
(
    version         UInt8,
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
    bytes           UInt64                     COMMENT 'bytes_sent + bytes_received as the reporting side saw it',
    retransmissions UInt64,
    timeouts        UInt64,
    flows           UInt64                     COMMENT 'flow-intervals, not distinct connections',
    samples         UInt64,
    hosts           UInt32                     COMMENT 'distinct reporting instances (exact)',
    rtt_count       UInt64,
    rtt_sum_us      UInt64,
    rtt_mean_us     Float64,
    rtt_p50_us      Float64,
    rtt_p90_us      Float64,
    rtt_p99_us      Float64,
    rtt_hist        Map(UInt16, UInt64)        COMMENT 'bucket floor(16*log2(rtt_us)) -> count; merge with sumMap',
    closed_at       DateTime64(3, 'UTC')       COMMENT 'wall clock of the close (informational; version column)'
)
ENGINE = ReplacingMergeTree(closed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (src_subnet, dst_subnet, window_s, window_start)
SETTINGS non_replicated_deduplication_window = 1000;

-- Exact view for dashboards: one row per window, duplicates collapsed.
CREATE VIEW IF NOT EXISTS flow_windows_final AS
SELECT * FROM flow_windows FINAL;
