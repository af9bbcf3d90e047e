// One page of products for an export, as read_products_page, each with its product-to-product
// relations as [relation, related_product_id]; $exclude lists the types that are not relations.
MATCH (a:Product)
WHERE a.id > $after
WITH a ORDER BY a.id LIMIT $size
RETURN a.id AS product_id,
       [(a)-[r]->(b:Product) WHERE NOT type(r) IN $exclude | [toLower(type(r)), b.id]] AS related
