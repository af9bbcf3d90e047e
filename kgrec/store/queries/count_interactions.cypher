// The number of interaction events in the graph (from the count store: constant time).
MATCH ()-[r:INTERACTED]->()
RETURN count(r) AS events
