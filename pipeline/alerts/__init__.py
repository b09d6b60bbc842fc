"""Alerts for people: follow the anomaly topic, filter, render, deduplicate, deliver to webhooks."""
