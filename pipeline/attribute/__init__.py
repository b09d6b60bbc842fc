"""Fleet-wide correlation of health (infrastructure vs workload) and the Network Health Indicator."""
