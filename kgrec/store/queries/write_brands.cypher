// $rows: [name]
UNWIND $rows AS name
MERGE (:Brand {name: name})
