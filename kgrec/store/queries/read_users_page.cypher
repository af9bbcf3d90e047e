// One page of users for an export, as read_interactions_page, each with the values of the
// attributes $attributes (null where a user lacks one).
MATCH (u:User)
WHERE u.id > $after
WITH u ORDER BY u.id LIMIT $size
RETURN u.id AS user_id, [key IN $attributes | u[key]] AS attributes
