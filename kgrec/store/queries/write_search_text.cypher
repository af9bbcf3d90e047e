// $rows: product ids. Sets search_text, the names of the product's brand and of its categories
// with their parents, which the full-text index product_text covers beside id, title and
// description (a catalog without titles still matches by brand and category words).
UNWIND $rows AS id
MATCH (p:Product {id: id})
OPTIONAL MATCH (p)-[:MADE_BY]->(b:Brand)
WITH p, collect(b.name) AS brands
OPTIONAL MATCH (p)-[:IN_CATEGORY]->(:Category)-[:SUBCATEGORY_OF*0..]->(c:Category)
WITH p, brands, collect(DISTINCT c.name) AS categories
WITH p, brands + categories AS names
// toString: without it Neo4j 5.26 mistypes a name reached through the variable-length path.
SET p.search_text = trim(reduce(words = '', n IN names | words + ' ' + toString(n)))
