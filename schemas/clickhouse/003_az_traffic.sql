-- 003: traffic per window between availability zones, split by category, for the
-- "workload insights" view and the reference experiments
-- (shared/reference/network-flow-monitor.md).
--
-- category, from the reporting (src) side's point of view:
--   'external'  : either end is outside the known topology (subnet 'external', or no
--                 VPC known for it);
--   'inter-vpc' : both ends known, different VPCs;
--   'intra-az'  : same VPC, same AZ;
--   'inter-az'  : same VPC, different AZs.
-- Counters are summed over the subnet pairs of the window (read FROM flow_windows FINAL,
-- so totals are exact). Like the managed service, `bytes` counts a transfer once per
-- reporting end: a same-subnet transfer appears twice. rtt_hist is the merged histogram
-- (bucket floor(16*log2(rtt_us)) -> count) for percentiles over the AZ pair.
CREATE VIEW IF NOT EXISTS az_traffic AS
SELECT
    window_start,
    window_s,
    src_vpc,
    src_az,
    dst_vpc,
    dst_az,
    multiIf(
        src_subnet = 'external' OR dst_subnet = 'external'
            OR src_vpc IN ('', 'external') OR dst_vpc IN ('', 'external'), 'external',
        src_vpc != dst_vpc, 'inter-vpc',
        src_az = dst_az, 'intra-az',
        'inter-az') AS category,
    sum(bytes)                                   AS bytes,
    sum(bytes_sent)                              AS bytes_sent,
    sum(bytes_received)                          AS bytes_received,
    sum(retransmissions)                         AS retransmissions,
    sum(timeouts)                                AS timeouts,
    sum(flows)                                   AS flows,
    sum(samples)                                 AS samples,
    uniqExact(src_subnet, dst_subnet)            AS subnet_pairs,
    sum(rtt_count)                               AS rtt_count,
    sum(rtt_sum_us)                              AS rtt_sum_us,
    if(rtt_count = 0, 0, rtt_sum_us / rtt_count) AS rtt_mean_us,  -- the sums above
    sumMap(rtt_hist)                             AS rtt_hist
FROM flow_windows FINAL
GROUP BY window_start, window_s, src_vpc, src_az, dst_vpc, dst_az, category;
