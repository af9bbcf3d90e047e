// Every product with its brand and its (most specific) category paths.
MATCH (p:Product)
OPTIONAL MATCH (p)-[:MADE_BY]->(b:Brand)
WITH p, head(collect(b.name)) AS brand
OPTIONAL MATCH (p)-[:IN_CATEGORY]->(c:Category)
WITH p, brand, collect(c.path) AS categories
RETURN p.id AS product_id, p.title AS title, p.description AS description,
       p.price AS price, brand, categories
