-- Revenue by first-touch campaign: each person's earliest event that names a campaign, and
-- the revenue of all their orders.
WITH touches AS (
  SELECT
    person_id,
    min_by(json_extract_scalar(context, '$.campaign.name'), "timestamp") AS campaign
  FROM person_events
  WHERE json_extract_scalar(context, '$.campaign.name') IS NOT NULL
  GROUP BY person_id
), revenue AS (
  SELECT person_id, sum(CAST(json_extract_scalar(properties, '$.revenue') AS DOUBLE)) AS revenue
  FROM person_events
  WHERE type = 'track' AND event = 'Order Completed'
  GROUP BY person_id
)
SELECT touches.campaign, count(*) AS persons, coalesce(sum(revenue.revenue), 0) AS revenue
FROM touches
LEFT JOIN revenue ON revenue.person_id = touches.person_id
GROUP BY touches.campaign
ORDER BY touches.campaign
