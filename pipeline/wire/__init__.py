"""The contract between stages and with users: wire versions, topic names, limits, the RTT histogram layout."""
