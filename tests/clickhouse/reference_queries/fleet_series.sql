-- title: Fleet traffic per window
-- description: Every subnet pair summed, one row per 10-minute window.
-- params: from DateTime, to DateTime
-- grafana: timeseries
-- grafana_panels: bytes; retransmissions; timeouts; rtt_mean_us
SELECT
    window_start AS time,
    sum(bytes) AS bytes,
    sum(retransmissions) AS retransmissions,
    sum(timeouts) AS timeouts,
    if(sum(rtt_count) = 0, 0, sum(rtt_sum_us) / sum(rtt_count)) AS rtt_mean_us,
    uniqExact(src_subnet, dst_subnet) AS pairs
FROM flow_windows FINAL
WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
GROUP BY window_start
ORDER BY time
