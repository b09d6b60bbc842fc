-- title: Monitors
-- grafana: table
-- description: The live monitors (not deleted) with their definitions, as the sink landed them from the
-- description: monitors topic (flowmon monitor create/delete). local and remote are kind:id lists; remote
-- description: ['any'] matches everything, including remotes outside the topology.
SELECT
    name,
    local,
    remote,
    description,
    definition,
    updated
FROM monitors FINAL
WHERE deleted = 0
ORDER BY name
