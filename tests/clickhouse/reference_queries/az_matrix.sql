-- title: Health of every AZ pair
-- description: One row per (source AZ, destination AZ) seen in the range: traffic, retransmissions,
-- description: timeouts, mean RTT, and health: 'degraded' when the Network Health Indicator marked, at some
-- description: time in the range, the AZ pair (either direction), or either AZ for a reason other than a
-- description: problem between two AZs (a subnet, an AZ), with the blamed elements; each AZ's own health
-- description: (src_az_health, dst_az_health); alerts opened in the range on the pairs, by attributed cause.
-- params: from DateTime, to DateTime
-- grafana: table
WITH
    traffic AS (
        SELECT src_az, dst_az,
               sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
               if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
               uniqExact(src_subnet, dst_subnet) AS pairs
        FROM flow_windows FINAL
        WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
          AND src_az NOT IN ('', 'external') AND dst_az NOT IN ('', 'external')
        GROUP BY src_az, dst_az),
    periods AS (
        SELECT scope_kind, scope, element
        FROM nhi FINAL
        WHERE scope_kind IN ('az', 'az_pair') AND start < {to:DateTime}
          AND (end IS NULL OR end > {from:DateTime})),
    flagged AS (
        SELECT t.src_az AS src_az, t.dst_az AS dst_az, groupUniqArray(p.element) AS blamed
        FROM traffic AS t
        CROSS JOIN periods AS p
        WHERE (p.scope_kind = 'az_pair' AND p.scope IN (concat(t.src_az, '|', t.dst_az), concat(t.dst_az, '|', t.src_az)))
           OR (p.scope_kind = 'az' AND p.scope IN (t.src_az, t.dst_az) AND NOT startsWith(p.element, 'az_pair:'))
        GROUP BY src_az, dst_az),
    az_flag AS (
        SELECT scope AS az, groupUniqArray(element) AS az_blamed FROM periods WHERE scope_kind = 'az' GROUP BY scope),
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
    if(notEmpty(f.blamed), 'degraded', 'healthy') AS health,
    arraySort(f.blamed) AS blamed,
    if(notEmpty(sa.az_blamed), 'degraded', 'healthy') AS src_az_health,
    if(notEmpty(da.az_blamed), 'degraded', 'healthy') AS dst_az_health,
    o.alerts_infrastructure AS alerts_infrastructure,
    o.alerts_workload AS alerts_workload,
    o.alerts_other AS alerts_other
FROM traffic AS t
LEFT JOIN flagged AS f ON f.src_az = t.src_az AND f.dst_az = t.dst_az
LEFT JOIN opened AS o ON o.src_az = t.src_az AND o.dst_az = t.dst_az
LEFT JOIN az_flag AS sa ON sa.az = t.src_az
LEFT JOIN az_flag AS da ON da.az = t.dst_az
ORDER BY src_az, dst_az
