"""Memory: what the persona remembers: the vector memory of past episodes, its embedder and the recall digest."""
