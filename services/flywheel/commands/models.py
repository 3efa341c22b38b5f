"""``flywheel models list | register | promote | rollback``: the model registry.

An alias change (promote, rollback, register --promote/--shadow) goes to the training
service's PromoteModelVersion / RollbackModel when ``flywheel up`` recorded a running mesh
($FLYWHEEL_HOME/mesh.json), so the service stays the one writer of aliases. Without a mesh
the command makes the same change itself, the same way (`flywheel.training.promotions`):
announced on flywheel.model-versions.v1 first, written to the registry only once Kafka
acknowledged it. A change that cannot be announced changes nothing: one line naming Kafka,
exit code 1. The registry, broker and namespace are the running mesh's
(``flywheel.commands.context``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from flywheel.commands import CommandError, add_json_flag, reported

TASKS = ("binary_classification", "multiclass_classification", "regression")


def register(subparsers: argparse._SubParsersAction) -> None:
    from flywheel.commands.context import LOOKUP_HELP

    group = subparsers.add_parser(
        "models", help="list, register, promote or roll back model versions",
        description="The model registry and its announcements to the inference service. "
        + LOOKUP_HELP,
    )
    group.set_defaults(parser=group)
    commands = group.add_subparsers(dest="models_command", metavar="<subcommand>")

    listing = commands.add_parser("list", help="every model version with its aliases")
    listing.add_argument("--name", help="only this model")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=_list)

    reg = commands.add_parser(
        "register", help="register an ONNX model made elsewhere (bring your own model)",
        description="Registers an ONNX model (with its external-data files) as the next version "
        "of a model. Its inputs are bound to features (see --input), its outputs read by the "
        "output rule of the README's 'Bring your own model'.",
    )
    reg.add_argument("artifact", type=Path, help="the .onnx file (its external-data files, if "
                     "any, beside it as the model names them)")
    reg.add_argument("--name", required=True, help="model name, e.g. churn")
    reg.add_argument("--features",
                     help="comma-separated feature names the model reads, in the order they are "
                     "read from the store and logged (default: the spec's model of this name, "
                     "else the features of the --input mappings)")
    reg.add_argument("--input", action="append", default=[], metavar="NAME=F1[,F2...]",
                     help="ONNX input NAME reads these features, in its column order; repeat per "
                     "input (default: an input named after a feature reads it; a single input "
                     "reads every feature in order)")
    reg.add_argument("--entity-type", help="entity type of the features (default: the spec's "
                     "model's, else customer)")
    reg.add_argument("--task", choices=TASKS,
                     help="default: the spec's model's, else binary_classification")
    reg.add_argument("--threshold", type=float, default=0.0,
                     help="a binary classifier whose output is one score per row: class 1 when "
                     "the score is at least this (default 0.5)")
    reg.add_argument("--sign-key", type=Path, metavar="KEY",
                     help="PEM EC private key: sign the version's files in the OpenSSF model "
                     "signing format (model.sig in the version folder; works offline)")
    reg.add_argument("--promote", action="store_true", help="make it the champion at once")
    reg.add_argument("--shadow", action="store_true", help="score it in shadow of the champion")
    reg.add_argument("--no-announce", action="store_true",
                     help="write the registry only; publish nothing (not with --promote/--shadow)")
    add_json_flag(reg)
    reg.set_defaults(handler=_register)

    promote = commands.add_parser("promote", help="point the champion (or shadow) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--shadow", action="store_true", help="set the shadow alias instead")
    promote.add_argument("--reason", default="", help="recorded with the announcement")
    add_json_flag(promote)
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser("rollback", help="move the champion back to the one before")
    rollback.add_argument("name")
    rollback.add_argument("--reason", default="manual rollback")
    add_json_flag(rollback)
    rollback.set_defaults(handler=_rollback)


def _settings(args: argparse.Namespace | None = None):
    """The mesh's settings; Kafka is needed (and checked first) when the command announces."""
    from flywheel.commands.context import mesh_context

    announces = args is not None and not getattr(args, "no_announce", False)
    return mesh_context("registry", *(("kafka",) if announces else ())).common_settings()


def _registry(settings, sign_key: Path | None = None):
    from flywheel.common.registry import ModelRegistry

    if sign_key is not None and not sign_key.is_file():
        raise CommandError(f"--sign-key {sign_key}: no such file")
    return ModelRegistry(settings.registry_uri, sign_key=sign_key)


def _flywheel_errors():
    from flywheel.common.errors import FlywheelError

    return FlywheelError


