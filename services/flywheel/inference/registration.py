"""What `flywheel models register` stores for an ONNX model brought from elsewhere.

Everything is checked before the registry is touched, so a refused model leaves no trace:

- the artifact parses as ONNX and passes `onnx.checker`;
- every external-data file it names is a relative path inside the artifact's folder (no '..',
  no absolute path, nothing resolving outside), a regular file, and the artifact with all of
  them fits the inference service's size limit (FLYWHEEL_INFERENCE_MAX_ARTIFACT_BYTES); they
  are stored in the version's folder under the same relative names;
- its inputs are bound to features (flywheel.inference.bindings); the features come from
  --features, else from the spec's model of the same name, else from the --input mappings;
- with a spec, the features must be the entity's, and a string feature brings its
  vocabulary (frozen in the version); without one, every feature is read as a number;
- where the outputs' shapes are fixed, they must fit the output rule
  (flywheel.inference.outputs); the inference service checks the rest when it loads them.

The version records its provenance (sha256 and path of the given file, who registered it,
when) and lineage.training_mode "byo".
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from flywheel.common.spec import Dtype, FlywheelSpec, Task
from flywheel.inference.bindings import BindingError, InputShape, bind, parse_mapping
from flywheel.inference.external_data import escapes, external_locations
from flywheel.inference.outputs import OutputRule, UnusableOutputs
from flywheel.v1 import common_pb2

BYO = "byo"


class RegistrationError(ValueError):
    """The model cannot be registered; the message says why, naming the culprit."""


@dataclass
class Registration:
    artifact: bytes
    task: int
    entity_type: str
    features: list[str]
    outputs: list[str]
    lineage: common_pb2.Lineage
    details: common_pb2.ModelVersion
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What the user asked for (the command line's options)."""

    artifact: Path
    name: str
    features: Sequence[str] = ()
    mappings: Sequence[str] = ()
    entity_type: str = ""
    task: str = ""
    threshold: float = 0.0


