// $rows: [[id, [float, ...]]], $label: User or Product, $model: the model id that produced them
UNWIND $rows AS row
MATCH (n:$($label) {id: row[0]})
SET n.embedding = row[1], n.embedding_model = $model
