// Question: what kinds of knowledge-graph reasons explain the recommendations, and how often?
// reasons = stored reasons of that kind; recommendations = recommendations with at least one
// reason of that kind; share_pct = its share of all stored reasons. The last row,
// "(no reason)", counts recommendations stored without any reason.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param model => null          // a model id to look at one model only; null = every model
// params: {"model": null}
//
// Example result:
//   | reason_kind      | reasons | recommendations | share_pct |
//   |------------------|---------|-----------------|-----------|
//   | "category"       | 9       | 7               | 50.0      |
//   | "brand"          | 4       | 4               | 22.2      |
//   | "relation"       | 3       | 3               | 16.7      |
//   | "co_interaction" | 2       | 2               | 11.1      |
//   | "(no reason)"    | 0       | 1               | null      |
MATCH ()-[r:RECOMMENDED]->()
WHERE $model IS NULL OR r.model = $model
WITH collect(r) AS recommendations
WITH recommendations, reduce(n = 0, r IN recommendations | n + size(r.reason_kinds)) AS total
UNWIND recommendations AS r
UNWIND CASE size(r.reason_kinds) WHEN 0 THEN ['(no reason)'] ELSE r.reason_kinds END AS kind
WITH kind, total, count(*) AS rows, count(DISTINCT r) AS recommendations
WITH kind, total, recommendations, CASE kind WHEN '(no reason)' THEN 0 ELSE rows END AS reasons
RETURN kind AS reason_kind, reasons, recommendations,
       CASE WHEN kind = '(no reason)' OR total = 0 THEN null ELSE round(100.0 * reasons / total, 1) END AS share_pct
ORDER BY kind = '(no reason)', reasons DESC, reason_kind
