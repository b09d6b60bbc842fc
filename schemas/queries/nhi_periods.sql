-- title: Network Health Indicator: degraded periods
-- description: Every scope (AZ, AZ pair, subnet, VPC) the network was degraded in at some time in the range,
-- description: from when to when (ongoing: still degraded), and the element blamed.
-- params: from DateTime, to DateTime
-- grafana: table
SELECT scope_kind, scope, start, end, element AS blamed
FROM nhi FINAL
WHERE start < {to:DateTime} AND (end IS NULL OR end > {from:DateTime})
ORDER BY start DESC, scope_kind, scope
LIMIT 500
