// The products made by any of the brands $names (at most $limit).
UNWIND $names AS name
MATCH (:Brand {name: name})<-[:MADE_BY]-(p:Product)
WITH DISTINCT p LIMIT $limit
RETURN collect(p.id) AS product_ids
