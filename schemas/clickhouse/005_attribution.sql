-- 005: attribution of alerts, and the Network Health Indicator.
--
-- flow_attributions: one row per opened alert (topic flow-attributions-v1, schema
-- schemas/wire/flow_attribution.v1.json); a replayed record collapses on alert_id.
-- nhi: degraded periods per scope (topic flow-nhi-v1, schema flow_nhi.v1.json): a period is
-- written when it starts (end NULL) and again when it ends; ReplacingMergeTree(updated)
-- keeps the latest. Read both with FINAL, or through the views.
CREATE TABLE IF NOT EXISTS flow_attributions
(
    version              UInt8,
    alert_id             String,
    at                   DateTime('UTC')          COMMENT 'interval in which the alert opened',
    scope                LowCardinality(String),
    instance             Nullable(String),
    src_subnet           LowCardinality(String),
    dst_subnet           LowCardinality(String),
    metric               LowCardinality(String),
    family               LowCardinality(String)   COMMENT 'retrans | timeouts | lat',
    cause                LowCardinality(String)   COMMENT 'infrastructure | workload | undetermined',
    element_kind         Nullable(String)         COMMENT 'instance | subnet | az_pair | az | vpc',
    element              Nullable(String),
    confidence           Float64,
    purity               Float64,
    reporters_crossing   UInt32,
    reporters_degraded   UInt32,
    degraded             Array(String),
    keys_scored          UInt32,
    keys_degraded        UInt32,
    exonerating          UInt32,
    exonerating_reporters Array(String),
    keys_attributed      UInt32,
    evidence_level       LowCardinality(String)   COMMENT 'instance | pair',
    attributed_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(attributed_at)
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS nhi
(
    version    UInt8,
    scope_kind LowCardinality(String)   COMMENT 'az | az_pair | subnet | vpc',
    scope      String,
    status     LowCardinality(String)   COMMENT 'degraded (no row = healthy)',
    start      DateTime('UTC'),
    end        Nullable(DateTime('UTC')) COMMENT 'NULL while the period lasts',
    element    String                   COMMENT 'blamed element, kind:id',
    updated    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY (scope_kind, scope, start)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS nhi_final AS
SELECT * FROM nhi FINAL;

-- Alerts with their attribution (one row per alert).
CREATE VIEW IF NOT EXISTS alerts_attributed AS
SELECT
    alert_id,
    a.scope AS scope, a.instance AS instance, a.src_subnet AS src_subnet, a.dst_subnet AS dst_subnet,
    a.metric AS metric, first_seen, last_seen, state, severity, max_score,
    t.cause AS cause, t.element_kind AS element_kind, t.element AS element, t.confidence AS confidence,
    t.reporters_crossing AS reporters_crossing, t.reporters_degraded AS reporters_degraded
FROM alerts AS a
LEFT JOIN (SELECT * FROM flow_attributions FINAL) AS t USING (alert_id);
