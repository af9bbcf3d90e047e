// $ids: product ids → their element ids (for write_interactions).
UNWIND $ids AS id
MATCH (n:Product {id: id})
RETURN id, elementId(n) AS element_id
