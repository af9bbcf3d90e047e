// Store recommendations, replacing each user's previous ones from the same model.
//
//   (:User)-[:RECOMMENDED {
//       rank,              1 = best
//       score,             = relevance_weight·relevance + popularity_weight·popularity + diversity_weight·diversity
//       relevance, popularity, diversity,    the normalised parts, each in [0, 1]
//       model,             the model id that produced it
//       created_at,        DateTime (UTC) of the run
//       reasons,           [text]: readable sentences, strongest first
//       reason_kinds,      [kind]: relation | brand | category | co_interaction
//       via_products,      [product id]: the user's history product each reason starts from
//       via,               [text]: the brand name, category path, relation type or co-interaction count
//       reason_strengths   [float]: how strong each reason is
//   }]->(:Product)
//
// The five reason lists are parallel: index i of each describes reason i. Per user, the old
// RECOMMENDED relationships with the same `model` are deleted and the new ones created in the
// same transaction, so a re-run never leaves duplicates; other models' relationships stay.
// Users or products missing from the graph are skipped.
//
// $rows: [{user_id, items: [{product_id, rank, score, relevance, popularity, diversity,
//          reasons, reason_kinds, via_products, via, reason_strengths}]}]  (each user once)
// $model: the model id; $created_at: DateTime
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
CALL (u) {
    MATCH (u)-[old:RECOMMENDED]->(:Product)
    WHERE old.model = $model
    DELETE old
}
WITH u, row
UNWIND row.items AS item
MATCH (p:Product {id: item.product_id})
CREATE (u)-[:RECOMMENDED {
    rank: item.rank, score: item.score,
    relevance: item.relevance, popularity: item.popularity, diversity: item.diversity,
    model: $model, created_at: $created_at,
    reasons: item.reasons, reason_kinds: item.reason_kinds, via_products: item.via_products,
    via: item.via, reason_strengths: item.reason_strengths
}]->(p)
