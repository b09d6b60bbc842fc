-- 010: pair_days, an exact daily rollup of flow_windows above pair_hours (009), for the console ranges of days (issue 13).
-- (No apostrophes in these comments: pipeline/clickhouse/columns.py would read one as a string literal.)
--
-- The same as pair_hours one level up: one row per (day, src_subnet -> dst_subnet) after merges, the sums
-- of the pair windows whose window_start falls in the day, as INSERTED into flow_windows, plus
--   rows  = how many flow_windows rows were inserted for the pair in the day;
--   slots = a bit mask of the 10-minute slots of the day at which those windows started
--           (bit s = the window started in minutes 10 s to 10 s + 9 of the day; 144 slots in a UInt256).
-- A pair-day is CLEAN when rows = bitCount(slots) and placement_min = placement_max: every row started in
-- a slot of its own (no window landed twice; windows shorter than 10 minutes share slots and only make the
-- day look dirty) and the pair kept one placement in the day. A clean day holds only clean hours.
-- The named queries read, for each pair (schemas/queries/fragments/pair_parts.sql):
--   the clean full days of the range here, the clean full hours of the rest (the partial days at its edges,
--   the dirty days) from pair_hours, and the windows of everything else from flow_windows FINAL.
-- Over 30 days of 1,000 pairs a reader merges 30,000 rows here instead of 720,000 in pair_hours.
--
-- Fed by its own materialized view on flow_windows (not on pair_hours: a view on pair_hours would see
-- its insert blocks, not its merged rows, and could not tell a dirty day). The sink inserts with
-- deduplicate_blocks_in_dependent_materialized_views, so a retried batch lands once here as well.
-- The backfill copies what flow_windows holds when the step runs (rows as inserted, no FINAL); a window
-- inserted between the view and the backfill is counted twice: that pair-day is dirty, still exact.
CREATE TABLE IF NOT EXISTS pair_days
(
    day             DateTime('UTC')                                    COMMENT 'toStartOfDay(window_start)',
    src_subnet      LowCardinality(String),
    dst_subnet      LowCardinality(String),
    src_az          SimpleAggregateFunction(any, LowCardinality(String)),
    dst_az          SimpleAggregateFunction(any, LowCardinality(String)),
    src_vpc         SimpleAggregateFunction(any, LowCardinality(String)),
    dst_vpc         SimpleAggregateFunction(any, LowCardinality(String)),
    placement_min   SimpleAggregateFunction(min, UInt64)               COMMENT 'min and max of cityHash64(src_az, dst_az, src_vpc, dst_vpc)',
    placement_max   SimpleAggregateFunction(max, UInt64),
    bytes           SimpleAggregateFunction(sum, UInt64),
    retransmissions SimpleAggregateFunction(sum, UInt64),
    timeouts        SimpleAggregateFunction(sum, UInt64),
    flows           SimpleAggregateFunction(sum, UInt64),
    rtt_count       SimpleAggregateFunction(sum, UInt64),
    rtt_sum_us      SimpleAggregateFunction(sum, UInt64),
    rtt_hist        SimpleAggregateFunction(sumMap, Map(UInt16, UInt64)) COMMENT 'merged RTT histogram (as flow_windows.rtt_hist)',
    rows            SimpleAggregateFunction(sum, UInt64)               COMMENT 'flow_windows rows inserted',
    slots           SimpleAggregateFunction(groupBitOr, UInt256)       COMMENT 'bit s set: a window started in the 10-minute slot s of the day'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, src_subnet, dst_subnet)
SETTINGS min_age_to_force_merge_seconds = 3600,
         non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS pair_days_mv TO pair_days AS
SELECT
    toStartOfDay(window_start) AS day,
    src_subnet, dst_subnet,
    any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
    min(cityHash64(flow_windows.src_az, flow_windows.dst_az, flow_windows.src_vpc, flow_windows.dst_vpc)) AS placement_min,
    max(cityHash64(flow_windows.src_az, flow_windows.dst_az, flow_windows.src_vpc, flow_windows.dst_vpc)) AS placement_max,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    sum(flows) AS flows,
    sum(rtt_count) AS rtt_count,
    sum(rtt_sum_us) AS rtt_sum_us,
    sumMap(rtt_hist) AS rtt_hist,
    toUInt64(count()) AS rows,
    groupBitOr(bitShiftLeft(toUInt256(1), intDiv(toHour(window_start) * 60 + toMinute(window_start), 10))) AS slots
FROM flow_windows
GROUP BY day, src_subnet, dst_subnet;

INSERT INTO pair_days
SELECT
    toStartOfDay(window_start) AS day,
    src_subnet, dst_subnet,
    any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
    min(cityHash64(flow_windows.src_az, flow_windows.dst_az, flow_windows.src_vpc, flow_windows.dst_vpc)) AS placement_min,
    max(cityHash64(flow_windows.src_az, flow_windows.dst_az, flow_windows.src_vpc, flow_windows.dst_vpc)) AS placement_max,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    sum(flows) AS flows,
    sum(rtt_count) AS rtt_count,
    sum(rtt_sum_us) AS rtt_sum_us,
    sumMap(rtt_hist) AS rtt_hist,
    toUInt64(count()) AS rows,
    groupBitOr(bitShiftLeft(toUInt256(1), intDiv(toHour(window_start) * 60 + toMinute(window_start), 10))) AS slots
FROM flow_windows
GROUP BY day, src_subnet, dst_subnet
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0
