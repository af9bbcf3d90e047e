// Every product-to-product relation; $exclude lists the types that are not relations.
MATCH (a:Product)-[r]->(b:Product)
WHERE NOT type(r) IN $exclude
RETURN a.id AS product_id, toLower(type(r)) AS relation, b.id AS related_product_id
