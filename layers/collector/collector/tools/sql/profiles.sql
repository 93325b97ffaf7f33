-- profiles: one row per person: its distinct ids, first and last seen, and its traits merged
-- from its identify calls (the latest non-null value of each trait, by event time).
-- rudder-sdk-python sends an identify's traits in context.traits, not at the top level.
WITH identifies AS (
  SELECT
    person_id,
    "timestamp",
    coalesce(traits, json_format(json_extract(context, '$.traits'))) AS traits
  FROM person_events
  WHERE type = 'identify'
), trait_values AS (
  SELECT
    identifies.person_id,
    named.trait,
    element_at(CAST(json_parse(identifies.traits) AS MAP(VARCHAR, JSON)), named.trait) AS value,
    identifies."timestamp"
  FROM identifies
  CROSS JOIN UNNEST(
    map_keys(CAST(json_parse(identifies.traits) AS MAP(VARCHAR, JSON)))
  ) AS named (trait)
), latest AS (
  SELECT person_id, trait, max_by(value, "timestamp") AS value
  FROM trait_values
  -- A JSON null is SQL NULL in DuckDB and JSON 'null' in Trino: both mean "no value".
  WHERE value IS NOT NULL AND json_format(value) <> 'null'
  GROUP BY person_id, trait
), traits AS (
  SELECT
    person_id,
    json_format(CAST(map_from_entries(array_agg(ROW(trait, value))) AS JSON)) AS traits
  FROM latest
  GROUP BY person_id
), ids AS (
  SELECT
    person_id,
    array_agg(distinct_id ORDER BY distinct_id) AS distinct_ids,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen
  FROM persons
  GROUP BY person_id
)
SELECT ids.person_id, ids.distinct_ids, ids.first_seen, ids.last_seen, traits.traits
FROM ids
LEFT JOIN traits ON traits.person_id = ids.person_id
