-- title: Where a subnet pair runs
-- description: The placement of src -> dst (subnets, AZs, VPCs) as its windows in the range recorded it,
-- description: with its traffic and the most instances that reported on it in one window.
-- params: src String, dst String, from DateTime, to DateTime
-- grafana: none
SELECT
    src_subnet, dst_subnet,
    argMax(src_az, window_start) AS src_az, argMax(src_vpc, window_start) AS src_vpc,
    argMax(dst_az, window_start) AS dst_az, argMax(dst_vpc, window_start) AS dst_vpc,
    sum(bytes) AS bytes, sum(retransmissions) AS retransmissions, sum(timeouts) AS timeouts,
    max(hosts) AS hosts, count() AS windows
FROM flow_windows FINAL
WHERE src_subnet = {src:String} AND dst_subnet = {dst:String}
  AND window_start >= {from:DateTime} AND window_start < {to:DateTime}
GROUP BY src_subnet, dst_subnet
