// $rows: [[user_id, product_id, event, timestamp, weight, value]]; users and products exist already
UNWIND $rows AS row
MATCH (u:User {id: row[0]})
MATCH (p:Product {id: row[1]})
MERGE (u)-[r:INTERACTED {event: row[2], timestamp: row[3]}]->(p)
SET r.weight = row[4], r.value = row[5]
