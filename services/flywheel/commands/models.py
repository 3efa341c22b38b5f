"""``flywheel models list | register | promote | rollback``: the model registry.

Every change is written to the registry (FLYWHEEL_REGISTRY_URI) and announced on
flywheel.model-versions.v1 (FLYWHEEL_KAFKA_BOOTSTRAP, FLYWHEEL_NAMESPACE), which is how the
inference replicas hear of it; ``--no-announce`` only writes the registry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flywheel.commands import CommandError

TASKS = ("binary_classification", "multiclass_classification", "regression")


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "models", help="list, register, promote or roll back model versions",
        description="The model registry and its announcements to the inference service.",
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
    reg.add_argument("--promote", action="store_true", help="make it the champion at once")
    reg.add_argument("--shadow", action="store_true", help="score it in shadow of the champion")
    _common_flags(reg)
    reg.set_defaults(handler=_register)

    promote = commands.add_parser("promote", help="point the champion (or shadow) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--shadow", action="store_true", help="set the shadow alias instead")
    _common_flags(promote)
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser("rollback", help="move the champion back to the one before")
    rollback.add_argument("name")
    rollback.add_argument("--reason", default="manual rollback")
    _common_flags(rollback)
    rollback.set_defaults(handler=_rollback)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-announce", action="store_true",
                        help="write the registry only; publish nothing to Kafka")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _settings():
    from flywheel.common.settings import CommonSettings

    return CommonSettings()


def _registry(settings):
    from flywheel.common.registry import ModelRegistry

    return ModelRegistry(settings.registry_uri)


def _flywheel_errors():
    from flywheel.common.errors import FlywheelError

    return FlywheelError


def _announce(settings, registry, name: str, version: int, change: str,
              alias_changes: list[tuple[str, int, int]], reason: str) -> None:
    from flywheel.common import announce
    from flywheel.common.kafka.admin import ensure_topics
    from flywheel.common.kafka.producer import Producer
    from flywheel.common.kafka.topics import Topics
    from flywheel.v1 import events_pb2

    topics = Topics(settings.namespace)
    record = announce.announcement(
        registry, name, version, events_pb2.ModelVersionChange.Value(change), alias_changes, reason
    )
    ensure_topics(settings.kafka_bootstrap, [topics.model_versions], settings.kafka_timeout_s)
    producer = Producer(settings.kafka_bootstrap, client_id="flywheel-cli",
                        delivery_timeout_s=settings.kafka_timeout_s)
    try:
        announce.publish(producer, topics, record, settings.kafka_timeout_s)
    finally:
        producer.close(settings.kafka_timeout_s)


def _version_json(meta) -> dict:
    return {
        "name": meta.model_name,
        "version": meta.version,
        "aliases": list(meta.aliases),
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
        "status": common_status(meta),
        "provenance": {
            "source_sha256": meta.provenance.source_sha256,
            "source_path": meta.provenance.source_path,
            "registered_by": meta.provenance.registered_by,
            "registered_at_unix_ms": meta.provenance.registered_at_unix_ms,
        } if meta.HasField("provenance") else None,
    }


def common_status(meta) -> str:
    from flywheel.v1 import common_pb2

    return common_pb2.ModelVersionStatus.Name(meta.status).removeprefix("MODEL_VERSION_STATUS_")


def _print(args: argparse.Namespace, payload: dict, line: str) -> None:
    print(json.dumps(payload) if args.json else line)


def _list(args: argparse.Namespace) -> int:
    registry = _registry(_settings())
    names = [args.name] if args.name else registry.model_names()
    models = {name: [_version_json(m) for m in registry.versions(name)] for name in names}
    if args.json:
        print(json.dumps({"models": models}))
        return 0
    if not any(models.values()):
        print(f"no models in {registry.root}")
        return 0
    print(f"{'model':<16} {'version':>7}  {'aliases':<18} {'sha256':<14} features")
    for name, versions in models.items():
        for v in versions:
            features = ",".join(v["features"])
            print(f"{name:<16} {v['version']:>7}  {','.join(v['aliases']) or '-':<18} "
                  f"{v['sha256'][:12]:<14} {features[:60]}")
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
    settings = _settings()
    plan = _registration(args, settings)
    registry = _registry(settings)
    try:
        meta = registry.register(
            args.name, plan.artifact, task=plan.task, entity_type=plan.entity_type,
            feature_names=plan.features, output_names=plan.outputs, lineage=plan.lineage,
            files=plan.files, details=plan.details,
        )
        changes: list[tuple[str, int, int]] = []
        change = "MODEL_VERSION_CHANGE_REGISTERED"
        if args.promote or args.shadow:
            changes = registry.promote(args.name, meta.version, CHAMPION if args.promote else SHADOW)
            change = "MODEL_VERSION_CHANGE_PROMOTED" if args.promote else \
                "MODEL_VERSION_CHANGE_SHADOWED"
        if not args.no_announce:
            _announce(settings, registry, args.name, meta.version, change, changes,
                      "registered from the command line")
    except _flywheel_errors() as error:
        raise CommandError(error.message) from None
    meta = registry.get(args.name, meta.version)
    _print(args, _version_json(meta),
           f"registered {args.name} v{meta.version} (sha256 {meta.sha256[:12]}, "
           f"aliases: {', '.join(meta.aliases) or 'none'})")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from flywheel.common.registry import CHAMPION, SHADOW

    settings = _settings()
    registry = _registry(settings)
    alias = SHADOW if args.shadow else CHAMPION
    try:
        changes = registry.promote(args.name, args.version, alias)
        if not args.no_announce:
            change = "MODEL_VERSION_CHANGE_SHADOWED" if args.shadow else \
                "MODEL_VERSION_CHANGE_PROMOTED"
            _announce(settings, registry, args.name, args.version, change, changes,
                      f"{alias} set from the command line")
    except _flywheel_errors() as error:
        raise CommandError(error.message) from None
    _print(args, {"name": args.name, "version": args.version, "alias": alias,
                  "aliases": registry.aliases(args.name)},
           f"{args.name}: {alias} -> v{args.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from flywheel.common.registry import CHAMPION

    settings = _settings()
    registry = _registry(settings)
    try:
        current, target = registry.rollback(args.name)
        if not args.no_announce:
            _announce(settings, registry, args.name, target, "MODEL_VERSION_CHANGE_ROLLED_BACK",
                      [(CHAMPION, target, current)], args.reason)
    except _flywheel_errors() as error:
        raise CommandError(error.message) from None
    _print(args, {"name": args.name, "from": current, "to": target},
           f"{args.name}: champion rolled back v{current} -> v{target}")
    return 0
