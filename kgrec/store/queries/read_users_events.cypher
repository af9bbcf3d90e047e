// The interaction events of the users in $user_ids (users without events give no row).
UNWIND $user_ids AS user_id
MATCH (u:User {id: user_id})-[r:INTERACTED]->(p:Product)
RETURN u.id AS user_id, p.id AS product_id, r.timestamp AS timestamp, r.weight AS weight
