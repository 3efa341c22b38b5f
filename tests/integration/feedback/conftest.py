"""Fixtures of the feedback tests (helpers live in feedback_kit)."""

from feedback_kit import common, raw_producer, topics  # noqa: F401 - fixtures
