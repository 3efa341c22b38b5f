"""Verify, load and warm one model version, or refuse it.

Every check runs before an InferenceSession exists, in this order: the artifact is a regular
file inside its version folder (no symlink), within the size limit, its bytes hash to the
registry's sha256, they parse as ONNX and pass `onnx.checker`, and every external-data
reference stays inside the version folder (no traversal, no symlink, no absolute path). Only
then is the session created (from the verified bytes themselves when the model has no
external data, so the file cannot change between check and load), its inputs checked
against the version's bindings (flywheel.inference.bindings), a dummy batch run through it,
and its outputs matched to the output rule (flywheel.inference.outputs). A version that fails
any step is refused and never replaces the one serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from prometheus_client import Counter

from flywheel.common.errors import ArtifactRejected
from flywheel.common.registry import ModelRegistry
from flywheel.common.signing import SignatureRefused, Verifier
from flywheel.inference.bindings import BindingError, FeedLayout, layout_for
from flywheel.inference.external_data import escapes, external_locations
from flywheel.inference.outputs import OutputRule, UnusableOutputs
from flywheel.inference.runtime import Session, Signature, UnsupportedModel
from flywheel.v1 import common_pb2

log = logging.getLogger("flywheel.inference.loader")

REFUSED = Counter(
    "flywheel_inference_versions_refused_total",
    "Model versions refused at load time, by reason; the version serving before keeps serving.",
    ["model", "reason"],
)

SessionFactory = Callable[[bytes | str], Session]


class Rejected(ArtifactRejected):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LoadedModel:
    meta: common_pb2.ModelVersion
    session: Session
    # Rows of several requests may be stacked into one run (first dimensions are variable
    # and the warm-up proved that outputs follow the row count).
    batchable: bool
    # A registry version (one with feature names): how its rows feed the inputs, and how
    # its outputs become predictions. None for a bare tensor model.
    layout: FeedLayout | None = None
    outputs: OutputRule | None = None

    @property
    def signature(self) -> Signature:
        return self.session.signature


class Loader:
    def __init__(
        self,
        registry: ModelRegistry,
        session_factory: SessionFactory,
        *,
        max_artifact_bytes: int,
        warmup_rows: int = 2,
        signatures: Verifier | None = None,
    ) -> None:
        self._registry = registry
        self._signatures = signatures
        self._session_factory = session_factory
        self._max_bytes = max_artifact_bytes
        self._warmup_rows = warmup_rows

    def load(self, meta: common_pb2.ModelVersion) -> LoadedModel:
        """Blocking (run it in a thread). Raises `Rejected` naming the failed step."""
        try:
            return self._load(meta)
        except Rejected as error:
            REFUSED.labels(meta.model_name, error.reason).inc()
            log.warning(
                "refused %s v%d: %s", meta.model_name, meta.version, error.message,
                extra={"model": meta.model_name, "version": meta.version, "reason": error.reason},
            )
            raise

    def _load(self, meta: common_pb2.ModelVersion) -> LoadedModel:
        folder = self._registry.version_dir(meta.model_name, meta.version)
        path = self._registry.artifact_path(meta)
        self._verify_signature(meta, folder)
        data = self._read_verified(folder, path, meta.sha256)
        try:
            model = onnx.load_model_from_string(data)
        except Exception as error:  # noqa: BLE001 - any parse failure is a refusal
            raise Rejected("onnx", f"artifact is not an ONNX model: {error}") from None
        external = self._check_external_data(model, folder, len(data))
        try:
            # With external data the checker must see the file, to resolve its neighbours.
            onnx.checker.check_model(str(path) if external else model)
        except Exception as error:  # noqa: BLE001 - onnx raises several types
            raise Rejected("onnx", f"onnx.checker refused the graph: {error}") from None
        try:
            # With external data the runtime must open the file to find its neighbours; those
            # were checked above and live in the same, registry-owned folder.
            session = self._session_factory(str(path) if external else data)
        except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise Rejected("session", f"ONNX Runtime could not load the model: {error}") from None
        layout = _check_inputs(meta, session.signature)
        batchable, samples = self._warm_up(session)
        rule = _output_rule(meta, samples)
        log.info(
            "loaded %s v%d", meta.model_name, meta.version,
            extra={"model": meta.model_name, "version": meta.version,
                   "providers": list(session.providers), "batchable": batchable},
        )
        return LoadedModel(meta, session, batchable, layout, rule)

    # -- the checks --------------------------------------------------------------------------

    def _verify_signature(self, meta: common_pb2.ModelVersion, folder: Path) -> None:
        """First of all: the files of the version are those its trusted signer signed."""
        if self._signatures is None:
            return
        try:
            os.lstat(folder)
        except FileNotFoundError:
            raise Rejected("missing", f"{folder.name} does not exist") from None
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            raise Rejected("symlink", f"{folder} is a symbolic link")
        try:
            key = self._signatures.verify(folder)
        except SignatureRefused as error:
            raise Rejected("signature", str(error)) from None
        if key is not None:
            log.info("signature verified", extra={"model": meta.model_name,
                                                   "version": meta.version, "key": key})

    def _read_verified(self, folder: Path, path: Path, expected_sha256: str) -> bytes:
        for part in (folder, path):
            try:
                mode = os.lstat(part).st_mode
            except FileNotFoundError:
                raise Rejected("missing", f"{part.name} does not exist") from None
            if stat.S_ISLNK(mode):
                raise Rejected("symlink", f"{part} is a symbolic link")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise Rejected("symlink", f"cannot open {path.name} safely: {error}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise Rejected("not_a_file", f"{path.name} is not a regular file")
            if info.st_size > self._max_bytes:
                raise Rejected(
                    "size", f"{path.name} is {info.st_size} bytes, over {self._max_bytes}"
                )
            data = handle.read(self._max_bytes + 1)
        if len(data) > self._max_bytes:
            raise Rejected("size", f"{path.name} grew past {self._max_bytes} bytes")
        actual = hashlib.sha256(data).hexdigest()
        if not expected_sha256 or actual != expected_sha256.lower():
            raise Rejected(
                "hash", f"sha256 {actual[:16]}... differs from the registry's "
                f"{(expected_sha256 or '<none>')[:16]}..."
            )
        return data

    def _check_external_data(self, model: onnx.ModelProto, folder: Path, size: int) -> bool:
        """True when the model has external data; all of it inside `folder`, within limits."""
        root = folder.resolve()
        total = size
        seen: set[Path] = set()
        for tensor_name, location in external_locations(model):
            if escapes(location):
                raise Rejected(
                    "external_data",
                    f"tensor {tensor_name!r} points outside its folder ({location!r})",
                )
            target = folder / location
            if not target.resolve().is_relative_to(root):
                raise Rejected("external_data", f"tensor {tensor_name!r} escapes its folder")
            try:
                mode = os.lstat(target).st_mode
            except FileNotFoundError:
                raise Rejected("external_data", f"external data {location!r} is missing") from None
            if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                raise Rejected("symlink", f"external data {location!r} is not a regular file")
            if target not in seen:
                seen.add(target)
                total += os.lstat(target).st_size
            if total > self._max_bytes:
                raise Rejected("size", f"artifact with external data is over {self._max_bytes}")
        return bool(seen)

    def _warm_up(self, session: Session) -> tuple[bool, list[np.ndarray]]:
        """(batchable, the warm-up's outputs)."""
        rows = self._warmup_rows
        feeds = {spec.name: _dummy(spec.dtype, spec.shape, rows) for spec in session.signature.inputs}
        try:
            outputs = session.run(feeds)
        except Exception as error:  # noqa: BLE001
            raise Rejected("warmup", f"the warm-up run failed: {error}") from None
        if not session.signature.batchable:
            return False, outputs
        return all(out.ndim >= 1 and out.shape[0] == rows for out in outputs), outputs


def _check_inputs(meta: common_pb2.ModelVersion, signature: Signature) -> FeedLayout | None:
    """A registry model answers Predict: its inputs must take the version's features as
    bound (one matrix of every feature when the version binds none)."""
    if not meta.feature_names:
        return None
    if not signature.outputs:
        raise Rejected("signature", "the model has no outputs")
    try:
        return layout_for(meta, signature)
    except BindingError as error:
        raise Rejected("signature", str(error)) from None


def _output_rule(meta: common_pb2.ModelVersion, samples: list[np.ndarray]) -> OutputRule | None:
    if not meta.feature_names:
        return None
    try:
        return OutputRule.of(meta.task, samples, meta.score_threshold)
    except UnusableOutputs as error:
        raise Rejected("signature", str(error)) from None


def _dummy(dtype: np.dtype, shape: tuple[int, ...], rows: int) -> np.ndarray:
    dims = [rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(shape)]
    if dtype == np.object_:
        return np.full(dims, "", dtype=object)
    return np.zeros(dims, dtype=dtype)


def session_factory(
    providers: tuple[str, ...], intra_op_threads: int, inter_op_threads: int
) -> SessionFactory:
    def make(model: bytes | str) -> Session:
        return Session(
            model,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )

    return make


__all__ = ["LoadedModel", "Loader", "Rejected", "UnsupportedModel", "session_factory"]
