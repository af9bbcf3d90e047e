// A query's candidates, in one round trip: the products whose id, title, description, brand or
// category names match the Lucene query $text (full-text index product_text), best first, with
// Lucene's score; the products of any of the brands $brands; the products in any of the
// categories $paths or their subcategories (at most $member_limit of each).
CALL {
  WITH $text AS text
  WITH text WHERE text <> ''
  CALL db.index.fulltext.queryNodes('product_text', text, {limit: $limit}) YIELD node, score
  WITH node, score ORDER BY score DESC
  RETURN collect(node.id) AS product_ids, collect(score) AS scores
}
CALL {
  UNWIND $brands AS name
  MATCH (:Brand {name: name})<-[:MADE_BY]-(p:Product)
  WITH DISTINCT p LIMIT $member_limit
  RETURN collect(p.id) AS brand_products
}
CALL {
  UNWIND $paths AS path
  MATCH (:Category {path: path})<-[:SUBCATEGORY_OF*0..]-(:Category)<-[:IN_CATEGORY]-(p:Product)
  WITH DISTINCT p LIMIT $member_limit
  RETURN collect(p.id) AS category_products
}
RETURN product_ids, scores, brand_products, category_products
