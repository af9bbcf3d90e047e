// One page of users for an export: the first $size with an id after $after, in id order,
// each with its interaction events as [product_id, event, timestamp, value, weight].
MATCH (u:User)
WHERE u.id > $after
WITH u ORDER BY u.id LIMIT $size
RETURN u.id AS user_id,
       [(u)-[r:INTERACTED]->(p:Product) | [p.id, r.event, r.timestamp, r.value, r.weight]] AS events
