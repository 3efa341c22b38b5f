"""Consuming `flywheel.model-loads.v1`: a version inference refused leaves the aliases.

Each REFUSED report goes to `Promotions.refused` (status REFUSED with the reason; aliases
naming the version back to the one serving before it, announced); LOADED reports change
nothing (a version once refused stays refused). Reports are idempotent to apply: a second
refusal of the same version changes nothing. A report naming a version the
registry does not have is logged and skipped; a failed announcement (Kafka down) raises, and
the consumer delivers the batch again.
"""

from __future__ import annotations

import logging

from flywheel.common.errors import InvalidArgument, NotFound
from flywheel.common.kafka.records import Record
from flywheel.training.promotions import Promotions
from flywheel.v1 import events_pb2

log = logging.getLogger("flywheel.training.load_reports")


class LoadReportHandler:
    def __init__(self, promotions: Promotions) -> None:
        self._promotions = promotions
        self.refusals = 0

    def __call__(self, records: list[Record[events_pb2.ModelLoadReported]]) -> None:
        for record in records:
            report = record.value
            if report.outcome != events_pb2.MODEL_LOAD_OUTCOME_REFUSED:
                continue
            reason = f"{report.reason or 'no reason given'} (replica {report.replica or '?'})"
            try:
                self._promotions.refused(report.model_name, report.version, reason)
            except (NotFound, InvalidArgument) as error:
                log.warning("load report for %s v%d skipped: %s", report.model_name,
                            report.version, error.message)
                continue
            self.refusals += 1
