-- title: Dead letters by reason
-- description: Refused reports and samples in the range (ingest, aggregate, sink), per reason: how many dead
-- description: letters and how many samples they stand for. Nothing a user sent is dropped silently.
-- params: from DateTime, to DateTime
-- grafana: table
SELECT reason, count() AS dead_letters, sum(samples) AS samples, max(at) AS latest
FROM deadletter FINAL
WHERE at >= {from:DateTime} AND at < {to:DateTime}
GROUP BY reason
ORDER BY dead_letters DESC, reason
