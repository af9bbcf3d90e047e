// Question: which categories are recommended most, and what share of the exposure does each get?
// Counts each recommendation once per category listed on its product (the most specific paths);
// share_pct and exposure_pct are over all recommendations, exposure weighting rank r by
// 1 / log2(r + 1). A product in two categories counts in both, so shares may add up to more than 100.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param model => null          // a model id to look at one model only; null = every model
//   :param top => 20
// params: {"model": null, "top": 20}
//
// Example result:
//   | category                 | recommendations | users | products | share_pct | exposure_pct |
//   |--------------------------|-----------------|-------|----------|-----------|--------------|
//   | "Beauty > Makeup > Eyes" | 4               | 3     | 2        | 50.0      | 61.6         |
//   | "Beauty > Makeup > Lips" | 3               | 3     | 2        | 37.5      | 29.9         |
//   | "Beauty > Skin"          | 2               | 2     | 1        | 25.0      | 19.2         |
//   | "Garden > Tools"         | 1               | 1     | 1        | 12.5      | 8.5          |
MATCH ()-[r:RECOMMENDED]->(:Product)
WHERE $model IS NULL OR r.model = $model
WITH count(r) AS total, sum(log(2) / log(r.rank + 1)) AS total_exposure
MATCH (u:User)-[r:RECOMMENDED]->(p:Product)-[:IN_CATEGORY]->(c:Category)
WHERE $model IS NULL OR r.model = $model
WITH c, total, total_exposure,
     count(r) AS recommendations, count(DISTINCT u) AS users, count(DISTINCT p) AS products,
     sum(log(2) / log(r.rank + 1)) AS exposure
RETURN c.path AS category, recommendations, users, products,
       round(100.0 * recommendations / total, 1) AS share_pct,
       round(100.0 * exposure / total_exposure, 1) AS exposure_pct
ORDER BY recommendations DESC, category
LIMIT $top
