-- fragment: pair_parts
-- description: The exact per-pair sums of the range [from, to), read from the cheapest level that is exact:
-- description: the clean full days from pair_days (010), the clean full hours of the rest (the partial days at the
-- description: edges, the dirty days) from pair_hours (009), every other window from flow_windows FINAL.
-- description: A pair-day or pair-hour is clean when no window of it landed twice and the pair kept one placement
-- description: (rows = bitCount(...) AND placement_min = placement_max); a clean day holds only clean hours.
-- description: Rows: src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, bytes, retransmissions, timeouts,
-- description: rtt_count, rtt_sum_us, rtt_hist; several rows per pair (one per level and placement): aggregate them.
-- description: Used inside a WITH clause as {{pair_parts}}; defines hour_from, hour_to, day_from, day_to, pair_parts.
    toStartOfHour(toDateTime({from:DateTime} + 3599, 'UTC')) AS hour_from,
    toStartOfHour(toDateTime({to:DateTime}, 'UTC')) AS hour_to,
    toStartOfDay(toDateTime({from:DateTime} + 86399, 'UTC')) AS day_from,
    toStartOfDay(toDateTime({to:DateTime}, 'UTC')) AS day_to,
    pair_parts AS (
        -- clean full days (010_pair_days.sql)
        SELECT src_subnet, dst_subnet,
               any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
               sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us, sumMap(rtt_hist) AS rtt_hist
        FROM pair_days FINAL
        WHERE day >= day_from AND day < day_to
          AND rows = bitCount(slots) AND placement_min = placement_max
        GROUP BY src_subnet, dst_subnet, placement_min
        UNION ALL
        -- clean full hours outside the clean full days (009_pair_hours.sql)
        SELECT src_subnet, dst_subnet,
               any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
               sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us, sumMap(rtt_hist) AS rtt_hist
        FROM pair_hours FINAL
        WHERE hour >= hour_from AND hour < hour_to
          AND rows = bitCount(windows) AND placement_min = placement_max
          AND (hour < day_from OR hour >= day_to
               OR (toStartOfDay(hour), src_subnet, dst_subnet) IN (
                   SELECT day, src_subnet, dst_subnet FROM pair_days FINAL
                   WHERE day >= day_from AND day < day_to
                     AND NOT (rows = bitCount(slots) AND placement_min = placement_max)))
        GROUP BY src_subnet, dst_subnet, placement_min
        UNION ALL
        -- every other window: the partial hours at the edges, the dirty hours outside the clean days
        SELECT src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc,
               bytes, retransmissions, timeouts, rtt_count, rtt_sum_us, rtt_hist
        FROM flow_windows FINAL
        WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
          AND (window_start < hour_from OR window_start >= hour_to
               OR (toStartOfHour(window_start), src_subnet, dst_subnet) IN (
                   SELECT hour, src_subnet, dst_subnet FROM pair_hours FINAL
                   WHERE hour >= hour_from AND hour < hour_to
                     AND NOT (rows = bitCount(windows) AND placement_min = placement_max)
                     AND (hour < day_from OR hour >= day_to
                          OR toStartOfDay(hour) IN (
                              SELECT day FROM pair_days FINAL
                              WHERE day >= day_from AND day < day_to
                                AND NOT (rows = bitCount(slots) AND placement_min = placement_max)))))
          AND (window_start < day_from OR window_start >= day_to
               OR (toStartOfDay(window_start), src_subnet, dst_subnet) IN (
                   SELECT day, src_subnet, dst_subnet FROM pair_days FINAL
                   WHERE day >= day_from AND day < day_to
                     AND NOT (rows = bitCount(slots) AND placement_min = placement_max))))
