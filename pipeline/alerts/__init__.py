"""Alerts for people, without Kafka: check the anomaly events, filter, render, deduplicate, deliver to webhooks.

The Kafka follower is :mod:`pipeline.runtime.follow`; the ``flowmon alerts`` command, :mod:`pipeline.cli.alerts`.
"""

__all__: list[str] = []
