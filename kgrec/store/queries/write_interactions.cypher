// $rows: [[user_element_id, product_element_id, event, timestamp, weight, value]].
// The ids are elementId()s read just before (read_element_ids_*): a seek by element id
// is cheaper than an index lookup per row. One relationship per (event, timestamp).
UNWIND $rows AS row
MATCH (u) WHERE elementId(u) = row[0]
MATCH (p) WHERE elementId(p) = row[1]
MERGE (u)-[r:INTERACTED {event: row[2], timestamp: row[3]}]->(p)
SET r.weight = row[4], r.value = row[5]