def plan(request: Request, spec: FlywheelSpec | None, *, max_bytes: int, user: str,
         now_ms: int) -> Registration:
    path = request.artifact
    data = _read_limited(path, max_bytes, "the artifact")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # noqa: BLE001 - reported to the user as one line
        raise RegistrationError(f"{path} is not an ONNX model: {error}") from None
    files = _external_files(model, path, max_bytes - len(data))
    try:
        # With external data the checker must see the file, to find its (checked) neighbours.
        onnx.checker.check_model(str(path) if files else model)
    except Exception as error:  # noqa: BLE001 - onnx raises several types
        raise RegistrationError(f"{path} is not a valid ONNX model: {error}") from None
    declared = _spec_model(spec, request.name)
    entity_type = request.entity_type or (declared.entity_type if declared else "customer")
    task = Task(request.task) if request.task else (
        declared.task if declared else Task.BINARY_CLASSIFICATION)
    try:
        mappings = parse_mapping(request.mappings)
        features = list(request.features) or (list(declared.features) if declared else []) or \
            list(dict.fromkeys(f for columns in mappings.values() for f in columns))
        if not features:
            raise RegistrationError("give --features (or --input mappings), or declare model "
                                    f"{request.name!r} in the spec")
        inputs = bind(_input_shapes(model), features, mappings)
    except BindingError as error:
        raise RegistrationError(str(error)) from None
    vocabularies = _vocabularies(spec, entity_type, features)
    task_value = common_pb2.ModelTask.Value(f"MODEL_TASK_{task.name}")
    if not 0.0 <= request.threshold <= 1.0:
        raise RegistrationError(f"--threshold {request.threshold} is not a probability in [0, 1]")
    _check_outputs(model, task_value, request.threshold)
    details = common_pb2.ModelVersion(
        inputs=inputs, score_threshold=request.threshold,
        vocabularies={f: common_pb2.Vocabulary(values=v) for f, v in vocabularies.items()},
        provenance=common_pb2.Provenance(
            source_sha256=hashlib.sha256(data).hexdigest(), source_path=str(path.resolve()),
            registered_by=user, registered_at_unix_ms=now_ms,
        ),
    )
    return Registration(
        artifact=data, task=task_value, entity_type=entity_type, features=features,
        outputs=[o.name for o in model.graph.output],
        lineage=common_pb2.Lineage(training_mode=BYO), details=details, files=files,
    )


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        info = path.stat()
    except OSError as error:
        raise RegistrationError(f"{path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RegistrationError(f"{what} {path} is not a regular file")
    if info.st_size > limit:
        raise RegistrationError(f"{what} {path} is {info.st_size} bytes; the inference service "
                                f"loads at most {limit} (FLYWHEEL_INFERENCE_MAX_ARTIFACT_BYTES, "
                                "artifact and external data together)")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise RegistrationError(f"{what} {path} grew past {limit} bytes while read")
    return data


def _external_files(model: onnx.ModelProto, artifact: Path, budget: int) -> dict[str, bytes]:
    """location -> bytes of every external-data file, checked as the loader checks them."""
    folder = artifact.parent.resolve()
    files: dict[str, bytes] = {}
    for tensor, location in external_locations(model):
        if escapes(location):
            raise RegistrationError(
                f"tensor {tensor!r} points outside the model's folder ({location!r})")
        if location in files:
            continue
        source = folder / location
        if not source.resolve().is_relative_to(folder):
            raise RegistrationError(f"tensor {tensor!r}: {location!r} resolves outside the "
                                    "model's folder")
        if not os.path.lexists(source):
            raise RegistrationError(f"tensor {tensor!r}: external data {source} is missing")
        files[location] = _read_limited(source, budget, "external data")
        budget -= len(files[location])
    return files


def _input_shapes(model: onnx.ModelProto) -> list[InputShape]:
    initializers = {t.name for t in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise RegistrationError(f"input {value.name!r} is not a tensor")
        dims = tensor.shape.dim
        columns = (dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value")
                   else None)
        kind = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).kind
        shapes.append(InputShape(value.name, len(dims), columns, kind))
    if not shapes:
        raise RegistrationError("the model has no inputs")
    return shapes


def _check_outputs(model: onnx.ModelProto, task: int, threshold: float) -> None:
    """The output rule on outputs of fixed shape (rows aside); open shapes are left to the
    inference service, which knows them after its warm-up run."""
    samples = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        if not value.type.HasField("tensor_type") or not all(
                d.HasField("dim_value") for d in list(dims)[1:]):
            return
        tail = [d.dim_value for d in list(dims)[1:]]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        samples.append(np.zeros([2, *tail] if dims else [], dtype=dtype))
    try:
        OutputRule.of(task, samples, threshold)
    except UnusableOutputs as error:
        raise RegistrationError(f"the model's outputs cannot be read: {error}") from None


def _spec_model(spec: FlywheelSpec | None, name: str):
    if spec is None:
        return None
    return next((m for m in spec.models if m.name == name), None)


def _vocabularies(spec: FlywheelSpec | None, entity_type: str,
                  features: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if spec is None:
        return {}
    entity = next((e for e in spec.entities if e.name == entity_type), None)
    if entity is None:
        raise RegistrationError(f"entity type {entity_type!r} is not in the spec "
                                f"({[e.name for e in spec.entities]})")
    known = {f.name: f for f in entity.features}
    unknown = [f for f in features if f not in known]
    if unknown:
        raise RegistrationError(f"features {unknown} are not features of {entity_type!r} in "
                                "the spec")
    out = {}
    for name in features:
        feature = known[name]
        if feature.dtype is Dtype.STRING:
            if feature.vocabulary is None:
                raise RegistrationError(f"string feature {name!r} has no vocabulary in the spec; "
                                        "declare its categories (vocabulary: [...])")
            out[name] = feature.vocabulary
    return out
