-- title: Alerts on one subnet pair
-- description: Alerts on src -> dst active in the range, with the blamed element and the degraded reporters
-- description: (the instances whose own keys deviated), for the path view.
-- params: src String, dst String, from DateTime, to DateTime
-- grafana: none
SELECT
    a.alert_id AS alert_id, a.scope AS scope, ifNull(a.instance, '') AS instance, a.metric AS metric,
    a.first_seen AS first_seen, a.last_seen AS last_seen, a.state AS state, a.severity AS severity,
    if(t.alert_id = '', 'pending', t.cause) AS cause,
    ifNull(t.element_kind, '') AS element_kind, ifNull(t.element, '') AS element,
    t.confidence AS confidence, t.degraded AS degraded_reporters,
    t.reporters_crossing AS reporters_crossing, t.reporters_degraded AS reporters_degraded
FROM alerts AS a
LEFT JOIN (SELECT * FROM flow_attributions FINAL) AS t ON t.alert_id = a.alert_id
WHERE a.src_subnet = {src:String} AND a.dst_subnet = {dst:String}
  AND a.first_seen < {to:DateTime}
  AND (a.state != 'resolved' OR a.resolved_at >= {from:DateTime})
ORDER BY a.first_seen DESC
