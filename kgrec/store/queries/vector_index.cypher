// The vector index on product embeddings, for db.index.vector.queryNodes('product_embedding', k, vector).
// $options: {indexConfig: {`vector.dimensions`: dim, `vector.similarity_function`: 'cosine'}}
CREATE VECTOR INDEX product_embedding IF NOT EXISTS
FOR (p:Product) ON p.embedding
OPTIONS $options
