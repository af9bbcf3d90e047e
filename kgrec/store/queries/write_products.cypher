// $rows: [{id, title, description, price}]
UNWIND $rows AS row
MERGE (p:Product {id: row.id})
SET p.title = row.title, p.description = row.description, p.price = row.price
