// Question: which products are most similar to product $product_id (by the model's embeddings)?
// Uses the vector index `product_embedding` on :Product(embedding) (cosine similarity), which
// `kgrec` creates when it stores the embeddings.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param product_id => 'p1'
//   :param k => 5
// params: {"product_id": "p1", "k": 5}
//
// Example result:
//   | product_id | title   | brand   | similarity |
//   |------------|---------|---------|------------|
//   | "p3"       | "Kohl"  | "Lumen" | 0.9939     |
//   | "p2"       | "Gloss" | "Aster" | 0.8532     |
//   | "p6"       | "Rake"  | null    | 0.5563     |
MATCH (p:Product {id: $product_id})
CALL db.index.vector.queryNodes('product_embedding', $k + 1, p.embedding)
YIELD node, score
WITH p, node, score
WHERE node <> p
OPTIONAL MATCH (node)-[:MADE_BY]->(b:Brand)
RETURN node.id AS product_id, node.title AS title, b.name AS brand, round(score, 4) AS similarity
ORDER BY similarity DESC, product_id
LIMIT $k
