-- title: Top subnet pairs over time
-- description: One series per subnet pair, for the n pairs contributing most to the metric (bytes,
-- description: retransmissions, timeouts, or rtt: mean RTT in ms) over the range, in a category ('all',
-- description: intra-az, inter-az, inter-vpc, unclassified).
-- params: from DateTime, to DateTime, category String, metric String, n UInt32
-- grafana: timeseries
SELECT
    window_start AS time,
    concat(src_subnet, ' → ', dst_subnet) AS pair,
    multiIf({metric:String} = 'retransmissions', toFloat64(retransmissions),
            {metric:String} = 'timeouts', toFloat64(timeouts),
            {metric:String} = 'rtt', if(rtt_count = 0, nan, rtt_sum_us / rtt_count / 1000),
            toFloat64(bytes)) AS value
FROM flow_windows FINAL
WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
  AND (src_subnet, dst_subnet) IN (
      SELECT src_subnet, dst_subnet
      FROM flow_windows FINAL
      WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}
        AND ({category:String} = 'all' OR {{category}} = {category:String})
      GROUP BY src_subnet, dst_subnet
      HAVING {metric:String} != 'rtt' OR sum(rtt_count) > 0
      ORDER BY multiIf({metric:String} = 'retransmissions', toFloat64(sum(retransmissions)),
                       {metric:String} = 'timeouts', toFloat64(sum(timeouts)),
                       {metric:String} = 'rtt', sum(rtt_sum_us) / sum(rtt_count),
                       toFloat64(sum(bytes))) DESC, src_subnet, dst_subnet
      LIMIT {n:UInt32})
ORDER BY time, pair
