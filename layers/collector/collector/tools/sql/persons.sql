-- persons: every distinct id, its person, whether the graph holds it (identified), and when
-- the events naming it were first and last seen (by event time).
WITH seen AS (
  SELECT anonymousid AS distinct_id, "timestamp" FROM events WHERE anonymousid IS NOT NULL
  UNION ALL
  SELECT userid AS distinct_id, "timestamp" FROM events WHERE userid IS NOT NULL
  UNION ALL
  SELECT previousid AS distinct_id, "timestamp" FROM events WHERE previousid IS NOT NULL
), spans AS (
  SELECT distinct_id, min("timestamp") AS first_seen, max("timestamp") AS last_seen
  FROM seen
  GROUP BY distinct_id
)
SELECT
  coalesce(identity_map.distinct_id, spans.distinct_id) AS distinct_id,
  coalesce(identity_map.person_id, spans.distinct_id) AS person_id,
  identity_map.person_id IS NOT NULL AS identified,
  spans.first_seen,
  spans.last_seen
FROM spans
FULL OUTER JOIN identity_map ON identity_map.distinct_id = spans.distinct_id
-- An id the graph refused is no one's: its events belong to their anonymous ids.
WHERE identity_map.person_id IS NOT NULL
  OR spans.distinct_id IN (SELECT anonymousid FROM events WHERE anonymousid IS NOT NULL)
