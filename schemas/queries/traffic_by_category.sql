-- title: Traffic by category
-- description: Totals over the range per traffic category, from the reporting side's point of view:
-- description: intra-az (same VPC, same AZ), inter-az (same VPC, different AZs), inter-vpc, and
-- description: unclassified (either end outside the known topology).
-- description: Exact: the clean full hours of the range come from the hourly rollup pair_hours, the partial
-- description: hours at its edges and the pair-hours where a window landed twice from flow_windows FINAL.
-- params: from DateTime, to DateTime
-- grafana: table
WITH
    toStartOfHour(toDateTime({from:DateTime} + 3599, 'UTC')) AS hour_from,
    toStartOfHour(toDateTime({to:DateTime}, 'UTC')) AS hour_to,
    parts AS (
        -- clean full hours from the rollup pair_hours (009_pair_hours.sql: no window landed twice, one
        -- placement), summed per pair
        SELECT src_subnet, dst_subnet,
               any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts, sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us
        FROM pair_hours FINAL
        WHERE hour >= hour_from AND hour < hour_to
          AND rows = bitCount(windows) AND placement_min = placement_max
        GROUP BY src_subnet, dst_subnet, placement_min
        UNION ALL
        -- the rest from the windows: partial hours at the edges of the range, dirty pair-hours
        SELECT src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, bytes, retransmissions, timeouts, rtt_count, rtt_sum_us
        FROM flow_windows FINAL
        WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
          AND (window_start < hour_from OR window_start >= hour_to
               OR (toStartOfHour(window_start), src_subnet, dst_subnet) IN (
                   SELECT hour, src_subnet, dst_subnet FROM pair_hours FINAL
                   WHERE hour >= hour_from AND hour < hour_to
                     AND NOT (rows = bitCount(windows) AND placement_min = placement_max))))
SELECT
    multiIf(src_subnet = 'external' OR dst_subnet = 'external'
                OR src_vpc IN ('', 'external') OR dst_vpc IN ('', 'external'), 'unclassified',
            src_vpc != dst_vpc, 'inter-vpc',
            src_az = dst_az, 'intra-az',
            'inter-az') AS category,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    uniqExact(src_subnet, dst_subnet) AS pairs
FROM parts
GROUP BY category
ORDER BY indexOf(['intra-az', 'inter-az', 'inter-vpc', 'unclassified'], category)
