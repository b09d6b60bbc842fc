-- 009: pair_hours, an exact hourly rollup of flow_windows for the console long ranges (issue 13).
-- (No apostrophes in these comments: pipeline/clickhouse/columns.py would read one as a string literal.)
--
-- One row per (hour, src_subnet -> dst_subnet) after merges: the sums of the pair windows whose
-- window_start falls in the hour, as they were INSERTED into flow_windows (not collapsed: a window
-- landed twice is counted twice here), plus what tells whether that happened:
--   rows    = how many flow_windows rows were inserted for the pair in the hour;
--   windows = a bit mask of the minutes of the hour at which those windows started (bit m = minute m).
-- A pair-hour is CLEAN when rows = bitCount(windows) and placement_min = placement_max: every row
-- started at a minute of its own, so no window landed twice (distinct windows that share a minute only
-- make it look dirty), and the pair kept one placement (az, vpc) in the hour. Then its sums are exactly
-- what flow_windows FINAL sums, and src_az ... dst_vpc are that placement. Otherwise it is DIRTY (a
-- re-emitted window, a re-sent batch that insert deduplication did not drop, a backfill that ran twice,
-- a subnet that moved) and readers take that pair-hour from flow_windows FINAL instead. The named
-- queries (schemas/queries/) read the clean full hours of their range here, and the rest (the partial
-- hours at the edges of the range, the dirty pair-hours) from flow_windows FINAL, then aggregate both:
--   SELECT ... FROM pair_hours FINAL WHERE rows = bitCount(windows) AND placement_min = placement_max
-- (FINAL: the AggregatingMergeTree merges the rows of one key eventually; FINAL merges them at read.
-- As for flow_windows (006), a day of parts all an hour old is merged into one part, which FINAL then
-- reads without merging: only the last hours cost FINAL merging. The readers cost grows with the
-- unmerged parts: benchmarks/README.md, benchmarks.console.)
--
-- The materialized view aggregates each block inserted into flow_windows (GROUP BY in its SELECT).
-- The backfill copies what flow_windows holds when the step runs (no FINAL: rows are counted as
-- inserted). A window inserted between the creation of the view and the backfill is counted twice,
-- and so is everything if the backfill runs again: those pair-hours are dirty, still exact.
CREATE TABLE IF NOT EXISTS pair_hours
(
    hour            DateTime('UTC')                                    COMMENT 'toStartOfHour(window_start)',
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
    windows         SimpleAggregateFunction(groupBitOr, UInt64)        COMMENT 'bit m set: a window started at minute m of the hour'
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(hour)
ORDER BY (hour, src_subnet, dst_subnet)
SETTINGS min_age_to_force_merge_seconds = 3600,
         min_age_to_force_merge_on_partition_only = 1,
         non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS pair_hours_mv TO pair_hours AS
SELECT
    toStartOfHour(window_start) AS hour,
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
    groupBitOr(bitShiftLeft(toUInt64(1), toMinute(window_start))) AS windows
FROM flow_windows
GROUP BY hour, src_subnet, dst_subnet;

INSERT INTO pair_hours
SELECT
    toStartOfHour(window_start) AS hour,
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
    groupBitOr(bitShiftLeft(toUInt64(1), toMinute(window_start))) AS windows
FROM flow_windows
GROUP BY hour, src_subnet, dst_subnet
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0
