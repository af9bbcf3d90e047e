// Question: why was product $product_id recommended to user $user_id?
// Shows the score and its three parts, then one row per stored reason (strongest first),
// with the history product the reason starts from and the user's events on it.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param user_id => 'u1'
//   :param product_id => 'p3'
//   :param model => null          // a model id to look at one model only; null = every model
// params: {"user_id": "u1", "product_id": "p3", "model": null}
//
// Example result:
//   | model      | rank | score | relevance | popularity | diversity | reason_kind | reason                                                                 | via_product | your_events  |
//   |------------|------|-------|-----------|------------|-----------|-------------|------------------------------------------------------------------------|-------------|--------------|
//   | "kgrec-v1" | 1    | 0.9   | 1.0       | 0.5        | 0.0       | "brand"     | "You bought 'Matte Eyeliner' (p1), also made by Lumen"                 | "p1"        | ["purchase"] |
//   | "kgrec-v1" | 1    | 0.9   | 1.0       | 0.5        | 0.0       | "category"  | "You bought 'Matte Eyeliner' (p1), also in Beauty > Makeup > Eyes"     | "p1"        | ["purchase"] |
//   | "kgrec-v1" | 1    | 0.9   | 1.0       | 0.5        | 0.0       | "category"  | "You viewed 'Gloss' (p2), from Beauty > Makeup > Lips; this product …" | "p2"        | ["view"]     |
MATCH (u:User {id: $user_id})-[r:RECOMMENDED]->(p:Product {id: $product_id})
WHERE $model IS NULL OR r.model = $model
UNWIND CASE size(r.reasons) WHEN 0 THEN [null] ELSE range(0, size(r.reasons) - 1) END AS i
OPTIONAL MATCH (via:Product {id: r.via_products[i]})
RETURN r.model AS model, r.rank AS rank,
       round(r.score, 3) AS score, round(r.relevance, 3) AS relevance,
       round(r.popularity, 3) AS popularity, round(r.diversity, 3) AS diversity,
       r.reason_kinds[i] AS reason_kind, r.reasons[i] AS reason, r.via_products[i] AS via_product,
       [(u)-[e:INTERACTED]->(via) | e.event] AS your_events
ORDER BY model, i
