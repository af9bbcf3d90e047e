// Question: how much of each category does the recommender actually show?
// For every category (each level of the tree, with the products of its subcategories),
// products = products in it, recommended = those recommended to at least one user,
// coverage_pct = recommended / products. Low coverage: a part of the catalog nobody is shown.
//
// Parameters (Neo4j Browser or cypher-shell):
//   :param model => null          // a model id to look at one model only; null = every model
//   :param min_products => 1      // leave out categories with fewer products
// params: {"model": null, "min_products": 1}
//
// Example result:
//   | category                 | depth | products | recommended | coverage_pct |
//   |--------------------------|-------|----------|-------------|--------------|
//   | "Beauty"                 | 1     | 4        | 4           | 100.0        |
//   | "Beauty > Makeup > Eyes" | 3     | 2        | 2           | 100.0        |
//   | "Garden"                 | 1     | 2        | 1           | 50.0         |
//   | "Garden > Tools"         | 2     | 2        | 1           | 50.0         |
MATCH (c:Category)
CALL (c) {
    MATCH (p:Product)-[:IN_CATEGORY]->(:Category)-[:SUBCATEGORY_OF*0..]->(c)
    WITH DISTINCT p
    RETURN count(p) AS products,
           count(CASE WHEN EXISTS {
               MATCH (:User)-[r:RECOMMENDED]->(p) WHERE $model IS NULL OR r.model = $model
           } THEN 1 END) AS recommended
}
WITH c, products, recommended
WHERE products >= $min_products
RETURN c.path AS category, size(split(c.path, ' > ')) AS depth, products, recommended,
       round(100.0 * recommended / products, 1) AS coverage_pct
ORDER BY category
