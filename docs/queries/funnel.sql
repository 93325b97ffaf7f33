-- Of the people who saw the pricing page, how many signed up afterwards? Counted in persons,
-- so a visit before signing up counts for the person who signed up later.
WITH pricing AS (
  SELECT person_id, min("timestamp") AS first_visit
  FROM person_events
  WHERE type = 'page' AND json_extract_scalar(context, '$.page.path') = '/pricing'
  GROUP BY person_id
), signed_up AS (
  SELECT DISTINCT pricing.person_id
  FROM pricing
  JOIN person_events
    ON person_events.person_id = pricing.person_id
    AND person_events.type = 'track'
    AND person_events.event = 'Signed Up'
    AND person_events."timestamp" > pricing.first_visit
)
SELECT
  (SELECT count(*) FROM pricing) AS saw_pricing,
  (SELECT count(*) FROM signed_up) AS then_signed_up
