// $rows: [[user_id, product_id, event, timestamp, weight, value]]: the same MERGE as
// write_interactions.cypher, through the managed server's procedure
// (store/java/KgrecNeo4j.java), which looks each user and product up once per batch.
// Procedures' writes are not in the server's update counters, so it reports its own.
CALL kgrec.mergeInteractions($rows) YIELD created
RETURN created AS relationships_created
