"""The contract between stages and with users: topic names and versions, typed records and their JSON.

``contract`` (versions, topic names, limits, the JSON schemas), ``records`` (the pairs path:
partials, marks, windows, dead letters, grid intervals; the one codec that knows their compact
keys), ``events`` (anomaly events, key health, attributions, NHI periods), ``rtt`` (the RTT histogram).
"""
