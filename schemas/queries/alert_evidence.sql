-- title: The evidence behind one alert's verdict
-- description: The attribution record: how many reporters cross the element, how many were degraded
-- description: (and which), how many keys were scored, degraded, and exonerating.
-- params: alert_id String
-- grafana: none
SELECT
    alert_id, at, scope, ifNull(instance, '') AS instance, src_subnet, dst_subnet, metric, family, cause,
    ifNull(element_kind, '') AS element_kind, ifNull(element, '') AS element, confidence, purity,
    reporters_crossing, reporters_degraded, degraded, keys_scored, keys_degraded,
    exonerating, exonerating_reporters, keys_attributed, evidence_level, attributed_at
FROM flow_attributions FINAL
WHERE alert_id = {alert_id:String}