class _ServiceAliases:
    """Alias changes through the running training service (the mesh's one writer)."""

    def __init__(self, address: str, deadline_s: float, security=None) -> None:
        from flywheel.common.grpc.client import sync_channel
        from flywheel.v1 import training_pb2_grpc

        self.address = address
        self._deadline_s = deadline_s
        self._channel = sync_channel(address, security=security)
        self._stub = training_pb2_grpc.TrainingServiceStub(self._channel)

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self._deadline_s)
        except grpc.RpcError as error:
            raise CommandError(
                f"training service at {self.address}: {error.code().name}: {error.details()}"
            ) from None

    def promote(self, name: str, version: int, alias: str, reason: str) -> int:
        from flywheel.v1 import training_pb2

        reply = self._call(self._stub.PromoteModelVersion, training_pb2.PromoteModelVersionRequest(
            model_name=name, version=version, alias=alias, reason=reason))
        return reply.previous_version

    def rollback(self, name: str, reason: str) -> tuple[int, int]:
        from flywheel.v1 import training_pb2

        reply = self._call(self._stub.RollbackModel,
                           training_pb2.RollbackModelRequest(model_name=name, reason=reason))
        return reply.rolled_back_from, reply.rolled_back_to

    def close(self) -> None:
        self._channel.close()


def _recorded_training() -> tuple[str, object] | None:
    """(address, gRPC security) of the recorded mesh's training service, or None."""
    from flywheel.mesh import state as mesh_state
    from flywheel.mesh.settings import home_dir

    try:
        recorded = mesh_state.load(home_dir() / "mesh.json")
    except ValueError as error:
        raise CommandError(str(error)) from None
    if recorded is None or "training" not in recorded.services:
        return None
    return recorded.address("training"), mesh_state.client_security(recorded)


@contextlib.contextmanager
def _alias_writer(settings, registry) -> Iterator:
    """The training service when a mesh is recorded, else `Promotions` in this process."""
    recorded = _recorded_training()
    if recorded is not None:
        address, security = recorded
        writer = _ServiceAliases(address, deadline_s=settings.kafka_timeout_s * 3 + 5,
                                 security=security or settings.grpc_security)
        try:
            yield writer
        finally:
            writer.close()
        return
    with _local_promotions(settings, registry) as promotions:
        yield promotions


@contextlib.contextmanager
def _local_promotions(settings, registry) -> Iterator:
    """`Promotions` in this process: the same transaction (announce, then write) under the
    same registry lock as the training service's."""
    from flywheel.common.announce import Announcer
    from flywheel.common.errors import Unavailable
    from flywheel.common.kafka.admin import ensure_topics
    from flywheel.common.kafka.topics import Topics
    from flywheel.training.promotions import Promotions

    topics = Topics(settings.namespace)
    try:
        ensure_topics(settings.kafka_bootstrap, [topics.model_versions], settings.kafka_timeout_s)
    except Unavailable as error:
        raise Unavailable(f"{error.message}; nothing changed") from None
    announcer = Announcer(settings.kafka_bootstrap, topics, settings.kafka_timeout_s,
                          client_id="flywheel-cli")
    try:
        yield Promotions(registry, announcer)
    finally:
        announcer.close()


def _version_json(meta) -> dict:
    from flywheel.v1 import common_pb2

    return {
        "name": meta.model_name,
        "version": meta.version,
        "aliases": list(meta.aliases),
        # Versions stored before statuses existed have none: they count as ready.
        "status": common_pb2.ModelVersionStatus.Name(
            meta.status or common_pb2.MODEL_VERSION_STATUS_READY
        ).removeprefix("MODEL_VERSION_STATUS_").lower(),
        "status_reason": meta.status_reason,
        "sha256": meta.sha256,
        "task": meta.task,
        "entity_type": meta.entity_type,
        "features": list(meta.feature_names),
        "metrics": dict(meta.metrics),
        "created_at_unix_ms": meta.created_at_unix_ms,
        "artifact_uri": meta.artifact_uri,
        "inputs": {b.input_name: list(b.feature_names) for b in meta.inputs},
        "vocabularies": {k: list(v.values) for k, v in meta.vocabularies.items()},
        "score_threshold": meta.score_threshold,
        "provenance": {
            "source_sha256": meta.provenance.source_sha256,
            "source_path": meta.provenance.source_path,
            "registered_by": meta.provenance.registered_by,
            "registered_at_unix_ms": meta.provenance.registered_at_unix_ms,
        } if meta.HasField("provenance") else None,
    }


def _print(args: argparse.Namespace, payload: dict, line: str) -> None:
    print(json.dumps(payload) if args.json else line)


