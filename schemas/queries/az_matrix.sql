-- title: Health of every AZ pair
-- description: One row per (source AZ, destination AZ) seen in the range: traffic, retransmissions,
-- description: timeouts, mean RTT, and health: 'degraded' when the Network Health Indicator marked, at some
-- description: time in the range, the AZ pair (either direction), or either AZ for a reason other than a
-- description: problem between two AZs (a subnet, an AZ), with the blamed elements; each AZ's own health
-- description: (src_az_health, dst_az_health); alerts opened in the range on the pairs, by attributed cause.
-- description: Exact: the per-pair sums come from the rollups (pair_days, pair_hours) where they are exact and
-- description: from flow_windows FINAL elsewhere (fragments/pair_parts.sql).
-- params: from DateTime, to DateTime
-- grafana: table
WITH
    {{pair_parts}},
    traffic AS (
        SELECT src_az, dst_az,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
               if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
               uniqExact(src_subnet, dst_subnet) AS pairs
        FROM pair_parts
        WHERE src_az NOT IN ('', 'external') AND dst_az NOT IN ('', 'external')
        GROUP BY src_az, dst_az),
    periods AS (
        SELECT scope_kind, scope, element
        FROM nhi FINAL
        WHERE scope_kind IN ('az', 'az_pair') AND start < {to:DateTime}
          AND (end IS NULL OR end > {from:DateTime})),
    -- the periods as one array, matched per row below, so that traffic (and the rollups under it) is read once
    (SELECT groupArray((scope_kind, scope, element)) FROM periods) AS nhi_periods,
    opened AS (
        SELECT src_az, dst_az,
               countIf(cause = 'infrastructure') AS alerts_infrastructure,
               countIf(cause = 'workload') AS alerts_workload,
               countIf(cause NOT IN ('infrastructure', 'workload')) AS alerts_other
        FROM (SELECT alert_id, any(src_az) AS src_az, any(dst_az) AS dst_az, min(first_seen) AS first_seen
              FROM flow_anomalies FINAL GROUP BY alert_id) AS a
        LEFT JOIN (SELECT alert_id, cause FROM flow_attributions FINAL) AS c USING (alert_id)
        WHERE first_seen >= {from:DateTime} AND first_seen < {to:DateTime}
        GROUP BY src_az, dst_az)
SELECT
    t.src_az AS src_az, t.dst_az AS dst_az,
    t.bytes AS bytes, t.retransmissions AS retransmissions, t.timeouts AS timeouts,
    t.rtt_mean_us AS rtt_mean_us, t.pairs AS pairs,
    if(notEmpty(blamed), 'degraded', 'healthy') AS health,
    arraySort(arrayDistinct(arrayMap(p -> p.3, arrayFilter(
        p -> (p.1 = 'az_pair' AND (p.2 = concat(t.src_az, '|', t.dst_az) OR p.2 = concat(t.dst_az, '|', t.src_az)))
             OR (p.1 = 'az' AND (p.2 = t.src_az OR p.2 = t.dst_az) AND NOT startsWith(p.3, 'az_pair:')),
        nhi_periods)))) AS blamed,
    if(arrayExists(p -> p.1 = 'az' AND p.2 = t.src_az, nhi_periods), 'degraded', 'healthy') AS src_az_health,
    if(arrayExists(p -> p.1 = 'az' AND p.2 = t.dst_az, nhi_periods), 'degraded', 'healthy') AS dst_az_health,
    o.alerts_infrastructure AS alerts_infrastructure,
    o.alerts_workload AS alerts_workload,
    o.alerts_other AS alerts_other
FROM traffic AS t
LEFT JOIN opened AS o ON o.src_az = t.src_az AND o.dst_az = t.dst_az
ORDER BY src_az, dst_az
