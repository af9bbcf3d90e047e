// Brands and categories whose name matches the Lucene query $text (full-text index entity_names),
// best first. key = the brand name or the category path.
CALL db.index.fulltext.queryNodes('entity_names', $text, {limit: $limit}) YIELD node, score
RETURN CASE WHEN node:Brand THEN 'brand' ELSE 'category' END AS kind,
       coalesce(node.path, node.name) AS key, node.name AS name, score
ORDER BY score DESC
LIMIT $limit