def _list(args: argparse.Namespace) -> int:
    """One row per version: what serves it (champion, shadow), its status; a refused
    version's reason on the line below it."""
    registry = _registry(_settings())
    names = [args.name] if args.name else registry.model_names()
    with reported(_flywheel_errors()):
        models = {name: [_version_json(m) for m in registry.versions(name)] for name in names}
    if args.json:
        print(json.dumps({"models": models}))
        return 0
    if not any(models.values()):
        print(f"no models in {registry.root}")
        return 0
    print(f"{'model':<16} {'version':>7}  {'serving as':<18} {'status':<9} {'sha256':<14} "
          "features")
    for name, versions in models.items():
        for v in versions:
            print(f"{name:<16} {v['version']:>7}  {','.join(v['aliases']) or '-':<18} "
                  f"{v['status']:<9} {v['sha256'][:12]:<14} {feature_summary(v['features'])}")
            if v["status"] == "refused":
                print(f"{'':<26}refused by inference: {v['status_reason']}")
    return 0


def _registration(args: argparse.Namespace, settings):
    """The checked registration of args.artifact (nothing written yet)."""
    import getpass
    import time

    from flywheel.common.spec import load_spec
    from flywheel.inference import registration
    from flywheel.inference.settings import InferenceSettings

    spec = None
    if Path(settings.spec_path).is_file():
        try:
            spec = load_spec(settings.spec_path)
        except ValueError as error:
            raise CommandError(f"the spec {settings.spec_path} is invalid: {error}") from None
    request = registration.Request(
        artifact=args.artifact, name=args.name,
        features=[f.strip() for f in (args.features or "").split(",") if f.strip()],
        mappings=args.input, entity_type=args.entity_type or "", task=args.task or "",
        threshold=args.threshold,
    )
    try:
        return registration.plan(
            request, spec, max_bytes=InferenceSettings().max_artifact_bytes,
            user=getpass.getuser(), now_ms=int(time.time() * 1000),
        )
    except registration.RegistrationError as error:
        raise CommandError(str(error)) from None


def _register(args: argparse.Namespace) -> int:
    from flywheel.common.registry import CHAMPION, SHADOW

    if args.promote and args.shadow:
        raise CommandError("choose --promote or --shadow, not both")
    if args.no_announce and (args.promote or args.shadow):
        raise CommandError("an alias change is always announced: drop --no-announce")
    settings = _settings(args)
    plan = _registration(args, settings)
    registry = _registry(settings, args.sign_key)
    with reported(_flywheel_errors()):
        meta = registry.register(
            args.name, plan.artifact, task=plan.task, entity_type=plan.entity_type,
            feature_names=plan.features, output_names=plan.outputs, lineage=plan.lineage,
            files=plan.files, details=plan.details,
        )
        if args.promote or args.shadow:
            with _alias_writer(settings, registry) as writer:
                writer.promote(args.name, meta.version, CHAMPION if args.promote else SHADOW,
                               "registered from the command line")
        elif not args.no_announce:
            with _local_promotions(settings, registry) as promotions:
                promotions.registered(args.name, meta.version, "registered from the command line")
    meta = registry.get(args.name, meta.version)
    _print(args, _version_json(meta),
           f"registered {args.name} v{meta.version} (sha256 {meta.sha256[:12]}, "
           f"aliases: {', '.join(meta.aliases) or 'none'})")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from flywheel.common.registry import CHAMPION, SHADOW

    settings = _settings(args)
    registry = _registry(settings)
    alias = SHADOW if args.shadow else CHAMPION
    with reported(_flywheel_errors()), _alias_writer(settings, registry) as writer:
        previous = writer.promote(args.name, args.version, alias,
                                  args.reason or f"{alias} set from the command line")
    _print(args, {"name": args.name, "version": args.version, "alias": alias,
                  "previous": previous, "aliases": registry.aliases(args.name)},
           f"{args.name}: {alias} -> v{args.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    registry = _registry(settings)
    with reported(_flywheel_errors()), _alias_writer(settings, registry) as writer:
        current, target = writer.rollback(args.name, args.reason)
    _print(args, {"name": args.name, "from": current, "to": target},
           f"{args.name}: champion rolled back v{current} -> v{target}")
    return 0


def feature_summary(names: list[str], width: int = 60) -> str:
    """The feature names that fit in `width` characters, whole, then how many more there are
    (`--json` lists them all)."""
    shown: list[str] = []
    for index, name in enumerate(names):
        rest = len(names) - index - 1
        more = f" (+{rest} more)" if rest else ""
        if len(",".join([*shown, name])) + len(more) > width and shown:
            return f"{','.join(shown)} (+{len(names) - index} more)"
        shown.append(name)
    return ",".join(shown)
