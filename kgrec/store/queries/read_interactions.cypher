// Every interaction event.
MATCH (u:User)-[r:INTERACTED]->(p:Product)
RETURN u.id AS user_id, p.id AS product_id, r.event AS event, r.timestamp AS timestamp,
       r.value AS value, r.weight AS weight
