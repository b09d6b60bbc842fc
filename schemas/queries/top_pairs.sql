-- title: Top subnet pairs
-- description: The n subnet pairs contributing most to one metric over the range: metric is bytes,
-- description: retransmissions, timeouts or rtt (mean RTT; pairs without RTT samples left out);
-- description: category is 'all' or one of intra-az, inter-az, inter-vpc, unclassified.
-- description: RTT percentiles come from the merged histograms (bucket b = floor(16*log2(rtt_us)), midpoint 2^((b+0.5)/16)).
-- description: Exact: the per-pair sums come from the rollups (pair_days, pair_hours) where they are exact and
-- description: from flow_windows FINAL elsewhere (fragments/pair_parts.sql).
-- params: from DateTime, to DateTime, category String, metric String, n UInt32
-- grafana: table
WITH
    {{pair_parts}}
SELECT * EXCEPT (h, rtt_samples) FROM (
SELECT
    src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc,
    {{category}} AS category,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    sum(rtt_count) AS rtt_samples,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    sumMap(rtt_hist) AS h,
    if(empty(h), 0, pow(2, (arrayElement(mapKeys(h), arrayFirstIndex(c -> c >= 0.99 * arraySum(mapValues(h)), arrayCumSum(mapValues(h)))) + 0.5) / 16)) AS rtt_p99_us
FROM pair_parts
GROUP BY src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, category
HAVING ({category:String} = 'all' OR category = {category:String})
   AND ({metric:String} != 'rtt' OR rtt_samples > 0)
ORDER BY multiIf({metric:String} = 'retransmissions', toFloat64(retransmissions),
                 {metric:String} = 'timeouts', toFloat64(timeouts),
                 {metric:String} = 'rtt', rtt_mean_us,
                 toFloat64(bytes)) DESC, src_subnet, dst_subnet
LIMIT {n:UInt32}
)
