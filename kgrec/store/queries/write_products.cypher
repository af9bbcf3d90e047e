// $rows: [{id, fields}]; fields holds only the product properties (title, description, price)
// that the products file has a column for. SET += leaves the others as stored, and a null in
// a given field removes that property (an empty cell clears the field).
UNWIND $rows AS row
MERGE (p:Product {id: row.id})
SET p += row.fields
