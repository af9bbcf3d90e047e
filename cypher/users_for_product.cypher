// Question: which users is product $product_id being recommended to?
// One row per user (and model), best placements first, with the top reason.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param product_id => 'p3'
//   :param model => null          // a model id to look at one model only; null = every model
//   :param limit => 25
// params: {"product_id": "p3", "model": null, "limit": 25}
//
// Example result:
//   | user_id | model      | rank | score | top_reason                                                                  | created_at           |
//   |---------|------------|------|-------|-----------------------------------------------------------------------------|----------------------|
//   | "u1"    | "kgrec-v1" | 1    | 0.9   | "You bought 'Matte Eyeliner' (p1), also made by Lumen"                      | 2024-05-01T12:00:00Z |
//   | "u2"    | "kgrec-v1" | 1    | 0.9   | "You bought 'Balm' (p4), from Beauty > Makeup > Lips; this product is in …" | 2024-05-01T12:00:00Z |
//   | "u3"    | "kgrec-v1" | 2    | 0.8   | "You put 'Gloss' (p2) in your cart, from Beauty > Makeup > Lips; this …"    | 2024-05-01T12:00:00Z |
MATCH (u:User)-[r:RECOMMENDED]->(:Product {id: $product_id})
WHERE $model IS NULL OR r.model = $model
RETURN u.id AS user_id, r.model AS model, r.rank AS rank, round(r.score, 3) AS score,
       r.reasons[0] AS top_reason, r.created_at AS created_at
ORDER BY rank, score DESC, user_id
LIMIT $limit
