// $rows: [[id, [float, ...]]], $model: the model id that produced them.
// The label is written out (not a dynamic $($label)) so the lookup uses the id index.
UNWIND $rows AS row
MATCH (n:User {id: row[0]})
SET n.embedding = row[1], n.embedding_model = $model
