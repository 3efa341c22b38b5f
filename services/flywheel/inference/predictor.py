"""Predict by entity (or by feature rows): features in the model's input order, the champion
answers, a shadow challenger is scored on the same rows, every prediction is logged.

Row statuses: an entity the store does not know is ENTITY_NOT_FOUND; an entity lacking a
value (or holding a non-numeric, NaN or Inf value) for one of the model's features is
FEATURE_MISSING, with the feature named in `detail`. Such rows get no prediction id, are not
run and not logged; the other rows of the request are answered normally. Caller-given rows
are checked strictly instead: a wrong width or a NaN/Inf is INVALID_ARGUMENT for the request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from flywheel.common.context import current_request_id
from flywheel.common.errors import InvalidArgument
from flywheel.common.metrics import ChildrenByKey
from flywheel.common.registry import CHAMPION
from flywheel.inference.model_store import ModelStore, ServedVersion
from flywheel.inference.prediction_log import (
    LogRecord,
    PredictionLog,
    RecordEncoder,
    timestamp_now,
)
from flywheel.v1 import common_pb2, prediction_pb2

log = logging.getLogger("flywheel.inference.predictor")

OK = prediction_pb2.ROW_STATUS_OK
ENTITY_NOT_FOUND = prediction_pb2.ROW_STATUS_ENTITY_NOT_FOUND
FEATURE_MISSING = prediction_pb2.ROW_STATUS_FEATURE_MISSING
CHAMPION_ROLE = common_pb2.MODEL_ROLE_CHAMPION
SHADOW_ROLE = common_pb2.MODEL_ROLE_SHADOW

ROWS = Counter(
    "flywheel_inference_predict_rows_total", "Predict rows by status.", ["model", "status"]
)
SHADOW_FAILURES = Counter(
    "flywheel_inference_shadow_failures_total", "Shadow runs that failed (never seen by callers)."
)


@dataclass(frozen=True)
class StoredEntity:
    """One entity as the feature store answered: None where a value is absent or unusable."""

    entity_id: str
    found: bool
    values: Sequence[float | None]


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
        *, max_rows: int,
    ) -> None:
        self._store = store
        self._fetch = fetch
        self._log = prediction_log
        self._max_rows = max_rows
        # (model name, version, role) -> its record encoder; (model name, version) -> its
        # feature names. Bounded.
        self._encoders: dict[tuple[str, int, int], RecordEncoder] = {}
        self._names: dict[tuple[str, int], list[str]] = {}
        self._rows = ChildrenByKey(
            ROWS, lambda name, status: (name, prediction_pb2.RowStatus.Name(status)))

    async def predict(
        self,
        model: str,
        version: int,
        entity_ids: Sequence[str] | None = None,
        rows: Sequence[Sequence[float]] | None = None,
    ) -> PredictResult:
        name, alias = split_model_ref(model)
        if version < 0:
            raise InvalidArgument("version must be positive (0: the alias's)", field="version")
        state = self._store.state(name)
        served = self._store.resolve(name, version, alias)
        shadow = state.shadow if served is state.champion else None
        count = len(entity_ids or ()) or len(rows or ())
        if count == 0:
            raise InvalidArgument("give entity_ids or rows (none were given)", field="input")
        if count > self._max_rows:
            raise InvalidArgument(f"{count} rows; at most {self._max_rows} per call", field="input")
        meta = served.meta
        if entity_ids:
            if any(not e for e in entity_ids):
                raise InvalidArgument("entity ids must not be empty", field="entity_ids")
            results, vectors = await self._from_store(meta, list(entity_ids))
        else:
            results, vectors = _from_rows(meta, rows or ())
        scored = [i for i, r in enumerate(results) if r.status == OK]
        if scored:
            matrix = np.asarray([vectors[i] for i in scored], dtype=np.float64)
            champion_out, shadow_out = await self._run(served, shadow, matrix)
            now = timestamp_now()
            request_id = current_request_id()
            encoder = self._encoder(meta, CHAMPION_ROLE if served is state.champion else SHADOW_ROLE)
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
            await self._log.publish(records)
        for row in results:
            self._rows(name, row.status).inc()
        return PredictResult(name, meta.version, results)

    def _encoder(self, meta: common_pb2.ModelVersion, role: int) -> RecordEncoder:
        key = (meta.model_name, meta.version, role)
        encoder = self._encoders.get(key)
        if encoder is None:
            if len(self._encoders) >= 64:
                self._encoders.clear()
            encoder = self._encoders[key] = RecordEncoder(meta, role)
        return encoder

    def _feature_names(self, meta: common_pb2.ModelVersion) -> list[str]:
        key = (meta.model_name, meta.version)
        names = self._names.get(key)
        if names is None:
            if len(self._names) >= 64:
                self._names.clear()
            names = self._names[key] = list(meta.feature_names)
        return names

    async def _from_store(
        self, meta: common_pb2.ModelVersion, entity_ids: list[str]
    ) -> tuple[list[RowResult], list[list[float] | None]]:
        names = self._feature_names(meta)
        stored = await self._fetch(meta.entity_type, entity_ids, names)
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
            # an Inf anywhere would make it NaN or Inf); else the value-by-value check.
            if not (len(values) == width and None not in values
                    and math.isfinite(sum(values))):
                missing = [n for n, v in zip(names, values) if v is None or not math.isfinite(v)]
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
    signature = served.loaded.signature
    spec = signature.inputs[0]
    outputs = await served.batcher.infer({spec.name: matrix.astype(spec.dtype, copy=False)})
    return model_outputs(served.meta.task, signature, outputs, matrix.shape[0])


def model_outputs(
    task: int, signature, outputs: Sequence[np.ndarray], rows: int
) -> list[common_pb2.ModelOutput]:
    """Session outputs -> one ModelOutput per row (label / probabilities, or a value)."""
    label_at, floats_at = _output_kinds(signature)
    if task == common_pb2.MODEL_TASK_REGRESSION or (label_at is None and task == 0):
        values = outputs[floats_at[0]].reshape(rows, -1)[:, 0].tolist()
        return [common_pb2.ModelOutput(predicted_value=v) for v in values]
    matrix = next((outputs[i] for i in floats_at if outputs[i].ndim == 2), None)
    if label_at is not None:
        labels = outputs[label_at].reshape(rows).tolist()
    elif matrix is not None:
        labels = matrix.argmax(axis=1).tolist()
    else:
        labels = [0] * rows
    if matrix is None:
        return [common_pb2.ModelOutput(predicted_class=label) for label in labels]
    return [common_pb2.ModelOutput(predicted_class=label, probabilities=p)
            for label, p in zip(labels, matrix.tolist())]


_KINDS: dict[int, tuple[object, tuple[int | None, tuple[int, ...]]]] = {}


def _output_kinds(signature) -> tuple[int | None, tuple[int, ...]]:
    """(index of the first integer output, the label; indices of the float outputs), kept
    per signature."""
    cached = _KINDS.get(id(signature))
    if cached is not None and cached[0] is signature:
        return cached[1]
    kinds = [spec.dtype.kind for spec in signature.outputs]
    found = (next((i for i, k in enumerate(kinds) if k in "iu"), None),
             tuple(i for i, k in enumerate(kinds) if k == "f"))
    if len(_KINDS) >= 64:
        _KINDS.clear()
    _KINDS[id(signature)] = (signature, found)
    return found


def uuid4_hex() -> str:
    """A random (version 4) UUID as 32 hex digits, like uuid.uuid4().hex, without building a
    UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()
