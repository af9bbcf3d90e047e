// Every user with its attributes.
MATCH (u:User)
RETURN u.id AS user_id, properties(u) AS attributes
