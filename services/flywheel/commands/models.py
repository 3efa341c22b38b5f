"""``flywheel models list | register | promote | rollback``: the model registry.

Every change is written to the registry and announced on flywheel.model-versions.v1, which is
how the inference replicas hear of it; ``--no-announce`` only writes the registry. The
registry, broker and namespace are the running mesh's (``flywheel.commands.context``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flywheel.commands import CommandError

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
        "register", help="register an ONNX model made elsewhere (bring your own model)"
    )
    reg.add_argument("artifact", type=Path, help="the .onnx file")
    reg.add_argument("--name", required=True, help="model name, e.g. churn")
    reg.add_argument("--features", required=True,
                     help="comma-separated input feature names, in the model's column order")
    reg.add_argument("--entity-type", default="customer", help="entity type of the features")
    reg.add_argument("--task", choices=TASKS, default="binary_classification")
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


def _settings(args: argparse.Namespace | None = None):
    """The mesh's settings; Kafka is needed (and checked first) when the command announces."""
    from flywheel.commands.context import mesh_context

    announces = args is not None and not args.no_announce
    return mesh_context("registry", *(("kafka",) if announces else ())).common_settings()


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
    }


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


def _check_artifact(path: Path, width: int) -> list[str]:
    """The model must load as ONNX, pass the checker and take one [rows, width] input."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as error:  # noqa: BLE001 - reported to the user as one line
        raise CommandError(f"{path} is not a valid ONNX model: {error}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CommandError(f"{path} has {len(inputs)} inputs; one feature matrix is expected")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value != width):
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
        raise CommandError(
            f"input {inputs[0].name!r} has shape {shape}; expected [rows, {width}] "
            f"for {width} features"
        )
    return [o.name for o in model.graph.output]


def _register(args: argparse.Namespace) -> int:
    from flywheel.common.registry import CHAMPION, SHADOW
    from flywheel.v1 import common_pb2

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise CommandError("--features needs at least one name")
    if not args.artifact.is_file():
        raise CommandError(f"{args.artifact} is not a file")
    if args.promote and args.shadow:
        raise CommandError("choose --promote or --shadow, not both")
    outputs = _check_artifact(args.artifact, len(features))
    settings = _settings(args)
    registry = _registry(settings)
    try:
        meta = registry.register(
            args.name, args.artifact,
            task=common_pb2.ModelTask.Value(f"MODEL_TASK_{args.task.upper()}"),
            entity_type=args.entity_type, feature_names=features, output_names=outputs,
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

    settings = _settings(args)
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

    settings = _settings(args)
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
