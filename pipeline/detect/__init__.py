"""Online anomaly detection per key and interval: the model contract, the baseline, the alert lifecycle."""
