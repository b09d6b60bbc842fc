"""Benchmarks for flowmon: ``python -m benchmarks.bench`` (throughput), ``python -m benchmarks.rss`` (memory).

See ``benchmarks/README.md``.
"""
