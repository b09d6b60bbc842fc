"""flowmon: TCP flow health per subnet pair, from agents through Kafka to ClickHouse.

Follow a sample: ``validate`` (refuse or accept) -> ``topology`` (place endpoints) ->
``preagg`` (one report -> per-pair partials) -> ``windows`` (10-minute event-time
windows per subnet pair) -> ``sink`` (ClickHouse). ``agents`` wires them to Kafka.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
