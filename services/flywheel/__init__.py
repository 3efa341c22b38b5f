"""Flywheel Mesh: a data flywheel of five gRPC services over Kafka topics."""

__version__ = "0.1.0"
