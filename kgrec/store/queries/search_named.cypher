// What a query may name, in one round trip: the brands and categories whose name matches the
// Lucene query $text (full-text index entity_names; key = the brand name or the category path),
// best first; the products whose id is one of $ids, with their titles; and which of the query's
// words ($words: [word, the word escaped for Lucene] pairs) some product's text holds as spelt
// (a word the catalog knows is not a typo of a brand or category name).
CALL {
  WITH $text AS text
  WITH text WHERE text <> ''
  CALL db.index.fulltext.queryNodes('entity_names', text, {limit: $limit}) YIELD node, score
  WITH node, score ORDER BY score DESC
  RETURN collect([CASE WHEN node:Brand THEN 'brand' ELSE 'category' END, coalesce(node.path, node.name), node.name, score]) AS entities
}
CALL {
  MATCH (p:Product)
  WHERE p.id IN $ids
  RETURN collect([p.id, p.title]) AS products
}
CALL {
  UNWIND $words AS word
  CALL db.index.fulltext.queryNodes('product_text', word[1], {limit: 1}) YIELD node
  RETURN collect(DISTINCT word[0]) AS catalog_words
}
RETURN entities, products, catalog_words
