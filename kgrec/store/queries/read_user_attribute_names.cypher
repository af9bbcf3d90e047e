// The names of the properties users carry besides those kgrec sets itself ($reserved).
MATCH (u:User)
UNWIND keys(u) AS key
WITH DISTINCT key
WHERE NOT key IN $reserved
RETURN key
ORDER BY key
