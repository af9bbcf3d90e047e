// Products that are not in a trained model ($known: the model's product ids), with their
// brand, category paths and the products they are related to (ALSO_BOUGHT, ...).
MATCH (p:Product)
WHERE NOT p.id IN $known
OPTIONAL MATCH (p)-[:MADE_BY]->(b:Brand)
WITH p, head(collect(b.name)) AS brand
OPTIONAL MATCH (p)-[:IN_CATEGORY]->(c:Category)
WITH p, brand, collect(c.path) AS categories
OPTIONAL MATCH (p)--(q:Product)
RETURN p.id AS product_id, p.title AS title, p.description AS description, brand, categories,
       collect(DISTINCT q.id) AS related
