"""The model registry: a directory (default `.flywheel/registry`).

    <root>/<model>/<version>/model.onnx       the artifact
    <root>/<model>/<version>/metadata.json    a flywheel.v1.ModelVersion in JSON
    <root>/<model>/<version>/<other files>    beside the artifact: its external-data files,
                                              the trainer's native state (native/...)
    <root>/<model>/aliases.json               alias -> version, plus the champion history

Every write is a temporary file renamed into place, under a per-model lock file, so readers
never see a torn file and two writers never take the same version number.

Aliases change in one transaction (`change_aliases`): under the model's lock, the current
state and the refused versions go to a plan (`flywheel.common.aliases`), the plan goes to a
hook (the mesh announces it on Kafka there), and only once the hook returned is the new state
written. A hook that raises leaves the registry as it was. The mesh changes aliases only
through `flywheel.training.promotions.Promotions`, which always passes that hook; the plain
`set_alias`, `promote`, `remove_alias` and `rollback` below write without announcing, for a
registry nothing serves yet (seeding, tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from google.protobuf import json_format

from flywheel.common import aliases as alias_plans
from flywheel.common.aliases import CHAMPION, SHADOW, AliasPlan, AliasState, Refused
from flywheel.common.errors import InvalidArgument, NotFound
from flywheel.common.files import atomic_write
from flywheel.common.signing import sign_folder
from flywheel.v1 import common_pb2

ARTIFACT = "model.onnx"
METADATA = "metadata.json"
ALIASES = "aliases.json"
REFUSED = common_pb2.MODEL_VERSION_STATUS_REFUSED

__all__ = ["CHAMPION", "SHADOW", "ModelRegistry", "Planner", "sha256_file"]

# (current state, refused version -> reason) -> the plan to apply.
Planner = Callable[[AliasState, Refused], AliasPlan]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or "@" in name:
        raise InvalidArgument(f"invalid model name {name!r}", field="model_name")
    return name


def _check_relative(relative: str) -> str:
    """A path inside a version's folder: relative, no '..', not the artifact or metadata."""
    parts = Path(relative).parts
    if (not parts or Path(relative).is_absolute() or ".." in parts
            or relative in (ARTIFACT, METADATA) or parts[0].startswith(".")):
        raise InvalidArgument(f"invalid file name {relative!r} for a model version",
                              field="files")
    return relative


