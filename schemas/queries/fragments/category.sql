-- fragment: category
-- description: The traffic category of a row with src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, from the
-- description: reporting side's point of view: intra-az (same VPC, same AZ), inter-az (same VPC, different AZs),
-- description: inter-vpc, unclassified (either end outside the known topology). An expression: {{category}} AS name.
-- description: (The schema's az_traffic view, step 003, says external for unclassified.)
multiIf(src_subnet = 'external' OR dst_subnet = 'external'
            OR src_vpc IN ('', 'external') OR dst_vpc IN ('', 'external'), 'unclassified',
        src_vpc != dst_vpc, 'inter-vpc',
        src_az = dst_az, 'intra-az',
        'inter-az')
