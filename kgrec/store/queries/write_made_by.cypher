// $rows: [[product_id, brand]]. A product has one brand: a changed brand replaces the old edge.
UNWIND $rows AS row
MATCH (p:Product {id: row[0]})
MATCH (b:Brand {name: row[1]})
MERGE (p)-[:MADE_BY]->(b)
WITH p, b
MATCH (p)-[old:MADE_BY]->(other:Brand)
WHERE other <> b
DELETE old
