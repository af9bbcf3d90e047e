// Products whose id, title, description, brand or category names match the Lucene query $text
// (full-text index product_text), best first, with Lucene's score.
CALL db.index.fulltext.queryNodes('product_text', $text, {limit: $limit}) YIELD node, score
RETURN node.id AS product_id, score
ORDER BY score DESC
LIMIT $limit
