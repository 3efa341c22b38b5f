"""The Kafka bus on confluent-kafka: typed topics, protobuf serde, headers, an idempotent
producer, consumers that store an offset only after their handler succeeded, and DLQs."""
