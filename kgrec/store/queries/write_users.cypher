// $rows: [{id, attributes}]; attributes is a map of the users file's extra columns
UNWIND $rows AS row
MERGE (u:User {id: row.id})
SET u += row.attributes
