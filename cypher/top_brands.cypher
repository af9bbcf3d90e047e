// Question: which brands are recommended most, and what share of the exposure does each get?
// recommendations = RECOMMENDED relationships to the brand's products; share_pct = their share of
// all recommendations; exposure_pct = the same weighted by position (rank r counts 1 / log2(r + 1),
// as in DCG, so a first place counts more than a tenth); catalog_pct = the brand's share of the
// catalog, to compare with: exposure far above catalog_pct means the brand is favoured.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param model => null          // a model id to look at one model only; null = every model
//   :param top => 20
// params: {"model": null, "top": 20}
//
// Example result:
//   | brand   | recommendations | users | products | share_pct | exposure_pct | catalog_pct |
//   |---------|-----------------|-------|----------|-----------|--------------|-------------|
//   | "Lumen" | 4               | 3     | 2        | 50.0      | 61.6         | 33.3        |
//   | "Aster" | 3               | 3     | 2        | 37.5      | 29.9         | 33.3        |
MATCH ()-[r:RECOMMENDED]->(:Product)
WHERE $model IS NULL OR r.model = $model
WITH count(r) AS total, sum(log(2) / log(r.rank + 1)) AS total_exposure
CALL () {
    MATCH (q:Product)
    RETURN count(q) AS catalog
}
MATCH (u:User)-[r:RECOMMENDED]->(p:Product)-[:MADE_BY]->(b:Brand)
WHERE $model IS NULL OR r.model = $model
WITH b, total, total_exposure, catalog,
     count(r) AS recommendations, count(DISTINCT u) AS users, count(DISTINCT p) AS products,
     sum(log(2) / log(r.rank + 1)) AS exposure
RETURN b.name AS brand, recommendations, users, products,
       round(100.0 * recommendations / total, 1) AS share_pct,
       round(100.0 * exposure / total_exposure, 1) AS exposure_pct,
       round(100.0 * COUNT { (b)<-[:MADE_BY]-(:Product) } / catalog, 1) AS catalog_pct
ORDER BY recommendations DESC, brand
LIMIT $top
