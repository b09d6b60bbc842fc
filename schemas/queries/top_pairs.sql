-- title: Top subnet pairs
-- description: The n subnet pairs contributing most to one metric over the range: metric is bytes,
-- description: retransmissions, timeouts or rtt (mean RTT; pairs without RTT samples left out);
-- description: category is 'all' or one of intra-az, inter-az, inter-vpc, unclassified.
-- description: RTT percentiles come from the merged histograms (bucket b = floor(16*log2(rtt_us)), midpoint 2^((b+0.5)/16)).
-- description: Exact: the clean full hours of the range come from the hourly rollup pair_hours, the partial
-- description: hours at its edges and the pair-hours where a window landed twice from flow_windows FINAL.
-- params: from DateTime, to DateTime, category String, metric String, n UInt32
-- grafana: table
WITH
    toStartOfHour(toDateTime({from:DateTime} + 3599, 'UTC')) AS hour_from,
    toStartOfHour(toDateTime({to:DateTime}, 'UTC')) AS hour_to,
    parts AS (
        -- clean full hours from the rollup pair_hours (009_pair_hours.sql: no window landed twice, one
        -- placement), summed per pair
        SELECT src_subnet, dst_subnet,
               any(src_az) AS src_az, any(dst_az) AS dst_az, any(src_vpc) AS src_vpc, any(dst_vpc) AS dst_vpc,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts, sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us, sumMap(rtt_hist) AS rtt_hist
        FROM pair_hours FINAL
        WHERE hour >= hour_from AND hour < hour_to
          AND rows = bitCount(windows) AND placement_min = placement_max
        GROUP BY src_subnet, dst_subnet, placement_min
        UNION ALL
        -- the rest from the windows: partial hours at the edges of the range, dirty pair-hours
        SELECT src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, bytes, retransmissions, timeouts, rtt_count, rtt_sum_us, rtt_hist
        FROM flow_windows FINAL
        WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
          AND (window_start < hour_from OR window_start >= hour_to
               OR (toStartOfHour(window_start), src_subnet, dst_subnet) IN (
                   SELECT hour, src_subnet, dst_subnet FROM pair_hours FINAL
                   WHERE hour >= hour_from AND hour < hour_to
                     AND NOT (rows = bitCount(windows) AND placement_min = placement_max))))
SELECT * EXCEPT (h, rtt_samples) FROM (
SELECT
    src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc,
    multiIf(src_subnet = 'external' OR dst_subnet = 'external'
                OR src_vpc IN ('', 'external') OR dst_vpc IN ('', 'external'), 'unclassified',
            src_vpc != dst_vpc, 'inter-vpc',
            src_az = dst_az, 'intra-az',
            'inter-az') AS category,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    sum(rtt_count) AS rtt_samples,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    sumMap(rtt_hist) AS h,
    if(empty(h), 0, pow(2, (arrayElement(mapKeys(h), arrayFirstIndex(c -> c >= 0.99 * arraySum(mapValues(h)), arrayCumSum(mapValues(h)))) + 0.5) / 16)) AS rtt_p99_us
FROM parts
GROUP BY src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, category
HAVING ({category:String} = 'all' OR category = {category:String})
   AND ({metric:String} != 'rtt' OR rtt_samples > 0)
ORDER BY multiIf({metric:String} = 'retransmissions', toFloat64(retransmissions),
                 {metric:String} = 'timeouts', toFloat64(timeouts),
                 {metric:String} = 'rtt', rtt_mean_us,
                 toFloat64(bytes)) DESC, src_subnet, dst_subnet
LIMIT {n:UInt32}
)
