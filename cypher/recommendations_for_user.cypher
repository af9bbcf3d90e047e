// Question: what was recommended to user $user_id, and why is the order what it is?
// One row per recommended product: the score, its three normalised parts and the reasons.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param user_id => 'u1'
//   :param model => null          // a model id to look at one model only; null = every model
// params: {"user_id": "u1", "model": null}
//
// Example result:
//   | model      | rank | product_id | title  | brand   | score | relevance | popularity | diversity | reasons                                                        |
//   |------------|------|------------|--------|---------|-------|-----------|------------|-----------|----------------------------------------------------------------|
//   | "kgrec-v1" | 1    | "p3"       | "Kohl" | "Lumen" | 0.9   | 1.0       | 0.5        | 0.0       | ["You bought 'Matte Eyeliner' (p1), also made by Lumen", …]    |
//   | "kgrec-v1" | 2    | "p4"       | "Balm" | "Aster" | 0.8   | 0.8       | 0.5        | 0.25      | [… "You viewed 'Gloss' (p2); this product is often bought with it"] |
//   | "kgrec-v1" | 3    | "p6"       | "Rake" | null    | 0.7   | 0.6       | 0.5        | 0.5       | []                                                             |
MATCH (:User {id: $user_id})-[r:RECOMMENDED]->(p:Product)
WHERE $model IS NULL OR r.model = $model
OPTIONAL MATCH (p)-[:MADE_BY]->(b:Brand)
RETURN r.model AS model, r.rank AS rank, p.id AS product_id, p.title AS title, b.name AS brand,
       round(r.score, 3) AS score, round(r.relevance, 3) AS relevance,
       round(r.popularity, 3) AS popularity, round(r.diversity, 3) AS diversity,
       r.reasons AS reasons
ORDER BY model, rank
