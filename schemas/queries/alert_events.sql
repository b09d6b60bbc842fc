-- title: One alert's lifecycle
-- description: Every event of the alert (opened, updated, resolved) with the observed value, the learned baseline and the score.
-- params: alert_id String
-- grafana: none
SELECT seq, event, at, observed, expected, score, severity, ifNull(reason, '') AS reason,
       scope, ifNull(instance, '') AS instance, src_subnet, src_az, src_vpc, dst_subnet, dst_az, dst_vpc, metric
FROM flow_anomalies FINAL
WHERE alert_id = {alert_id:String}
ORDER BY seq
