"""flowmon: TCP flow health per subnet pair, from host agents through Kafka to ClickHouse.

The package follows a sample, one subpackage per stage (only ``runtime/`` and ``cli/``
import Kafka or Faust; everything else is plain Python and numpy, tested without a broker)::

    agent/       the host agent (`flowmon agent`), no Kafka: kernel TCP counters through netlink sock_diag
                 (sockdiag), per-connection deltas counted once (ledger), what is counted (scope), wire
                 reports and top-K (report), the on-disk spool (spool), one interval (host), its config
    wire/        the contract: topic names and versions (contract), the pairs-path records and their
                 compact JSON (records), what leaves detection and attribution (events), RTT histograms (rtt)
    ingest/      report bytes -> validate -> place endpoints (topology) -> per-pair partials (preagg);
                 the stage's core (step) and the progress marks it promises (progress)
    aggregate/   one pairs partition: 10-minute windows per subnet pair (windows), and the one
                 orchestration (step: windows -> detection -> health) the worker and `flowmon eval` both run
    detect/      per key and grid interval: observations (observe), the model contract (contract), the model
                 the pipeline runs (baseline), eval-only candidates (candidates), keys and health
                 (detection), opened/updated/resolved (lifecycle)
    attribute/   fleet-wide correlation: infrastructure or workload (correlate), Network Health Indicator (nhi)
    clickhouse/  client (chdb:// or http://), tables read from schemas/clickhouse (columns), migrations,
                 the sink's writer, the embedded SQL endpoint (sqlserve)
    runtime/     the Kafka/Faust shell: the app, one module per agent (agents/), state restore, topics,
                 Kafka clients (kafka), the sink's consumer (land), producing reports, following alerts,
                 the host agent's sender (agent), monitors' follower, health (/healthz), the embedded
                 Tansu broker, children that die with the worker (process), metrics
    monitors/    named scopes (local and remote resources): definitions, what falls in one (scope), and the
                 closed windows and NHI periods evaluated against them (evaluate)
    alerts/      alerts for people: events, filters, rendering, deduplication, webhooks (no Kafka here)
    sim/         scenarios, the simulator and its realism model, the totals oracle, evaluation and scoring
    views/       what a person looks at: the named SQL queries and their {{fragments}} (queries), the Grafana
                 dashboards generated from them (grafana), the static plot (plot)
    console/     `flowmon console`, a read-only web UI: time ranges and page models (timerange, views: pure),
                 the FastAPI app (app), its templates and static files
    cli/         the `flowmon` command, one module per command group
    config.py    every setting, one frozen class (FLOWMON_* environment variables)
    errors.py    what a person can fix: one exception family, each kind with its exit status and a hint

Schemas live once, in ``schemas/`` (JSON Schema per topic, SQL per ClickHouse step; ``pipeline/schemas``
links to it so an installed wheel carries them).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
