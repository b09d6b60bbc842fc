"""Monitors: named scopes (local resources where the reporting agents are, remote resources they talk to)
that the pipeline evaluates live. Pure, no Kafka: ``definition`` (the typed monitor, its parsing and JSON),
``scope`` (what falls in a monitor), ``evaluate`` (closed windows and NHI periods -> monitor records)."""
