"""Kubernetes, validated statically: the manifests of deploy/k8s/ against the Kubernetes API schemas
(kubernetes-validate, which ships them), the Helm values of deploy/helm/ against the official Airflow
chart's values schema (tests/deploy/chart.py says where it is read from), and the names that must
agree across them, the package and deploy/README.md. Nothing is applied to a cluster.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry
from referencing.exceptions import NoSuchResource

from tests.deploy import astro, chart
from tests.support.services import ROOT

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
VALUES_FILE = DEPLOY / "helm" / "airflow-values.yaml"
# the oldest and the newest Kubernetes minor that kubernetes-validate 1.37.0 ships schemas for
KUBERNETES_VERSIONS = ("1.30", "1.37")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# names whose values are credentials or hold them (a database URI with its password, Redis with its)
SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|KEY_ID|USERNAME|STORE_URI$|REGISTRY_URI$|LOCK_URI$|_REDIS$")
# what every pod that runs the pipeline's code needs to reach its data (docs/configuration.md,
# "Object storage"): inline values, and a key pair and a PostgreSQL URI read from one Secret
DATA_VALUES = ("CROSSFIT_DATA_URL", "CROSSFIT_S3_ENDPOINT")
DATA_SECRETS = {"AWS_ACCESS_KEY_ID": "access-key-id", "AWS_SECRET_ACCESS_KEY": "secret-access-key", "CROSSFIT_LOCK_URI": "lock-uri"}


def _documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def _workloads() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] in WORKLOADS}


def _containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _documented_secrets() -> dict[str, set[str]]:
    """The Secrets table of deploy/README.md: ``| `name` | `key`, `key` | ... |``."""
    rows = re.findall(r"^\| `(crossfit-[a-z0-9-]+)` \| ([^|]+) \|", (DEPLOY / "README.md").read_text(), re.M)
    return {name: set(re.findall(r"`([^`]+)`", keys)) for name, keys in rows}


def _secret_references() -> set[tuple[str, str]]:
    """Every (Secret, key) the manifests and the Helm values read."""
    refs = set()
    for workload in _workloads().values():
        for container in _containers(workload):
            for item in container.get("env", []):
                if ref := item.get("valueFrom", {}).get("secretKeyRef"):
                    refs.add((ref["name"], ref["key"]))
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if secret := volume.get("secret"):
                refs |= {(secret["secretName"], item["key"]) for item in secret["items"]}
    values = _values()
    refs |= {(item["secretName"], item["secretKey"]) for item in values["secret"]}
    for item in values["createUserJob"]["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        refs.add((ref["name"], ref["key"]))
    # the chart's own Secret names and the key each must hold (the chart's _helpers.yaml)
    chart_keys = {"metadataSecretName": "connection", "resultBackendSecretName": "connection", "brokerUrlSecretName": "connection"}
    refs |= {(values["data"][field], key) for field, key in chart_keys.items()}
    root_keys = {"fernetKeySecretName": "fernet-key", "jwtSecretName": "jwt-secret", "apiSecretKeySecretName": "api-secret-key"}
    refs |= {(values[field], key) for field, key in root_keys.items()}
    return refs


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes(version):
    assert MANIFESTS, "no manifest in deploy/k8s"
    for path, doc in _documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} has no Kubernetes schema (a CRD is not checked): {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {list(exc.absolute_path)}: {exc.message}")


def test_no_secret_is_written_in_the_files():
    kinds = {doc["kind"] for _, doc in _documents()}
    assert "Secret" not in kinds, "Secrets are created beforehand (deploy/README.md), not committed"
    envs = [item for w in _workloads().values() for c in _containers(w) for item in c.get("env", [])]
    envs += _values()["env"]
    for item in envs:
        if "value" in item:
            assert not SECRET_LOOKING.search(item["name"]), f"{item['name']} is written inline: read it from a Secret"
            assert not re.search(r"://[^/\s]*@", item["value"]), f"{item['name']} holds credentials in a URL"


def test_every_secret_read_is_documented_and_every_documented_secret_is_read():
    documented = _documented_secrets()
    assert documented, "deploy/README.md has no Secrets table"
    used = _secret_references()
    missing = {(name, key) for name, key in used if key not in documented.get(name, set())}
    assert missing == set(), "read but not in deploy/README.md's Secrets table"
    unused = {(name, key) for name, keys in documented.items() for key in keys} - used
    assert unused == set(), "documented but read by nothing"


def test_workloads_have_probes_resources_and_pinned_images():
    for name, workload in _workloads().items():
        spec = workload["spec"]["template"]["spec"]
        for container in _containers(workload):
            where = f"{name}/{container['name']}"
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: image {image} is not pinned"
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{where}: no cpu and memory requests"
            assert "memory" in container["resources"].get("limits", {}), f"{where}: no memory limit"
            if container in spec.get("initContainers", []) or workload["kind"] == "Job":
                continue
            assert "readinessProbe" in container and "livenessProbe" in container, f"{where}: probes missing"
            ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports, f"{where}: {probe} port is not a container port"


def test_services_route_to_a_workload_port():
    workloads = {name: w for name, w in _workloads().items() if w["kind"] != "Job"}
    for path, doc in _documents():
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"]["selector"].items()
        targets = [w for w in workloads.values() if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"{path.name}: Service {doc['metadata']['name']} selects {len(targets)} workloads"
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in doc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {doc['metadata']['name']}: {port['targetPort']} is no container port"


def _service(name: str) -> dict:
    found = [doc for _, doc in _documents() if doc["kind"] == "Service" and doc["metadata"]["name"] == name]
    assert found, f"no Service {name} in deploy/k8s"
    return found[0]


def _points_at_service(url: str) -> None:
    parsed = urlparse(url)
    ports = {p["port"] for p in _service(parsed.hostname)["spec"]["ports"]}
    assert parsed.port in ports, f"{url}: Service {parsed.hostname} does not listen on {parsed.port}"


def test_mlflow_serves_artifacts_from_the_object_store_with_auth_on():
    mlflow = _workloads()["mlflow"]
    init, server = _containers(mlflow)
    args = server["args"]
    assert "--serve-artifacts" in args and args[args.index("--app-name") + 1] == "basic-auth"
    destination = urlparse(args[args.index("--artifacts-destination") + 1])
    env = _env(server)
    assert destination.scheme == "s3" and destination.hostname == env["ARTIFACT_BUCKET"]["value"]
    assert _env(init)["ARTIFACT_BUCKET"] == env["ARTIFACT_BUCKET"], "the init container creates another bucket"
    _points_at_service(env["MLFLOW_S3_ENDPOINT_URL"]["value"])
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    # the clients' tracking URI is this Service, and the server accepts the Host header it sends
    allowed = args[args.index("--allowed-hosts") + 1].split(",")
    uris = [_env(c)["MLFLOW_TRACKING_URI"]["value"] for c in _containers(_workloads()["prediction-api"])]
    uris += [item["value"] for item in _values()["env"] if item["name"] == "MLFLOW_TRACKING_URI"]
    assert len(uris) == 2
    for uri in uris:
        _points_at_service(uri)
        host = urlparse(uri).netloc
        for name in (host, f"{urlparse(uri).hostname}.crossfit.svc.cluster.local:{urlparse(uri).port}"):
            assert any(fnmatch.fnmatch(name, pattern) for pattern in allowed), f"MLflow refuses Host {name}"


def test_mlflow_exposes_prometheus_metrics_from_an_emptied_folder(tmp_path):
    mlflow = _workloads()["mlflow"]
    _, server = _containers(mlflow)
    args = server["args"]
    folder = args[args.index("--expose-prometheus") + 1]
    # the folder is an emptyDir of the pod, mounted writable (the server's user cannot write the image)
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert folder in mounts and not mounts[folder].get("readOnly"), f"{folder} is not mounted writable"
    volumes = {v["name"]: v for v in mlflow["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[folder]["name"]], f"{folder} is not an emptyDir"
    # an emptyDir outlives a restart of the container: the command empties it, then execs
    # `mlflow server` with the args. Run it, with a stub `mlflow` that reports what it was given
    stub_bin, metrics = tmp_path / "bin", tmp_path / "metrics"
    stub_bin.mkdir()
    (stub_bin / "mlflow").write_text('#!/bin/sh\necho "$@"\nls -A "$METRICS"\n')
    (stub_bin / "mlflow").chmod(0o755)
    metrics.mkdir()
    (metrics / "counter_41.db").write_text("stale")
    (metrics / "sub").mkdir()
    command = [part.replace(folder, str(metrics)) for part in server["command"]]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PATH": f"{stub_bin}:{os.environ['PATH']}", "METRICS": str(metrics)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["server " + " ".join(args)], "mlflow server did not get the args, or stale files stayed"


def test_the_prediction_api_runs_the_package_cli_and_probes_its_endpoints():
    from crossfit_mlops.ops.cli import build_parser
    from crossfit_mlops.serving.app import create_app
    from crossfit_mlops.serving.champion import ChampionHolder

    (api,) = _containers(_workloads()["prediction-api"])
    command = api["command"]
    assert command[:3] == ["python", "-m", "crossfit_mlops"]
    parsed = build_parser().parse_args(command[3:])
    assert parsed.command == "serve"
    assert parsed.host == "0.0.0.0" and parsed.port == api["ports"][0]["containerPort"]
    holder = ChampionHolder("http://127.0.0.1:9", "crossfit_total_lift")  # never started: only the routes are read
    routes = {route.path for route in create_app(holder, None, start_refresh=False).routes}
    assert api["livenessProbe"]["httpGet"]["path"] == "/health" and api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"/health", "/ready"} <= routes


def test_the_settings_named_are_ones_the_package_reads():
    package = "".join(p.read_text() for p in (ROOT / "include" / "crossfit_mlops").rglob("*.py"))
    names = {item["name"] for w in _workloads().values() for c in _containers(w) for item in c.get("env", [])}
    names |= {item["name"] for item in _values()["env"]} | {item["envName"] for item in _values()["secret"]}
    from crossfit_mlops.settings import SECTIONS

    typed = {section.variable(field) for section in SECTIONS for field in section.model_fields}  # read by name
    unread = {n for n in names if n.startswith("CROSSFIT_") and n not in typed and f'"{n}"' not in package}
    assert unread == set()


def _walk(node, path=()):
    """Every (path, key or scalar) of a YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))
    else:
        yield path, node


