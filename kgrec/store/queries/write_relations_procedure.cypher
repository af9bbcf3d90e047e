// $rows: [[product_id, related_product_id]], $type: the relationship type, e.g. ALSO_BOUGHT.
// The same MERGE as write_relations.cypher, through the managed server's procedure
// (store/java/KgrecNeo4j.java), which reports what it created itself.
CALL kgrec.mergeProductRelations($type, $rows) YIELD created
RETURN created AS relationships_created
