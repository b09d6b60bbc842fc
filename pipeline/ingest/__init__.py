"""Report bytes -> validated, placed (topology), pre-aggregated per-pair partials; source progress marks."""