def test_no_volume_is_shared_between_pods():
    trees = [(path.name, doc) for path, doc in _documents()] + [(VALUES_FILE.name, _values())]
    for name, tree in trees:
        found = [where for where, item in _walk(tree) if item in ("ReadWriteMany", "persistentVolumeClaim")]
        assert found == [], f"{name}: a claim mounted by name or ReadWriteMany at {found}: pods share the bucket, not a disk"
    assert not [doc for _, doc in _documents() if doc["kind"] in ("PersistentVolumeClaim", "PersistentVolume")]
    # the only claim left is the object store's own (one pod, ReadWriteOnce)
    for workload in _workloads().values():
        for template in workload["spec"].get("volumeClaimTemplates", []):
            assert workload["spec"]["replicas"] == 1 and template["spec"]["accessModes"] == ["ReadWriteOnce"]
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret"}, f"{workload['metadata']['name']}: volume {volume['name']}"
    # the chart mounts `volumes` in every Airflow pod: scratch only, each pod's own
    assert all(set(volume) == {"name", "emptyDir"} for volume in _values()["volumes"])


def _scratch(env: dict[str, str], volumes: list[dict], mounts: list[dict]) -> None:
    """CROSSFIT_STATE_DIR is on an emptyDir of the pod itself."""
    mount = next(m for m in mounts if m["mountPath"] == env["CROSSFIT_STATE_DIR"])
    assert "emptyDir" in next(v for v in volumes if v["name"] == mount["name"])


