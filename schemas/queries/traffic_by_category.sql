-- title: Traffic by category
-- description: Totals over the range per traffic category, from the reporting side's point of view:
-- description: intra-az (same VPC, same AZ), inter-az (same VPC, different AZs), inter-vpc, and
-- description: unclassified (either end outside the known topology).
-- description: Exact: the per-pair sums come from the rollups (pair_days, pair_hours) where they are exact and
-- description: from flow_windows FINAL elsewhere (fragments/pair_parts.sql).
-- params: from DateTime, to DateTime
-- grafana: table
WITH
    {{pair_parts}}
SELECT
    {{category}} AS category,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    uniqExact(src_subnet, dst_subnet) AS pairs
FROM pair_parts
GROUP BY category
ORDER BY indexOf(['intra-az', 'inter-az', 'inter-vpc', 'unclassified'], category)
