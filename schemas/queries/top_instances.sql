-- title: Top instances
-- params: from DateTime, to DateTime, category String, metric String, n UInt32
-- grafana: table
-- description: The n instances contributing most over the windows starting in [from, to), by metric:
-- description: 'bytes' (data transferred, as the instance saw it), 'retransmissions', 'timeouts', or 'rtt'
-- description: (mean RTT, sum of RTTs over their count; only instances with RTT samples), largest first.
-- description: category: 'all', or the traffic the instance reported in one category, decided like view
-- description: az_traffic (003) but with its 'external' named 'unclassified' (the remote is outside the
-- description: topology): 'intra-az', 'inter-az', 'inter-vpc', 'unclassified'. pairs: distinct remote subnets.
-- description: Exact (instance_windows FINAL).
SELECT
    instance,
    src_subnet,
    src_az,
    {category:String}                                              AS category,
    sum(bytes)                                                     AS bytes,
    sum(retransmissions)                                           AS retransmissions,
    sum(timeouts)                                                  AS timeouts,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count))    AS rtt_mean_us,
    uniqExact(dst_subnet)                                          AS pairs
FROM
(
    SELECT
        instance, src_subnet, src_az, dst_subnet, bytes, retransmissions, timeouts, rtt_count, rtt_sum_us,
        {{category}} AS traffic_category
    FROM instance_windows FINAL
    WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
        -- a scalar subquery runs once, rows or not: an unknown category or metric is an error, not an empty table
        AND (SELECT throwIf({category:String} NOT IN ('all', 'intra-az', 'inter-az', 'inter-vpc', 'unclassified'),
                            'category must be one of: all, intra-az, inter-az, inter-vpc, unclassified')
                  + throwIf({metric:String} NOT IN ('bytes', 'retransmissions', 'timeouts', 'rtt'),
                            'metric must be one of: bytes, retransmissions, timeouts, rtt')) = 0
)
WHERE {category:String} = 'all' OR traffic_category = {category:String}
GROUP BY instance, src_subnet, src_az
HAVING {metric:String} != 'rtt' OR sum(rtt_count) > 0
ORDER BY multiIf({metric:String} = 'bytes', toFloat64(bytes),
                 {metric:String} = 'retransmissions', toFloat64(retransmissions),
                 {metric:String} = 'timeouts', toFloat64(timeouts),
                 rtt_mean_us) DESC, instance
LIMIT {n:UInt32}
