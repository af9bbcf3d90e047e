// One user's interaction events, for the real-time user vector. No row: no such user.
MATCH (u:User {id: $user_id})
OPTIONAL MATCH (u)-[r:INTERACTED]->(p:Product)
WITH u, collect([p.id, r.timestamp, r.weight]) AS events
RETURN u.id AS user_id, [event IN events WHERE event[0] IS NOT NULL] AS events
