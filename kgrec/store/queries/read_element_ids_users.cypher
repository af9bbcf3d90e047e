// $ids: user ids → their element ids (for write_interactions).
UNWIND $ids AS id
MATCH (n:User {id: id})
RETURN id, elementId(n) AS element_id
