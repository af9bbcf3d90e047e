// One page of products for an export: the first $size with an id after $after, in id order
// (keyset pagination over the product_id index), each with its brand and (most specific)
// category paths.
MATCH (p:Product)
WHERE p.id > $after
WITH p ORDER BY p.id LIMIT $size
RETURN p.id AS product_id, p.title AS title, p.description AS description, p.price AS price,
       head([(p)-[:MADE_BY]->(b:Brand) | b.name]) AS brand,
       [(p)-[:IN_CATEGORY]->(c:Category) | c.path] AS categories