def test_every_airflow_pod_and_the_api_read_the_data_from_the_bucket():
    values = _values()
    airflow_env = {item["name"]: item["value"] for item in values["env"]}
    airflow_secrets = {item["envName"]: (item["secretName"], item["secretKey"]) for item in values["secret"]}
    _scratch(airflow_env, values["volumes"], values["volumeMounts"])
    (api,) = _containers(_workloads()["prediction-api"])
    api_env = {name: item["value"] for name, item in _env(api).items() if "value" in item}
    api_secrets = {name: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
                   for name, item in _env(api).items() if "valueFrom" in item}  # fmt: skip
    _scratch(api_env, _workloads()["prediction-api"]["spec"]["template"]["spec"]["volumes"], api["volumeMounts"])
    for where, env, secrets in (("the Airflow values", airflow_env, airflow_secrets), ("the API", api_env, api_secrets)):
        missing = (set(DATA_VALUES) - set(env)) | (set(DATA_SECRETS) - set(secrets))
        assert missing == set(), f"{where} lack {sorted(missing)}"
    (job,) = _containers(_workloads()["data-bucket"])
    job_env = {name: item["value"] for name, item in _env(job).items() if "value" in item}
    for env in (airflow_env, api_env, job_env):
        assert {name: env.get(name) for name in DATA_VALUES} == {name: airflow_env[name] for name in DATA_VALUES}
    data_url = urlparse(airflow_env["CROSSFIT_DATA_URL"])
    assert data_url.scheme == "s3" and data_url.hostname, "CROSSFIT_DATA_URL is s3://bucket[/prefix]"
    _points_at_service(airflow_env["CROSSFIT_S3_ENDPOINT"])
    (secret,) = {airflow_secrets[name][0] for name in DATA_SECRETS}  # one Secret: the pipeline's
    assert {name: airflow_secrets[name] for name in DATA_SECRETS} == {name: (secret, key) for name, key in DATA_SECRETS.items()}
    assert {name: api_secrets[name] for name in DATA_SECRETS} == {name: (secret, key) for name, key in DATA_SECRETS.items()}
    # the Job that creates the bucket does it with the pipeline's pair, not MLflow's
    job_pair = {item["name"]: item["valueFrom"]["secretKeyRef"]["name"] for item in job["env"] if "valueFrom" in item}
    assert job_pair == {"AWS_ACCESS_KEY_ID": secret, "AWS_SECRET_ACCESS_KEY": secret}
    compile(job["command"][2], "data-bucket", "exec")
    mlflow_pair = {item["valueFrom"]["secretKeyRef"]["name"] for c in _containers(_workloads()["mlflow"])
                   for item in c["env"] if item["name"].startswith("AWS_") and "valueFrom" in item}  # fmt: skip
    assert secret not in mlflow_pair, "the pipeline and MLflow share a key pair"
    # the names are the typed settings' own
    from crossfit_mlops.settings import StorageSettings

    assert {StorageSettings.variable(field) for field in StorageSettings.model_fields} == set(DATA_VALUES) | {"CROSSFIT_LOCK_URI"}


