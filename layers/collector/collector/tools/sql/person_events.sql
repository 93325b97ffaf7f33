-- person_events: every event with its person: its userId's person when that userId is in the
-- graph, else its anonymousId's, else the anonymousId alone. A userId the graph refused (a
-- placeholder such as "null") never becomes a person, so it cannot join two strangers.
SELECT
  events.*,
  coalesce(by_user.person_id, by_anonymous.person_id, events.anonymousid) AS person_id
FROM events
LEFT JOIN identity_map AS by_user ON by_user.distinct_id = events.userid
LEFT JOIN identity_map AS by_anonymous ON by_anonymous.distinct_id = events.anonymousid
