-- identity_map: the current person of every distinct id in the identity graph, the latest
-- exported row of each id (a row without a person: the id left the graph).
SELECT distinct_id, person_id
FROM (
  SELECT
    distinct_id,
    person_id,
    row_number() OVER (PARTITION BY distinct_id ORDER BY sequence DESC) AS recency
  FROM identities
) AS ranked
WHERE recency = 1 AND person_id IS NOT NULL