class ModelRegistry:
    def __init__(self, root: str | Path, sign_key: Path | None = None) -> None:
        """`sign_key`: a PEM EC private key; each version registered through this registry
        is then signed (flywheel.common.signing) before it appears under its number."""
        self.root = Path(root)
        self._sign_key = sign_key

    # -- reading -----------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[common_pb2.ModelVersion]:
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            return []
        numbers = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
        aliases = self.aliases(name)
        return [self._load(name, n, aliases) for n in numbers if (folder / str(n) / METADATA).exists()]

    def get(self, name: str, version: int) -> common_pb2.ModelVersion:
        path = self.root / _check_name(name) / str(version) / METADATA
        if not path.exists():
            raise NotFound(f"model {name!r} has no version {version}", field="version")
        return self._load(name, version, self.aliases(name))

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self.alias_state(name).aliases)

    def alias_state(self, name: str) -> AliasState:
        path = self.root / _check_name(name) / ALIASES
        if not path.exists():
            return AliasState()
        return AliasState.from_json(json.loads(path.read_text()))

    def refused(self, name: str) -> dict[int, str]:
        """The versions inference refused, with the reason each was given."""
        return {v.version: v.status_reason for v in self.versions(name) if v.status == REFUSED}

    def resolve(self, name: str, alias: str = CHAMPION) -> common_pb2.ModelVersion:
        version = self.aliases(name).get(alias)
        if version is None:
            raise NotFound(f"model {name!r} has no {alias!r} version", field="model")
        return self.get(name, version)

    def artifact_path(self, model_version: common_pb2.ModelVersion) -> Path:
        return self.version_dir(model_version.model_name, model_version.version) / ARTIFACT

    def version_dir(self, name: str, version: int) -> Path:
        return self.root / _check_name(name) / str(version)

    def champion_history(self, name: str) -> list[int]:
        return list(self.alias_state(name).champion_history)

    # -- writing -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact: bytes | Path,
        *,
        task: int,
        entity_type: str,
        feature_names: Sequence[str],
        output_names: Sequence[str] = (),
        metrics: Mapping[str, float] | None = None,
        lineage: common_pb2.Lineage | None = None,
        files: Mapping[str, bytes] | None = None,
        details: common_pb2.ModelVersion | None = None,
    ) -> common_pb2.ModelVersion:
        """Stores a new version (the next number) and returns its metadata.

        `files`: more files for the version's folder, by relative path (external data, the
        trainer's native state); `details`: the optional ModelVersion fields (vocabularies,
        inputs, score_threshold, provenance, native_format), merged into the metadata.
        """
        if not feature_names:
            raise InvalidArgument("a model needs its input feature names", field="feature_names")
        data = Path(artifact).read_bytes() if isinstance(artifact, Path) else artifact
        extra = {_check_relative(name): content for name, content in (files or {}).items()}
        with self._lock(name):
            folder = self.root / name
            existing = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
            version = max(existing, default=0) + 1
            target = folder / str(version)
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".staging-{version}-"))
            try:
                atomic_write(staging / ARTIFACT, data)
                for relative, content in extra.items():
                    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(staging / relative, content)
                meta = common_pb2.ModelVersion()
                if details is not None:
                    meta.CopyFrom(details)
                meta.MergeFrom(common_pb2.ModelVersion(
                    model_name=name,
                    version=version,
                    artifact_uri=str((target / ARTIFACT).resolve()),
                    sha256=hashlib.sha256(data).hexdigest(),
                    task=task,
                    feature_names=list(feature_names),
                    output_names=list(output_names),
                    entity_type=entity_type,
                    metrics=dict(metrics or {}),
                    lineage=lineage,
                    created_at_unix_ms=int(time.time() * 1000),
                    status=common_pb2.MODEL_VERSION_STATUS_READY,
                ))
                atomic_write(staging / METADATA, json_format.MessageToJson(meta).encode())
                if self._sign_key is not None:
                    sign_folder(staging, self._sign_key)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return meta

    def remove_staging_leftovers(self) -> int:
        """Removes the `.staging-*` folders of registrations cut short (a process killed in
        the middle): such a version never got its number, so nothing refers to it. Returns
        how many were removed."""
        removed = 0
        for name in self.model_names():
            if "@" in name:  # not a model folder: register refuses such names
                continue
            with self._lock(name):
                for staging in (self.root / name).glob(".staging-*"):
                    shutil.rmtree(staging, ignore_errors=True)
                    removed += 1
        return removed

    def read_file(self, name: str, version: int, relative: str) -> bytes:
        """One file of a version's folder (NOT_FOUND when it has none by that name)."""
        path = self.version_dir(name, version) / _check_relative(relative)
        if not path.is_file():
            raise NotFound(f"model {name!r} v{version} has no file {relative!r}", field="version")
        return path.read_bytes()

    def read_folder(self, name: str, version: int, folder: str) -> dict[str, bytes]:
        """Every file under one folder of a version (e.g. its native state), by name."""
        root = self.version_dir(name, version) / _check_relative(folder)
        if not root.is_dir():
            return {}
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and not p.is_symlink()}

    def set_status(self, name: str, version: int, status: int, reason: str) -> None:
        """Marks a version (e.g. REFUSED by inference, with the reason); rewrites its metadata."""
        with self._lock(name):
            meta = self.get(name, version)
            meta.status, meta.status_reason = status, reason
            del meta.aliases[:]
            atomic_write(self.root / name / str(version) / METADATA,
                         json_format.MessageToJson(meta).encode())

    def change_aliases(self, name: str, planner: Planner,
                       before_write: Callable[[AliasPlan], None] | None = None) -> AliasPlan:
        """The alias transaction: plan from the current state, `before_write(plan)` (the
        announcement), then write. Nothing is written when the planner or the hook raises."""
        with self._lock(name):
            plan = planner(self.alias_state(name), self.refused(name))
            for _, version, _ in plan.changes:
                if version:
                    self.get(name, version)
            if before_write is not None:
                before_write(plan)
            if plan.changed:
                atomic_write(self.root / name / ALIASES,
                             json.dumps(plan.after.to_json(), indent=1).encode())
        return plan

    def set_alias(self, name: str, alias: str, version: int) -> int:
        """Points `alias` at `version`; returns the version it pointed at before (0: none)."""
        return self.change_aliases(
            name, lambda state, refused: alias_plans.promote(name, state, version, alias, refused)
        ).previous(alias)

    def promote(self, name: str, version: int, alias: str = CHAMPION) -> list[tuple[str, int, int]]:
        """Points `alias` (champion or shadow) at `version`; a version that becomes champion
        stops being the shadow. Returns the (alias, version, previous) changes made."""
        self.get(name, version)
        return list(self.change_aliases(
            name, lambda state, refused: alias_plans.promote(name, state, version, alias, refused)
        ).changes)

    def remove_alias(self, name: str, alias: str) -> int:
        return self.change_aliases(
            name, lambda state, _: alias_plans.retire(state, alias)).previous(alias)

    def rollback(self, name: str) -> tuple[int, int]:
        """Moves the champion back to the one before it; returns (from, to)."""
        plan = self.change_aliases(
            name, lambda state, refused: alias_plans.rollback(name, state, refused))
        return plan.before.champion, plan.after.champion

    # -- internals ---------------------------------------------------------------------------

    def _load(self, name: str, version: int, aliases: Mapping[str, int]) -> common_pb2.ModelVersion:
        raw = (self.root / name / str(version) / METADATA).read_text()
        meta = json_format.Parse(raw, common_pb2.ModelVersion())
        meta.aliases[:] = sorted(a for a, v in aliases.items() if v == version)
        return meta

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self.root / _check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
