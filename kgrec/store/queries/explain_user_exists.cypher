// Whether a user is in the graph: one row, `found`. $user_id.
OPTIONAL MATCH (u:User {id: $user_id})
RETURN u IS NOT NULL AS found
