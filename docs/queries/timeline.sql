-- Everything one customer did, their anonymous history before signing up included.
SELECT "timestamp", type, coalesce(event, name) AS what, userid, anonymousid, messageid
FROM person_events
WHERE person_id = (SELECT person_id FROM identity_map WHERE distinct_id = 'user-1')
ORDER BY "timestamp", messageid
