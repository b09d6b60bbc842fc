-- title: One subnet pair per window
-- description: Traffic, retransmissions, timeouts and RTT (mean, and p50/p90/p99 from the window's histogram) of src -> dst.
-- params: src String, dst String, from DateTime, to DateTime
-- grafana: timeseries
-- grafana_panels: bytes; retransmissions; timeouts; rtt_mean_us, rtt_p50_us, rtt_p90_us, rtt_p99_us
SELECT
    window_start AS time, bytes, retransmissions, timeouts, flows, hosts,
    rtt_mean_us, rtt_p50_us, rtt_p90_us, rtt_p99_us
FROM flow_windows FINAL
WHERE src_subnet = {src:String} AND dst_subnet = {dst:String}
  AND window_start >= {from:DateTime} AND window_start < {to:DateTime}
ORDER BY time
