// kgrec graph schema (Neo4j 5.26). kgrec runs this file before any write; every
// statement is idempotent (IF NOT EXISTS).
//
// Nodes
//   (:User     {id})                              id = user_id from the shop's files, plus any user attributes
//   (:Product  {id, title, description, price})   id = product_id
//   (:Brand    {name})
//   (:Category {path, name})                      path = "Beauty > Makeup > Eyes" (unique), name = "Eyes"
//
// Relationships
//   (:User)-[:INTERACTED {event, timestamp, weight, value}]->(:Product)
//       One relationship per event: event in view|click|cart|purchase|rating,
//       timestamp in epoch seconds (UTC), weight = the configured weight of the
//       event type (ingest.event_weights), value = the optional value column (a
//       rating, a quantity). Events are kept, not aggregated: the same
//       (user, product, event, timestamp) is the same event, so loading a file
//       twice changes nothing and loading new events adds them.
//   (:Product)-[:MADE_BY]->(:Brand)
//   (:Product)-[:IN_CATEGORY]->(:Category)          the most specific categories listed
//   (:Category)-[:SUBCATEGORY_OF]->(:Category)      child to parent
//   (:Product)-[:ALSO_BOUGHT|ALSO_VIEWED|BOUGHT_TOGETHER|...]->(:Product)
//       product-to-product relations; the type is the relation column upper-cased
//   (:User)-[:RECOMMENDED {rank, score, relevance, popularity, diversity, model, created_at,
//                          reasons, reason_kinds, via_products, via, reason_strengths}]->(:Product)
//       written by `kgrec recommend --explain`; the reason lists are parallel: reason i
//       is the sentence reasons[i], of kind reason_kinds[i] (brand, category, relation,
//       co_interaction), through the user's product via_products[i] and via[i] (the
//       brand name, category path or relation type). See cypher/why_recommended.cypher.
//
// Full-text (Lucene) indexes for `kgrec search`: product_text over a product's id, title,
// description and search_text (its brand's and categories' names, set when the graph is
// written); entity_names over brand and category names, to link a query's words to them.
//
// Uniqueness constraints (each also creates the index that the MERGEs use):
CREATE CONSTRAINT user_id IF NOT EXISTS FOR (u:User) REQUIRE u.id IS UNIQUE;
CREATE CONSTRAINT product_id IF NOT EXISTS FOR (p:Product) REQUIRE p.id IS UNIQUE;
CREATE CONSTRAINT brand_name IF NOT EXISTS FOR (b:Brand) REQUIRE b.name IS UNIQUE;
CREATE CONSTRAINT category_path IF NOT EXISTS FOR (c:Category) REQUIRE c.path IS UNIQUE;
// Full-text indexes (standard analyzer, no stop words):
CREATE FULLTEXT INDEX product_text IF NOT EXISTS FOR (p:Product) ON EACH [p.id, p.title, p.description, p.search_text];
CREATE FULLTEXT INDEX entity_names IF NOT EXISTS FOR (n:Brand|Category) ON EACH [n.name];
