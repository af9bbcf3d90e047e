// $rows: [[product_id, category_path]]
UNWIND $rows AS row
MATCH (p:Product {id: row[0]})
MATCH (c:Category {path: row[1]})
MERGE (p)-[:IN_CATEGORY]->(c)
