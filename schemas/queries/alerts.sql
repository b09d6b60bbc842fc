-- title: Alerts
-- description: Alerts active at some time in the range (opened before its end, not resolved before its start),
-- description: newest first, with their attribution: cause (infrastructure, workload, undetermined, or
-- description: pending while the attribution stage has not decided) and the blamed element; observed/expected
-- description: are the latest event's, peak_observed/peak_expected the worst the alert saw.
-- params: from DateTime, to DateTime
-- grafana: table
SELECT
    a.alert_id AS alert_id, a.scope AS scope, ifNull(a.instance, '') AS instance,
    a.src_subnet AS src_subnet, a.dst_subnet AS dst_subnet, a.src_az AS src_az, a.dst_az AS dst_az,
    a.metric AS metric, a.first_seen AS first_seen, a.last_seen AS last_seen, a.state AS state,
    a.severity AS severity, a.max_score AS max_score, a.observed AS observed, a.expected AS expected,
    pk.peak AS peak_observed, pk.peak_expected AS peak_expected,
    if(t.alert_id = '', 'pending', t.cause) AS cause,
    ifNull(t.element_kind, '') AS element_kind, ifNull(t.element, '') AS element, t.confidence AS confidence
FROM alerts AS a
LEFT JOIN (SELECT alert_id, cause, element_kind, element, confidence FROM flow_attributions FINAL) AS t
    ON t.alert_id = a.alert_id
LEFT JOIN (SELECT alert_id, max(observed) AS peak, argMax(expected, observed) AS peak_expected
           FROM flow_anomalies FINAL GROUP BY alert_id) AS pk ON pk.alert_id = a.alert_id
WHERE a.first_seen < {to:DateTime}
  AND (a.state != 'resolved' OR a.resolved_at >= {from:DateTime})
ORDER BY a.first_seen DESC, a.alert_id
LIMIT 1000
