// The products in any of the categories $paths or their subcategories (at most $limit).
UNWIND $paths AS path
MATCH (:Category {path: path})<-[:SUBCATEGORY_OF*0..]-(:Category)<-[:IN_CATEGORY]-(p:Product)
WITH DISTINCT p LIMIT $limit
RETURN collect(p.id) AS product_ids
