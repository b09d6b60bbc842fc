-- title: Monitor: degraded periods
-- params: monitor String, from DateTime, to DateTime
-- grafana: table
-- description: The Network Health Indicator periods of the scopes that touch the monitor (some subnet pair of
-- description: it crosses the scope) overlapping [from, to), with the infrastructure element blamed. end is NULL
-- description: while a period lasts.
SELECT
    start,
    end,
    scope_kind,
    scope,
    element,
    status
FROM monitor_nhi FINAL
WHERE monitor = {monitor:String} AND start < {to:DateTime} AND (end IS NULL OR end > {from:DateTime})
ORDER BY start, scope_kind, scope
