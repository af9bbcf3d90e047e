// $rows: [[product_id, related_product_id]], $type: the relationship type, e.g. ALSO_BOUGHT
UNWIND $rows AS row
MATCH (a:Product {id: row[0]})
MATCH (b:Product {id: row[1]})
MERGE (a)-[:$($type)]->(b)
