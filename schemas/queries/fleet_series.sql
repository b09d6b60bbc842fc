-- title: Fleet traffic per window
-- description: Every subnet pair summed, one row per 10-minute window; for a range longer than 48 hours,
-- description: one row per hour instead (time = the start of the hour; a partial hour at either edge of the
-- description: range sums only its windows inside the range). Exact: hourly rows take the clean full hours from
-- description: the rollup pair_hours, the partial hours and the pair-hours where a window landed twice from
-- description: flow_windows FINAL.
-- params: from DateTime, to DateTime
-- grafana: timeseries
-- grafana_panels: bytes; retransmissions; timeouts; rtt_mean_us
WITH
    toStartOfHour(toDateTime({from:DateTime} + 3599, 'UTC')) AS hour_from,
    toStartOfHour(toDateTime({to:DateTime}, 'UTC')) AS hour_to,
    dateDiff('second', {from:DateTime}, {to:DateTime}) > 172800 AS hourly,
    parts AS (
        -- ranges up to 48 hours: every window
        SELECT window_start AS time, sum(bytes) AS bytes, sum(retransmissions) AS retransmissions,
               sum(timeouts) AS timeouts, sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us,
               uniqExact(src_subnet, dst_subnet) AS pairs
        FROM flow_windows FINAL
        WHERE NOT hourly AND window_start >= {from:DateTime} AND window_start < {to:DateTime}
        GROUP BY window_start
        UNION ALL
        -- longer ranges, hourly: clean full hours from the rollup (009_pair_hours.sql)
        -- (one row per pair-hour after FINAL, and a pair-hour is read from one side only: pairs = count())
        SELECT hour AS time, sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
               sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us, count() AS pairs
        FROM pair_hours FINAL
        WHERE hourly AND hour >= hour_from AND hour < hour_to
          AND rows = bitCount(windows) AND placement_min = placement_max
        GROUP BY hour
        UNION ALL
        -- longer ranges, hourly: partial hours at the edges of the range, dirty pair-hours
        SELECT toStartOfHour(window_start) AS time, sum(bytes) AS bytes, sum(retransmissions) AS retransmissions,
               sum(timeouts) AS timeouts, sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us,
               uniqExact(src_subnet, dst_subnet) AS pairs
        FROM flow_windows FINAL
        WHERE hourly AND window_start >= {from:DateTime} AND window_start < {to:DateTime}
          AND (window_start < hour_from OR window_start >= hour_to
               OR (toStartOfHour(window_start), src_subnet, dst_subnet) IN (
                   SELECT hour, src_subnet, dst_subnet FROM pair_hours FINAL
                   WHERE hour >= hour_from AND hour < hour_to
                     AND NOT (rows = bitCount(windows) AND placement_min = placement_max)))
        GROUP BY time)
SELECT
    time,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    sum(pairs) AS pairs
FROM parts
GROUP BY time
ORDER BY time
