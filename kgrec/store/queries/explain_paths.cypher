// Knowledge-graph paths from one user to each product recommended to them, in one query.
//
// Parameters:
//   $user_id               the user
//   $product_ids           [product_id]: the recommended products
//   $history_limit         the user's strongest history products that paths start from
//   $co_interaction_limit  other users sampled per recommended product for co-interactions (caps fan-out)
//   $half_life_days        recency half-life of a history product's strength
//   $reasons_per_product   reasons returned per product (the caller picks the final few)
//   $exclude               relationship types that are not product-product relations
//                          (INTERACTED, MADE_BY, IN_CATEGORY, SUBCATEGORY_OF, RECOMMENDED)
//
// A history product x has strength h = (sum of the user's event weights on x) halved every
// $half_life_days before the user's latest event: heavier (purchase > view) and more
// recent products count more. A reason's strength is h times its kind's factor:
//   relation        (x)-[:ALSO_BOUGHT|BOUGHT_TOGETHER|...]-(p)                          h · 1.0
//   brand           (x)-[:MADE_BY]->(b)<-[:MADE_BY]-(p)                                   h · 0.8
//   category        (x)-[:IN_CATEGORY]->(c)<-[:IN_CATEGORY]-(p)                           h · 0.6
//                   sibling: x's category and p's category share a parent                h · 0.3
//   co_interaction  n of the sampled users who interacted with x also interacted with p  h · n / (n + 3)
//                   (up to $co_interaction_limit of p's other users are sampled; walking from p
//                   reads each sampled user's events once instead of testing every (user, p) pair)
//
// Returns one row per product that has at least one reason:
//   product_id, reasons: [{kind, via_product_id, via_title, events, via, detail, strength}]
//   (strongest first, one per (kind, via product); `events` = the user's event types on x,
//   `detail` = x's category for a sibling category, the count n for co_interaction).
MATCH (u:User {id: $user_id})-[e:INTERACTED]->(x:Product)
WITH u, x, sum(e.weight) AS weight, max(e.timestamp) AS last, collect(DISTINCT e.event) AS events
WITH u, collect({x: x, weight: weight, last: last, events: events}) AS items, max(last) AS latest
UNWIND items AS item
WITH u, item.x AS x, item.events AS events,
     item.weight * 0.5 ^ ((latest - item.last) / ($half_life_days * 86400.0)) AS h
ORDER BY h DESC
LIMIT $history_limit
WITH u, collect({x: x, h: h, events: events}) AS history
UNWIND $product_ids AS pid
MATCH (p:Product {id: pid})
CALL (u, p, history) {
    UNWIND history AS item
    WITH p, item.x AS x, item.h AS h, item.events AS events
    WHERE x <> p
    MATCH (x)-[r]-(p)
    WHERE NOT type(r) IN $exclude
    RETURN 'relation' AS kind, x, events, toLower(type(r)) AS via, null AS detail, h * 1.0 AS strength
  UNION ALL
    UNWIND history AS item
    WITH p, item.x AS x, item.h AS h, item.events AS events
    WHERE x <> p
    MATCH (x)-[:MADE_BY]->(b:Brand)<-[:MADE_BY]-(p)
    RETURN 'brand' AS kind, x, events, b.name AS via, null AS detail, h * 0.8 AS strength
  UNION ALL
    UNWIND history AS item
    WITH p, item.x AS x, item.h AS h, item.events AS events
    WHERE x <> p
    MATCH (x)-[:IN_CATEGORY]->(c:Category)<-[:IN_CATEGORY]-(p)
    RETURN 'category' AS kind, x, events, c.path AS via, null AS detail, h * 0.6 AS strength
  UNION ALL
    UNWIND history AS item
    WITH p, item.x AS x, item.h AS h, item.events AS events
    WHERE x <> p
    MATCH (x)-[:IN_CATEGORY]->(cx:Category)-[:SUBCATEGORY_OF]->(:Category)<-[:SUBCATEGORY_OF]-(cp:Category)<-[:IN_CATEGORY]-(p)
    WHERE cx <> cp AND NOT EXISTS { (x)-[:IN_CATEGORY]->(cp) }
    RETURN 'category' AS kind, x, events, cp.path AS via, cx.path AS detail, h * 0.3 AS strength
  UNION ALL
    // Walk from p: a sample of its other users, and which history products they interacted with.
    MATCH (p)<-[:INTERACTED]-(v:User)
    WHERE v <> u
    WITH DISTINCT p, v
    LIMIT $co_interaction_limit
    MATCH (v)-[:INTERACTED]->(x:Product)
    WHERE x <> p AND x IN [item IN history | item.x]
    WITH x, count(DISTINCT v) AS n
    WITH x, n, [item IN history WHERE item.x = x][0] AS item
    RETURN 'co_interaction' AS kind, x, item.events AS events, null AS via, n AS detail, item.h * n / (n + 3.0) AS strength
}
WITH p, kind, x, events, via, detail, strength
ORDER BY strength DESC
WITH p, kind, x, head(collect({
    kind: kind, via_product_id: x.id, via_title: x.title, events: events,
    via: via, detail: detail, strength: strength
})) AS reason
ORDER BY reason.strength DESC
WITH p, collect(reason) AS reasons
RETURN p.id AS product_id, reasons[..$reasons_per_product] AS reasons
