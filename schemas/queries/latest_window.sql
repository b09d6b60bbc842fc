-- title: Newest landed window
-- description: The end of the newest window in ClickHouse (0 when none) and the wall clock of its close:
-- description: the console anchors relative ranges on the first and turns auto-refresh on when the second is recent.
-- params:
-- grafana: none
SELECT
    toUnixTimestamp(max(window_start)) + toUInt32(max(window_s)) AS latest_end,
    toUnixTimestamp(max(closed_at)) AS latest_closed,
    count() > 0 AS has_data
FROM flow_windows
