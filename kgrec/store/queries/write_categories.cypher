// $rows: [{path, name, parent}]; parents come in the same or an earlier batch (sorted by path)
UNWIND $rows AS row
MERGE (c:Category {path: row.path})
SET c.name = row.name
WITH c, row
WHERE row.parent IS NOT NULL
MERGE (parent:Category {path: row.parent})
MERGE (c)-[:SUBCATEGORY_OF]->(parent)
