// The products whose id is one of $ids, with their titles.
MATCH (p:Product)
WHERE p.id IN $ids
RETURN p.id AS product_id, p.title AS title
