// What a query may name, in one round trip: the brands and categories whose name matches the
// Lucene query $text (full-text index entity_names; key = the brand name or the category path),
// best first, and the products whose id is one of $ids, with their titles.
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
RETURN entities, products
