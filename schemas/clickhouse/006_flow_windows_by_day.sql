-- 006: flow_windows partitioned by DAY instead of month (issue 13: console pages < 300 ms).
--
-- Why. Every console page reads flow_windows FINAL over a time range. With monthly
-- partitions and the pair-first sort key, a range of hours still reads (and FINAL still
-- merges) the whole month: the sort key cannot prune on window_start, and FINAL merges
-- every part of a partition that holds the range. With one partition per day:
--   * a range reads only its days' partitions (partition pruning on window_start);
--   * FINAL works per partition (ClickHouse decides it automatically: the partition key is a
--     function of the sort key, setting enable_automatic_decision_for_merging_across_partitions_for_final),
--     and a day partition merged into one part is read without any FINAL merging at all;
--   * min_age_to_force_merge_seconds merges a day's parts into one once they are all an hour
--     old, so only today's (and a just-ended day's) partitions need FINAL's merging.
-- benchmarks/console.py measures both layouts (README: "benchmarks.console").
--
-- Exactness is unchanged: still a ReplacingMergeTree(closed_at) on the same sort key, and the
-- partition (toDate(window_start)) is a function of the sort key, so two copies of one window
-- always share a partition and collapse there; reads keep FINAL.
--
-- How it applies to a database with data: a new table with the new layout, a copy of every
-- row, then EXCHANGE TABLES (atomic) and the old table dropped. The views that read
-- flow_windows (flow_windows_final, az_traffic) name it and follow the exchange. Run it with
-- the sinks stopped (flowmon applies migrations before its sink starts): a window inserted
-- into the old table between the copy and the exchange would be dropped with it. Disk: the
-- copy needs as much space again as flow_windows while it runs.
CREATE TABLE IF NOT EXISTS flow_windows_by_day AS flow_windows
ENGINE = ReplacingMergeTree(closed_at)
PARTITION BY toDate(window_start)
ORDER BY (src_subnet, dst_subnet, window_s, window_start)
SETTINGS non_replicated_deduplication_window = 1000,
         min_age_to_force_merge_seconds = 3600,
         min_age_to_force_merge_on_partition_only = 1;

INSERT INTO flow_windows_by_day SELECT * FROM flow_windows
SETTINGS max_partitions_per_insert_block = 0, insert_deduplicate = 0;

EXCHANGE TABLES flow_windows AND flow_windows_by_day;

DROP TABLE IF EXISTS flow_windows_by_day;
