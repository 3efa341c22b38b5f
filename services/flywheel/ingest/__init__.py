"""The ingest service: validates events against the spec and publishes them to Kafka."""
