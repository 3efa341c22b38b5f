"""compose.yaml, deploy/Dockerfile and deploy/k8s say only what the code can do: every
``python -m`` module exists, every port is the service's own, every FLYWHEEL_* variable is a
settings field, healthchecks and probes ask grpc.health.v1, and the parts hang together."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from flywheel.common.settings import CommonSettings, ServiceSettings
from flywheel.mesh.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOTENV = ROOT / ".env"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
SERVICE_NAMES = [s.name for s in SERVICES]
# FLYWHEEL_* variables read by the process tools rather than a settings class.
PROCESS_VARIABLES = {"FLYWHEEL_HOME", "FLYWHEEL_KAFKA_JARS_DIR", "FLYWHEEL_DEBUG"}


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"flywheel.{service}.settings")
    found = [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ServiceSettings)
        and value is not ServiceSettings and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"flywheel.{service}.settings should define one settings class"
    return found[0]


def settings_field_of(variable: str) -> str:
    """Which settings field a FLYWHEEL_* variable sets ('<class>.<field>'), or fail."""
    assert variable.startswith("FLYWHEEL_"), variable
    rest = variable.removeprefix("FLYWHEEL_")
    for service in SERVICE_NAMES:
        prefix = f"{service.upper()}_"
        if rest.startswith(prefix):
            cls = settings_class(service)
            name = rest.removeprefix(prefix).lower()
            assert name in cls.model_fields, f"{variable}: {cls.__name__} has no field {name!r}"
            return f"{cls.__name__}.{name}"
    if rest.lower() in CommonSettings.model_fields:
        return f"CommonSettings.{rest.lower()}"
    if variable in PROCESS_VARIABLES:
        sources = (ROOT / "services" / "flywheel").rglob("*.py")
        assert any(variable in p.read_text() for p in sources), f"{variable} is read nowhere"
        return variable
    raise AssertionError(f"{variable} is not a settings field of any class")


def assert_module_runs(argv: list[str]) -> str:
    """argv is `python -m <module> ...` with a module that can be run that way."""
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:  # a package: it needs a __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
    return module


def dotenv() -> dict[str, str]:
    values = {}
    for line in DOTENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def env_items(environment) -> dict[str, str]:
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return dict(environment or {})


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


# -- compose -------------------------------------------------------------------------------


def test_compose_has_the_infrastructure_topics_job_and_five_services(compose):
    services = compose["services"]
    env = dotenv()
    assert env["KAFKA_IMAGE"].startswith("apache/kafka:")
    assert env["REDIS_IMAGE"].startswith("redis:")
    assert services["kafka"]["image"] == "${KAFKA_IMAGE}"
    assert services["redis"]["image"] == "${REDIS_IMAGE}"
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert assert_module_runs(services["topics"]["command"]) == "flywheel.mesh.topics"
    assert services["topics"]["restart"] == "no"
    for name in SERVICE_NAMES:
        assert assert_module_runs(services[name]["command"]) == f"flywheel.{name}"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_services_run_on_their_own_ports_with_grpc_healthchecks(compose):
    for service in SERVICES:
        spec = compose["services"][service.name]
        env = env_items(spec["environment"])
        port = int(env[service.grpc_port_env])
        assert port == service.grpc_port == settings_class(service.name).model_fields["grpc_port"].default
        assert int(env[service.metrics_port_env]) == service.metrics_port
        assert env[f"{service.env_prefix}GRPC_HOST"] == "0.0.0.0"
        assert spec["ports"][0].endswith(f":{port}")
        test = spec["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert assert_module_runs(test[1:]) == "flywheel.common.grpc.healthcheck"
        assert test[4:] == [str(port)], f"{service.name} healthcheck asks port {test[4:]}"


def test_compose_has_no_port_probe_healthchecks(compose):
    for name, spec in compose["services"].items():
        test = " ".join(spec.get("healthcheck", {}).get("test", []))
        assert not re.search(r"\bnc\b|/dev/tcp|curl|wget", test), f"{name}: {test}"


def test_compose_dependencies_wait_for_health(compose):
    services = compose["services"]
    for name, spec in services.items():
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency == "topics" else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}: {condition}"
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    assert services["inference"]["depends_on"]["features"] == {"condition": "service_healthy"}
    assert services["topics"]["depends_on"]["kafka"] == {"condition": "service_healthy"}


def test_compose_limits_resources_and_shares_the_registry(compose):
    services = compose["services"]
    for name in ["kafka", "redis", *SERVICE_NAMES]:
        limits = services[name]["deploy"]["resources"]["limits"]
        assert limits.get("cpus") and limits.get("memory"), name
    registry = _image_env()["FLYWHEEL_REGISTRY_URI"]
    for name in ("training", "inference"):
        assert f"registry:{registry}" in services[name]["volumes"], name
    assert "registry" in compose["volumes"]


def test_compose_gpu_profile_reserves_a_device(compose):
    gpu = compose["services"]["inference-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    assert assert_module_runs(gpu["command"]) == "flywheel.inference"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in compose["services"]["inference"]


def test_compose_interpolates_only_variables_of_the_env_file():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    missing = used - set(dotenv())
    assert not missing, f"compose.yaml uses {sorted(missing)} that .env does not define"


def test_every_flywheel_variable_named_by_the_deployment_is_a_setting(compose, k8s_docs):
    named = {k for k in dotenv() if k.startswith("FLYWHEEL_")}
    for spec in compose["services"].values():
        named |= {k for k in env_items(spec.get("environment")) if k.startswith("FLYWHEEL_")}
    for doc in k8s_docs:
        if doc["kind"] == "ConfigMap":
            named |= set(doc["data"])
        for container in _containers(doc):
            named |= {e["name"] for e in container.get("env", [])}
    named |= set(_image_env())
    assert len(named) > 20
    for variable in sorted(named):
        settings_field_of(variable)


# -- Dockerfile ----------------------------------------------------------------------------


def _image_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"(FLYWHEEL_[A-Z_]+)=(\S+)", line))
    return found


def test_dockerfile_builds_cpu_and_gpu_variants_from_the_extras():
    text = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, flags=re.MULTILINE))
    assert {"cpu", "gpu"} <= stages
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for variant in ("cpu", "gpu"):
        assert variant in extras
        assert f'flywheel_mesh-*.whl)[{variant},boost]"' in text
        assert f"requirements.py /src/pyproject.toml {variant},boost" in text
    # The classic builder runs every stage up to the target: the cpu image must not need the
    # CUDA base, and the default target (the last stage) is the cpu image.
    named = re.findall(r"^FROM \S+ AS (\S+)", text, flags=re.MULTILINE)
    assert named.index("cpu") < named.index("venv-gpu") < named.index("gpu")
    assert text.rstrip().splitlines()[-1] == "FROM cpu"
    assert "USER flywheel" in text
    assert _image_env()["FLYWHEEL_SPEC_PATH"] == "/etc/flywheel/flywheel.yaml"


# -- Kubernetes ----------------------------------------------------------------------------


def _containers(doc: dict) -> list[dict]:
    template = doc.get("spec", {}).get("template", {}).get("spec", {})
    return template.get("containers", [])


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_each_service_is_a_deployment_with_grpc_probes_resources_and_a_service(k8s_docs):
    deployments = {d["metadata"]["name"]: d for d in k8s_docs
                   if d["kind"] in ("Deployment", "StatefulSet")}
    services = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "Service"}
    config_maps = {d["metadata"]["name"] for d in k8s_docs if d["kind"] == "ConfigMap"}
    assert set(deployments) == set(SERVICE_NAMES)
    for service in SERVICES:
        (container,) = _containers(deployments[service.name])
        assert assert_module_runs(container["command"]) == f"flywheel.{service.name}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": service.grpc_port, "metrics": service.metrics_port}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[service.grpc_port_env] == str(service.grpc_port)
        assert env[f"{service.env_prefix}GRPC_HOST"] == "0.0.0.0"
        assert container["readinessProbe"]["grpc"]["port"] == service.grpc_port
        liveness = container["livenessProbe"]
        if "grpc" in liveness:
            assert liveness["grpc"]["port"] == service.grpc_port
        elif "tcpSocket" in liveness:  # training: a standby is alive, not ready
            assert service.name == "training"
            assert liveness["tcpSocket"]["port"] == service.grpc_port
        else:  # inference: alive while it waits for its first model
            command = liveness["exec"]["command"]
            assert assert_module_runs(command) == "flywheel.common.grpc.healthcheck"
            assert command[3:] == [str(service.grpc_port), "--live"]
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["limits"]["memory"]
        for source in container["envFrom"]:
            assert source["configMapRef"]["name"] in config_maps
        selector = deployments[service.name]["spec"]["selector"]["matchLabels"]
        assert services[service.name]["spec"]["selector"] == selector
        service_ports = {p["name"]: p["port"] for p in services[service.name]["spec"]["ports"]}
        assert service_ports["grpc"] == service.grpc_port


def test_topics_job_and_registry_claim(k8s_docs):
    (job,) = [d for d in k8s_docs if d["kind"] == "Job"]
    assert assert_module_runs(_containers(job)[0]["command"]) == "flywheel.mesh.topics"
    claims = {d["metadata"]["name"] for d in k8s_docs if d["kind"] == "PersistentVolumeClaim"}
    config = next(d for d in k8s_docs if d["kind"] == "ConfigMap")["data"]
    for doc in k8s_docs:
        for container in _containers(doc):
            for mount in container.get("volumeMounts", []):
                volume = next(v for v in doc["spec"]["template"]["spec"]["volumes"]
                              if v["name"] == mount["name"])
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    mounts = {
        doc["metadata"]["name"]: {m["mountPath"] for c in _containers(doc) for m in c.get("volumeMounts", [])}
        for doc in k8s_docs if doc["kind"] in ("Deployment", "StatefulSet")
    }
    assert config["FLYWHEEL_REGISTRY_URI"] in mounts["training"]
    assert config["FLYWHEEL_REGISTRY_URI"] in mounts["inference"]
    assert config["FLYWHEEL_INFERENCE_FEATURE_STORE_TARGET"] == "features:50052"


def test_gpu_overlay_asks_for_a_device():
    overlay = K8S / "overlays" / "gpu"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    patch = yaml.safe_load((overlay / kustomization["patches"][0]["path"]).read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"].endswith("-gpu")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "CUDAExecutionProvider" in env["FLYWHEEL_INFERENCE_PROVIDERS"]


def test_replicas_scale_and_survive_a_drain(k8s_docs):
    by_kind: dict[str, dict] = {}
    for doc in k8s_docs:
        by_kind.setdefault(doc["kind"], {})[doc.get("metadata", {}).get("name", "")] = doc
    targets = {h["spec"]["scaleTargetRef"]["name"]
               for h in by_kind["HorizontalPodAutoscaler"].values()}
    assert targets == {"ingest", "inference"}
    budgets = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for b in by_kind["PodDisruptionBudget"].values()}
    assert budgets == set(SERVICE_NAMES)
    feedback = by_kind["StatefulSet"]["feedback"]
    assert feedback["spec"]["serviceName"] in by_kind["Service"]
    (container,) = _containers(feedback)
    instance = next(e for e in container["env"] if e["name"] == "FLYWHEEL_FEEDBACK_INSTANCE_ID")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # the ordinal
    assert by_kind["Deployment"]["training"]["spec"]["replicas"] == 2


def test_ray_overlay_has_a_raycluster_and_points_training_at_it():
    overlay = K8S / "overlays" / "ray"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    (cluster,) = [d for name in kustomization["resources"] if name.endswith(".yaml")
                  for d in yaml.safe_load_all((overlay / name).read_text())]
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["rayVersion"] == "2.60.0"
    patch = yaml.safe_load((overlay / kustomization["patches"][0]["path"]).read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for variable in env:
        settings_field_of(variable)
    assert env["FLYWHEEL_TRAINING_ENGINE"] == "ray"
    assert env["FLYWHEEL_TRAINING_RAY_ADDRESS"].startswith(f"ray://{cluster['metadata']['name']}")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", ["base", "overlays/gpu", "overlays/ray", "infra"])
def test_kustomize_renders(folder):
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(done.stdout) if d]
    assert kinds
