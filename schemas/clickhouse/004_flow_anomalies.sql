-- 004: alert lifecycle events, one row per (alert_id, seq).
--
-- Source: topic flow-anomalies-v1, schema schemas/wire/flow_anomaly.v1.json (every
-- field is a column; first_seen/last_seen/at/window_start as DateTime('UTC'),
-- emitted_at as DateTime64(3)).
--
-- Delivery is at least once: a worker that restarts may emit an event again, with the
-- same alert_id and seq (its detector state says the alert is open, so it never opens
-- it anew). Duplicates collapse in the ReplacingMergeTree (latest emitted_at wins), and
-- a retried batch is dropped by its insert_deduplication_token. Exact reads: FINAL, or
-- the views below.
CREATE TABLE IF NOT EXISTS flow_anomalies
(
    version      UInt8,
    alert_id     String                    COMMENT 'stable id: hash of scope, key, metric, first_seen',
    event        LowCardinality(String)    COMMENT 'opened | updated | resolved',
    seq          UInt32                    COMMENT '0 = opened, then one per later event',
    scope        LowCardinality(String)    COMMENT 'pair | instance',
    instance     Nullable(String)          COMMENT 'reporting instance (scope instance)',
    src_subnet   LowCardinality(String),
    src_az       LowCardinality(String),
    src_vpc      LowCardinality(String),
    dst_subnet   LowCardinality(String),
    dst_az       LowCardinality(String),
    dst_vpc      LowCardinality(String),
    metric       LowCardinality(String)    COMMENT 'retrans_rate | timeout_rate | rtt_p50 | rtt_p90',
    observed     Float64,
    expected     Float64                   COMMENT 'learned baseline',
    score        Float64,
    severity     LowCardinality(String)    COMMENT 'warning | critical',
    first_seen   DateTime('UTC'),
    last_seen    DateTime('UTC'),
    at           DateTime('UTC')           COMMENT 'interval that caused this event',
    interval_s   UInt32,
    window_start DateTime('UTC'),
    reason       Nullable(String)          COMMENT 'resolved: normal | silent',
    emitted_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(emitted_at)
ORDER BY (alert_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS flow_anomalies_final AS
SELECT * FROM flow_anomalies FINAL;

-- One row per alert: its opening, its latest state, and whether it is still open.
CREATE VIEW IF NOT EXISTS alerts AS
SELECT
    alert_id,
    any(scope) AS scope, any(instance) AS instance,
    any(src_subnet) AS src_subnet, any(dst_subnet) AS dst_subnet,
    any(src_az) AS src_az, any(dst_az) AS dst_az,
    any(metric) AS metric,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    argMax(event, seq) AS state,
    argMax(severity, seq) AS severity,
    max(score) AS max_score,
    argMax(observed, seq) AS observed,
    argMax(expected, seq) AS expected,
    maxIf(at, event = 'resolved') AS resolved_at
FROM flow_anomalies FINAL
GROUP BY alert_id;
