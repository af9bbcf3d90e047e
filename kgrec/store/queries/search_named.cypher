// What a query may name, in one round trip: the brands and categories whose name matches the
// Lucene query $text (full-text index entity_names; key = the brand name or the category path),
// best first; the products whose id is one of $ids, with their titles; and which of the query's
// words ($words: [word, the word escaped for Lucene] pairs) a product title holds as spelt, among
// each word's $title_hits best full-text hits (a word the catalog's titles use is not a typo of a
// brand or category name; descriptions are not asked, as a large catalog's hold most misspellings).
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
  CALL db.index.fulltext.queryNodes('product_text', word[1], {limit: $title_hits}) YIELD node
  WITH word, node WHERE toLower(node.title) CONTAINS word[0]
  RETURN collect(DISTINCT word[0]) AS catalog_words
}
RETURN entities, products, catalog_words