def test_the_helm_values_run_this_project():
    values = _values()
    assert values["executor"] == "CeleryExecutor"
    sets = {s["name"]: s for s in values["workers"]["celery"]["sets"]}
    assert sets["training"]["queue"] == "training" and values["workers"]["celery"]["queue"] == "default"
    assert set(astro.pinned_airflow(ROOT).values()) == {values["airflowVersion"]}
    assert values["images"]["airflow"]["repository"] and values["images"]["airflow"]["tag"]
    assert values["postgresql"]["enabled"] is False and values["redis"]["enabled"] is False
    # the Astro Runtime image's home and user (the chart's defaults are the apache/airflow image's)
    assert values["airflowHome"] == "/usr/local/airflow" and values["uid"] == 50000
    assert "airflowLocalSettings" in values and values["airflowLocalSettings"] is None


def test_the_image_has_the_auth_manager_the_chart_uses():
    names = {req.name.lower() for path in astro.requirement_files(ROOT) for req in astro.requirements(path)}
    assert "apache-airflow-providers-fab" in names


@pytest.fixture(scope="module")
def airflow_chart() -> chart.Chart:
    found = chart.find_chart()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def _errors(schema: dict, instance: dict) -> list[str]:
    def refuse(uri: str):
        raise NoSuchResource(ref=uri)  # the chart's $refs are all local: nothing is fetched

    validator = jsonschema.Draft7Validator(schema, registry=Registry(retrieve=refuse))
    return sorted(f"{error.json_path}: {error.message[:200]}" for error in validator.iter_errors(instance))


def test_the_values_pass_the_chart_schema(airflow_chart):
    jsonschema.Draft7Validator.check_schema(airflow_chart.schema)
    merged = chart.helm_merge(airflow_chart.defaults, _values())
    assert _errors(chart.strict(airflow_chart.schema), merged) == [], airflow_chart.source


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda v: v.update(apiServerr={"replicas": 2}), "$"),
        (lambda v: v["workers"]["celery"].update(queu="x"), "$.workers.celery"),
        (lambda v: v["workers"]["celery"]["sets"][0].update(replcas=3), "$.workers.celery.sets[0]"),
        (lambda v: v["data"].update(metadataSecretNmae="x"), "$.data"),
        (lambda v: v["apiServer"].update(replicas="two"), "$.apiServer.replicas"),
    ],
    ids=["root", "celery", "worker-set", "data", "type"],
)
def test_the_schema_check_catches_a_typo(airflow_chart, edit, path):
    assert _errors(chart.strict(airflow_chart.schema), airflow_chart.defaults) == [], "the strict schema refuses the chart's defaults"
    values = _values()
    edit(values)
    errors = _errors(chart.strict(airflow_chart.schema), chart.helm_merge(airflow_chart.defaults, values))
    assert [e for e in errors if e.startswith(path + ":")], errors
