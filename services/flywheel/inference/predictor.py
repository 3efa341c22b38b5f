"""Predict by entity (or by feature rows): features in the model's input order, the champion
answers, a shadow challenger is scored on the same rows, every prediction is logged.

The row read from the store is what the model sees and what the prediction log carries:
double, int64 and bool values as numbers (bool as 0 or 1), and the string values of a
version's categorical features as their codes in the vocabularies frozen in that version
(flywheel.common.encoding: index + 1, an unknown value 0). The row feeds the model's inputs
as the version binds them (flywheel.inference.bindings), and its outputs become predictions
by the output rule (flywheel.inference.outputs).

Row statuses: an entity the store does not know is ENTITY_NOT_FOUND; an entity lacking a
value (or holding a NaN or Inf, a string where the version reads a number, or a number where
it reads a category) for one of the model's features is FEATURE_MISSING, with the feature
named in `detail`. Such rows get no prediction id, are not run and not logged; the other rows
of the request are answered normally. Caller-given rows are checked strictly instead: a wrong
width or a NaN/Inf is INVALID_ARGUMENT for the request (they hold the numbers the model reads:
codes for categorical features).

A pinned version (one named by `version` that is neither champion nor shadow) answers alone
and is logged with role UNSPECIFIED: its rows are real, answered predictions, but judge
neither the champion nor a shadow.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram

from flywheel.common import tracing
from flywheel.common.context import current_request_id
from flywheel.common.encoding import CategoryCodes, codes_by_column, encode_row
from flywheel.common.errors import FailedPrecondition, InvalidArgument
from flywheel.common.metrics import ChildrenByKey
from flywheel.common.registry import CHAMPION
from flywheel.inference.model_store import ModelStore, ServedVersion
from flywheel.inference.prediction_log import (
    LogRecord,
    PredictionLog,
    RecordEncoder,
    timestamp_now,
)
from flywheel.inference.statistics import Statistics
from flywheel.v1 import common_pb2, prediction_pb2

log = logging.getLogger("flywheel.inference.predictor")

OK = prediction_pb2.ROW_STATUS_OK
ENTITY_NOT_FOUND = prediction_pb2.ROW_STATUS_ENTITY_NOT_FOUND
FEATURE_MISSING = prediction_pb2.ROW_STATUS_FEATURE_MISSING
CHAMPION_ROLE = common_pb2.MODEL_ROLE_CHAMPION
SHADOW_ROLE = common_pb2.MODEL_ROLE_SHADOW
PINNED_ROLE = common_pb2.MODEL_ROLE_UNSPECIFIED

ROWS = Counter(
    "flywheel_inference_predict_rows_total", "Predict rows by status.", ["model", "status"]
)
PREDICT_SECONDS = Histogram(
    "flywheel_inference_predict_seconds", "Predict calls answered, by model and version: "
    "seconds from the request to the logged answer.", ["model", "version"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
SHADOW_FAILURES = Counter(
    "flywheel_inference_shadow_failures_total", "Shadow runs that failed (never seen by callers)."
)


@dataclass(frozen=True)
class StoredEntity:
    """One entity as the feature store answered: a number (int64 and bool read as numbers),
    a string, or None where a value is absent."""

    entity_id: str
    found: bool
    values: Sequence[float | str | None]


# (entity type, entity ids, feature names) -> one StoredEntity per id, same order.
FetchFeatures = Callable[[str, list[str], list[str]], Awaitable[list[StoredEntity]]]


@dataclass
class RowResult:
    entity_id: str
    status: int
    prediction_id: str = ""
    output: common_pb2.ModelOutput | None = None
    detail: str = ""


@dataclass(frozen=True)
class PredictResult:
    model_name: str
    model_version: int
    rows: list[RowResult]


def split_model_ref(ref: str) -> tuple[str, str]:
    name, _, alias = ref.partition("@")
    if not name:
        raise InvalidArgument("model is required (a name, or name@alias)", field="model")
    return name, alias or CHAMPION


class Predictor:
    def __init__(
        self, store: ModelStore, fetch: FetchFeatures, prediction_log: PredictionLog,
        *, max_rows: int, statistics: Statistics | None = None,
    ) -> None:
        self._store = store
        self._statistics = statistics or Statistics()
        self._fetch = fetch
        self._log = prediction_log
        self._max_rows = max_rows
        # (model name, version, role) -> its record encoder; (model name, version) -> its
        # feature names and the code tables of its categorical ones (None: it has none).
        # Bounded.
        self._encoders: dict[tuple[str, int, int], RecordEncoder] = {}
        self._names: dict[tuple[str, int], tuple[list[str], dict[int, CategoryCodes] | None]] = {}
        self._rows = ChildrenByKey(
            ROWS, lambda name, status: (name, prediction_pb2.RowStatus.Name(status)))
        self._seconds = ChildrenByKey(PREDICT_SECONDS, lambda name, version: (name, str(version)))

    async def predict(
        self,
        model: str,
        version: int,
        entity_ids: Sequence[str] | None = None,
        rows: Sequence[Sequence[float]] | None = None,
    ) -> PredictResult:
        started = time.perf_counter()
        name, alias = split_model_ref(model)
        if version < 0:
            raise InvalidArgument("version must be positive (0: the alias's)", field="version")
        if version:
            served = await self._store.acquire(name, version, alias)
            state = self._store.current(name)
        else:
            state = self._store.state(name)
            served = self._store.resolve(name, version, alias)
        shadow = state.shadow if served is state.champion else None
        count = len(entity_ids or ()) or len(rows or ())
        if count == 0:
            raise InvalidArgument("give entity_ids or rows (none were given)", field="input")
        if count > self._max_rows:
            raise InvalidArgument(f"{count} rows; at most {self._max_rows} per call", field="input")
        meta = served.meta
        if served.loaded.layout is None:
            raise FailedPrecondition(f"model {name!r} v{meta.version} has no feature names; "
                                     "call it through ModelInfer", field="model")
        if entity_ids:
            if any(not e for e in entity_ids):
                raise InvalidArgument("entity ids must not be empty", field="entity_ids")
            with tracing.span("fetch features", {"flywheel.rows": len(entity_ids)}):
                results, vectors = await self._from_store(meta, list(entity_ids))
        else:
            results, vectors = _from_rows(meta, rows or ())
        scored = [i for i, r in enumerate(results) if r.status == OK]
        if scored:
            matrix = np.asarray([vectors[i] for i in scored], dtype=np.float64)
            statistics = self._statistics.of(name, meta.version)
            started_ns = time.perf_counter_ns()
            with tracing.span("run model", {"flywheel.model": name,
                                            "flywheel.model.version": meta.version}):
                try:
                    champion_out, shadow_out = await self._run(served, shadow, matrix)
                except BaseException:
                    statistics.failed(started_ns)
                    raise
            statistics.succeeded(started_ns, len(scored))
            now = timestamp_now()
            request_id = current_request_id()
            role = (CHAMPION_ROLE if served is state.champion
                    else SHADOW_ROLE if served is state.shadow else PINNED_ROLE)
            encoder = self._encoder(meta, role)
            shadow_encoder = self._encoder(shadow.meta, SHADOW_ROLE) if shadow_out else None
            records = []
            for k, i in enumerate(scored):
                row = results[i]
                row.prediction_id = prediction_id = uuid4_hex()
                row.output = champion_out[k]
                key = prediction_id.encode()
                records.append(LogRecord(key, encoder.encode(
                    prediction_id=prediction_id, entity_id=row.entity_id, features=vectors[i],
                    output=row.output, now=now, request_id=request_id,
                ), encoder.model_name, encoder.role))
                if shadow_encoder is not None:
                    # Keyed by the champion's prediction id: the caller's feedback for that id
                    # lands on the same partition and labels the shadow's row too.
                    records.append(LogRecord(key, shadow_encoder.encode(
                        prediction_id=uuid4_hex(), entity_id=row.entity_id,
                        features=vectors[i], output=shadow_out[k], now=now,
                        request_id=request_id,
                    ), shadow_encoder.model_name, shadow_encoder.role))
            with tracing.span("log predictions", {"flywheel.records": len(records)}):
                await self._log.publish(records)
        for row in results:
            self._rows(name, row.status).inc()
        self._seconds(name, meta.version).observe(time.perf_counter() - started)
        return PredictResult(name, meta.version, results)

    def _encoder(self, meta: common_pb2.ModelVersion, role: int) -> RecordEncoder:
        key = (meta.model_name, meta.version, role)
        encoder = self._encoders.get(key)
        if encoder is None:
            if len(self._encoders) >= 64:
                self._encoders.clear()
            encoder = self._encoders[key] = RecordEncoder(meta, role)
        return encoder

    def _feature_names(
        self, meta: common_pb2.ModelVersion
    ) -> tuple[list[str], dict[int, CategoryCodes] | None]:
        key = (meta.model_name, meta.version)
        found = self._names.get(key)
        if found is None:
            if len(self._names) >= 64:
                self._names.clear()
            names = list(meta.feature_names)
            vocabularies = {f: v.values for f, v in meta.vocabularies.items()}
            found = self._names[key] = (
                names, codes_by_column(names, vocabularies) if vocabularies else None)
        return found

    async def _from_store(
        self, meta: common_pb2.ModelVersion, entity_ids: list[str]
    ) -> tuple[list[RowResult], list[list[float] | None]]:
        names, codes = self._feature_names(meta)
        stored = await self._fetch(meta.entity_type, entity_ids, names)
        if codes is not None:
            return _encoded_rows(entity_ids, stored, names, codes)
        results: list[RowResult] = []
        vectors: list[list[float] | None] = []
        width = len(names)
        for entity_id, entity in zip(entity_ids, stored):
            if not entity.found:
                results.append(RowResult(entity_id, ENTITY_NOT_FOUND,
                                         detail=f"no features stored for {entity_id!r}"))
                vectors.append(None)
                continue
            values = entity.values
            # The common case in one pass: every value there, and their sum finite (a NaN or
            # an Inf anywhere would make it NaN or Inf; a string cannot be summed); else the
            # value-by-value check.
            try:
                usable = (len(values) == width and None not in values
                          and math.isfinite(sum(values)))
            except TypeError:
                usable = False
            if not usable:
                missing = [n for n, v in zip(names, values) if not _is_number(v)]
                if missing or len(values) != width:
                    results.append(RowResult(entity_id, FEATURE_MISSING,
                                             detail=f"missing or unusable features: {missing}"))
                    vectors.append(None)
                    continue
            results.append(RowResult(entity_id, OK))
            vectors.append(list(values))
        return results, vectors

    async def _run(
        self, served: ServedVersion, shadow: ServedVersion | None, matrix: np.ndarray
    ) -> tuple[list[common_pb2.ModelOutput], list[common_pb2.ModelOutput] | None]:
        champion = _score(served, matrix)
        if shadow is None:
            return await champion, None
        results = await asyncio.gather(champion, _score(shadow, matrix), return_exceptions=True)
        if isinstance(results[0], BaseException):
            raise results[0]
        if isinstance(results[1], BaseException):
            SHADOW_FAILURES.inc()
            log.warning("shadow %s v%d failed: %s", shadow.name, shadow.version, results[1])
            return results[0], None
        return results[0], results[1]


def _is_number(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def _encoded_rows(
    entity_ids: list[str], stored: list[StoredEntity], names: list[str],
    codes: dict[int, CategoryCodes],
) -> tuple[list[RowResult], list[list[float] | None]]:
    """Rows of a version with categorical features: strings become their codes."""
    results: list[RowResult] = []
    vectors: list[list[float] | None] = []
    for entity_id, entity in zip(entity_ids, stored):
        if not entity.found:
            results.append(RowResult(entity_id, ENTITY_NOT_FOUND,
                                     detail=f"no features stored for {entity_id!r}"))
            vectors.append(None)
            continue
        values = entity.values
        # A number where a category is read (or None anywhere) is unusable; encode_row
        # refuses a string where a number is read.
        unusable = [names[i] for i, v in enumerate(values)
                    if v is None or (i in codes) != isinstance(v, str)]
        row = None
        if not unusable and len(values) == len(names):
            row = encode_row(values, codes)
            if not math.isfinite(sum(row)):
                unusable = [n for n, v in zip(names, row) if not math.isfinite(v)]
        if unusable or row is None:
            results.append(RowResult(entity_id, FEATURE_MISSING,
                                     detail=f"missing or unusable features: {unusable}"))
            vectors.append(None)
            continue
        results.append(RowResult(entity_id, OK))
        vectors.append(row)
    return results, vectors


def _from_rows(
    meta: common_pb2.ModelVersion, rows: Sequence[Sequence[float]]
) -> tuple[list[RowResult], list[list[float] | None]]:
    width = len(meta.feature_names)
    vectors: list[list[float] | None] = []
    for index, row in enumerate(rows):
        values = list(row)
        if len(values) != width:
            raise InvalidArgument(
                f"rows[{index}] has {len(values)} values; model {meta.model_name} v{meta.version} "
                f"takes {width} ({', '.join(meta.feature_names)})", field="rows",
            )
        if not all(math.isfinite(v) for v in values):
            raise InvalidArgument(f"rows[{index}] holds NaN or Inf", field="rows")
        vectors.append(values)
    return [RowResult("", OK) for _ in rows], vectors


async def _score(served: ServedVersion, matrix: np.ndarray) -> list[common_pb2.ModelOutput]:
    loaded = served.loaded
    outputs = await served.batcher.infer(loaded.layout.feeds(matrix))
    return loaded.outputs.read(outputs, matrix.shape[0])


def uuid4_hex() -> str:
    """A random (version 4) UUID as 32 hex digits, like uuid.uuid4().hex, without building a
    UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()
