-- title: Monitor: data, retransmissions, timeouts, RTT and NHI per window
-- params: monitor String, from DateTime, to DateTime
-- grafana: timeseries
-- grafana_panels: bytes; retransmissions; timeouts; rtt_mean_us, rtt_p50_us, rtt_p90_us, rtt_p99_us
-- description: One row per window of the monitor: sums over the subnet pairs that fell in it, RTT mean from the
-- description: sums and percentiles from the merged histogram (bucket b = floor(16*log2(rtt_us)), value
-- description: 2^((b+0.5)/16), as pipeline/wire/rtt.py), the number of pairs, and the NHI of the window:
-- description: 'degraded' when a degraded period of a scope touching the monitor overlaps it, else 'healthy'.
WITH (
    SELECT groupArray((toUnixTimestamp(start), ifNull(toUnixTimestamp(end), 4294967295)))
    FROM monitor_nhi FINAL
    WHERE monitor = {monitor:String}
) AS periods
SELECT
    window_start AS time,
    b AS bytes,
    r AS retransmissions,
    t AS timeouts,
    if(n = 0, 0, s / n) AS rtt_mean_us,
    if(total = 0, 0, pow(2, (keys[arrayFirstIndex(c -> c >= 0.50 * total, cum)] + 0.5) / 16)) AS rtt_p50_us,
    if(total = 0, 0, pow(2, (keys[arrayFirstIndex(c -> c >= 0.90 * total, cum)] + 0.5) / 16)) AS rtt_p90_us,
    if(total = 0, 0, pow(2, (keys[arrayFirstIndex(c -> c >= 0.99 * total, cum)] + 0.5) / 16)) AS rtt_p99_us,
    pairs,
    if(arrayExists(p -> p.1 < toUnixTimestamp(window_start) + ws AND p.2 > toUnixTimestamp(window_start), periods),
       'degraded', 'healthy') AS nhi
FROM
(
    SELECT
        window_start,
        max(window_s)        AS ws,
        sum(bytes)           AS b,
        sum(retransmissions) AS r,
        sum(timeouts)        AS t,
        sum(rtt_count)       AS n,
        sum(rtt_sum_us)      AS s,
        count()              AS pairs,
        sumMap(rtt_hist)     AS hist,
        arraySort(mapKeys(hist))          AS keys,
        arrayCumSum(arrayMap(k -> hist[k], keys)) AS cum,
        arraySum(mapValues(hist))         AS total
    FROM monitor_windows FINAL
    WHERE monitor = {monitor:String} AND window_start >= {from:DateTime} AND window_start < {to:DateTime}
    GROUP BY window_start
)
ORDER BY time
