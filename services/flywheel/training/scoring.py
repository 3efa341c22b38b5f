"""ONNX scoring of a model version or a candidate, with ONNX Runtime on the CPU.

Used by the offline gate (candidate and champion on the same holdout), the live gate (the
previous champion re-scored on the rows the new one served) and the parity check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    predicted: np.ndarray  # classes or values, one per row
    probabilities: np.ndarray | None  # [rows, classes] for classifiers that give them


class OnnxScorer:
    """An ONNX Runtime session over an artifact; finds its input and outputs by type.

    A single float output of a classifier ([N] or [N, 1]) is read as the positive-class
    score: probabilities [1 - p, p], class by `threshold`.
    """

    def __init__(self, artifact: bytes | str, threads: int = 1, *, classifier: bool = True,
                 threshold: float = 0.5) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._names = [o.name for o in self.session.get_outputs()]
        outputs = self.session.get_outputs()
        self._classifier = classifier
        self._threshold = threshold or 0.5
        self._label = next((o.name for o in outputs if "int64" in o.type), None)
        self._proba = next((o.name for o in outputs
                            if "float" in o.type and o.name != self._label), None)

    def score(self, X: np.ndarray) -> Scores:
        return self.score_feeds({self._input: X}, len(X))

    def score_feeds(self, feeds: dict[str, np.ndarray], rows: int) -> Scores:
        """Scores named inputs (a model of several inputs): each fed as float32, reshaped to
        the rank its input declares."""
        ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        arrays = {}
        for name, array in feeds.items():
            array = np.ascontiguousarray(array, np.float32)
            arrays[name] = array.reshape(rows) if ranks.get(name) == 1 else array.reshape(rows, -1)
        named = dict(zip(self._names, self.session.run(None, arrays), strict=True))
        if not self._classifier:
            values = np.asarray(named[self._proba or self._names[0]]).reshape(rows, -1)[:, 0]
            return Scores(values.astype(np.float64), None)
        probabilities = None
        if self._proba is not None:
            probabilities = np.asarray(named[self._proba], dtype=np.float64).reshape(rows, -1)
            if probabilities.shape[1] == 1:  # a single score: the positive class
                probabilities = np.hstack([1.0 - probabilities, probabilities])
        if self._label is not None:
            predicted = np.asarray(named[self._label]).reshape(rows, -1)[:, 0]
        elif probabilities is None:
            raise ValueError("a classifier's ONNX needs an int64 label or a float output")
        elif np.asarray(named[self._proba]).reshape(rows, -1).shape[1] == 1:
            predicted = (probabilities[:, 1] >= self._threshold).astype(np.int64)
        else:
            predicted = probabilities.argmax(axis=1)
        return Scores(predicted, probabilities)


class VersionScorer:
    """A registered version scored on rows in the spec's feature order: its columns picked by
    feature name, fed to its inputs (one matrix, or one input per binding), its artifact's
    sha256 checked first."""

    def __init__(self, meta, artifact: bytes | str, spec_features: list[str], threads: int = 1,
                 classifier: bool = True) -> None:
        position = {n: i for i, n in enumerate(spec_features)}
        missing = [n for n in meta.feature_names if n not in position]
        if missing:
            raise ValueError(f"v{meta.version} reads features the spec no longer has: {missing}")
        self.version = meta.version
        self.columns = [position[n] for n in meta.feature_names]
        self.bindings = [(b.input_name, [position[n] for n in b.feature_names])
                         for b in meta.inputs]
        self._scorer = OnnxScorer(artifact, threads, classifier=classifier,
                                  threshold=meta.score_threshold)

    def score(self, X: np.ndarray) -> Scores:
        if not self.bindings:
            return self._scorer.score(X[:, self.columns])
        return self._scorer.score_feeds(
            {name: X[:, columns] for name, columns in self.bindings}, len(X))


def open_version(registry, meta, spec_features: list[str], threads: int = 1,
                 classifier: bool = True) -> VersionScorer:
    """A registered version's scorer, from its folder (external data beside it), after its
    artifact matched its sha256. ArtifactRejected when it does not."""
    from flywheel.common.errors import ArtifactRejected
    from flywheel.common.registry import sha256_file

    path = registry.artifact_path(meta)
    if not path.is_file() or sha256_file(path) != meta.sha256:
        raise ArtifactRejected(f"{meta.model_name} v{meta.version} artifact does not match "
                               "its sha256")
    return VersionScorer(meta, str(path), spec_features, threads, classifier)
