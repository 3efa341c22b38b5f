"""The feature store service: newest values per entity in Redis, vectors in FAISS."""
