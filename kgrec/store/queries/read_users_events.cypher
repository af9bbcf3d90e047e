// The interaction events of the users in $user_ids: one row per user with events, the events
// as [product_id, timestamp, weight] lists (users without events give no row).
UNWIND $user_ids AS user_id
MATCH (u:User {id: user_id})-[r:INTERACTED]->(p:Product)
RETURN u.id AS user_id, collect([p.id, r.timestamp, r.weight]) AS events
