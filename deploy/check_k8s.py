"""Offline checks of deploy/k8s; check.py runs them.

Every folder under deploy/k8s with a kustomization.yaml (the base and each
overlay) is rendered by kustomize (the Go library that PyPI's pykustomize
bundles; with `kubectl` on the PATH, `kubectl kustomize` renders it too
and must agree), and every rendered object is validated against
Kubernetes' own JSON schemas (PyPI's kubernetes-validate, strict: unknown
fields are errors) for the oldest and the newest Kubernetes this targets.
Then the objects must agree with one another and with grymd: each
grymd.toml in a ConfigMap parses and uses only keys grymd knows (read
from its configuration's source), each `dns://` worker endpoint names a
headless Service of the same tree on a port a worker Deployment listens
on, probes are gRPC on a port the container exposes, pods run as the
image's non-root user with a read-only root file system, the store's URL
comes from a Secret that no base holds, Services select pods and their
ports, the HPA and PDB aim at grymd, and an overlay's images are pinned.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
CONFIG_SOURCE = ROOT / "crates/grym-server/src/config"

# The oldest Kubernetes still widely run with gRPC probes GA (1.27+), and
# the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# The image's user (Dockerfile: useradd --uid 10001).
IMAGE_UID = 10001
# Keys grymd reads beyond RawConfig's own fields: the Prometheus scrape
# listener's table.
EXTRA_TOP_LEVEL = {"metrics"}
METRICS_KEYS = {"listen"}
DNS_ENDPOINT = re.compile(r"dns://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)")

Problem = Callable[[Path | str, str], None]


def struct_fields(path: Path, struct: str) -> set[str]:
    """The `pub` field names of a Rust struct, read from its source."""
    text = path.read_text()
    match = re.search(r"pub struct %s \{(.*?)\n\}" % struct, text, re.S)
    return set(re.findall(r"^\s*pub (\w+):", match.group(1), re.M)) if match else set()


def render(folder: Path, problem: Problem) -> list[dict] | None:
    try:
        import pykustomize
    except ImportError:
        problem(folder, "pykustomize is not installed (deploy/check installs it)")
        return None
    try:
        result = asyncio.run(pykustomize.build(str(folder)))
    except Exception as error:  # noqa: BLE001 - kustomize's own message
        problem(folder, f"kustomize build fails: {error}")
        return None
    documents = [d for d in yaml.safe_load_all(result.yaml) if d]
    kubectl = shutil.which("kubectl")
    if kubectl:
        other = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
        if other.returncode != 0:
            problem(folder, "kubectl kustomize fails:\n" + other.stderr.strip())
        elif [d for d in yaml.safe_load_all(other.stdout) if d] != documents:
            problem(folder, "kubectl kustomize renders it otherwise than the kustomize library")
    return documents


def validate_schemas(where: str, documents: list[dict], problem: Problem) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        problem(where, "kubernetes-validate is not installed (deploy/check installs it)")
        return
    for document in documents:
        name = f"{document.get('kind')} {document.get('metadata', {}).get('name')}"
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                first = str(error).strip().splitlines()[0]
                problem(where, f"{name} is not a valid object of Kubernetes {version}: {first}")
            except kubernetes_validate.SchemaNotFoundError:
                problem(where, f"{name}: Kubernetes {version} has no {document.get('apiVersion')}")


def port(address: object) -> int | None:
    """The port of `host:port` (or of a URL ending in one), if it has one."""
    match = re.fullmatch(r"(?:[a-z]+://)?[^/]*:(\d+)/?", str(address))
    return int(match.group(1)) if match else None


def listen_port(command: list[str]) -> int | None:
    for index, arg in enumerate(command):
        if arg.startswith("--listen="):
            return port(arg.split("=", 1)[1])
        if arg == "--listen" and index + 1 < len(command):
            return port(command[index + 1])
    return None


def model_id(command: list[str]) -> str | None:
    for index, arg in enumerate(command):
        if arg.startswith("--model-id="):
            return arg.split("=", 1)[1]
        if arg == "--model-id" and index + 1 < len(command):
            return command[index + 1]
    return None


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Tree:
    """The rendered objects of one kustomization, by kind."""

    def __init__(self, where: str, documents: list[dict]):
        self.where = where
        self.documents = documents

    def of(self, kind: str) -> list[dict]:
        return [d for d in self.documents if d.get("kind") == kind]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        for document in self.of(kind):
            metadata = document.get("metadata") or {}
            if metadata.get("name") == name and namespace in (None, metadata.get("namespace")):
                return document
        return None

    def deployment_of(self, selector: dict) -> dict | None:
        for deployment in self.of("Deployment"):
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            if selects(selector, labels):
                return deployment
        return None


def container_ports(container: dict) -> dict:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports") or []}


def check_deployments(tree: Tree, is_base: bool, problem: Problem) -> None:
    for deployment in tree.of("Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        security = pod.get("securityContext") or {}
        if not security.get("runAsNonRoot") or security.get("runAsUser") != IMAGE_UID:
            problem(tree.where, f"Deployment {name}: pods must run as non-root uid {IMAGE_UID}")
        for container in pod.get("containers") or []:
            where = f"Deployment {name} container {container['name']}"
            ports = container_ports(container)
            for probe in ("livenessProbe", "readinessProbe"):
                probed = ((container.get(probe) or {}).get("grpc") or {}).get("port")
                if probed is None:
                    problem(tree.where, f"{where}: {probe} must be a gRPC probe (grpc.health.v1)")
                elif probed not in ports.values():
                    problem(tree.where, f"{where}: {probe} probes port {probed}, which it does not expose")
            listen = listen_port(container.get("command") or [])
            if listen is not None and listen != ports.get("grpc"):
                problem(tree.where, f"{where}: listens on {listen}, exposes grpc {ports.get('grpc')}")
            context = container.get("securityContext") or {}
            if (not context.get("readOnlyRootFilesystem") or context.get("allowPrivilegeEscalation") is not False
                    or "ALL" not in ((context.get("capabilities") or {}).get("drop") or [])):
                problem(tree.where, f"{where}: needs a read-only root, no privilege escalation, capabilities dropped")
            resources = container.get("resources") or {}
            if not {"cpu", "memory"} <= set(resources.get("requests") or {}) or "memory" not in (resources.get("limits") or {}):
                problem(tree.where, f"{where}: needs cpu and memory requests and a memory limit")
            image = container.get("image", "")
            if not is_base and (":" not in image or image.rsplit(":", 1)[1] in ("latest", "local")):
                problem(tree.where, f"{where}: image `{image}` is not pinned to a version")
            for variable in container.get("env") or []:
                secret = ((variable.get("valueFrom") or {}).get("secretKeyRef") or {})
                if not secret:
                    continue
                found = tree.find("Secret", secret["name"])
                if is_base:
                    continue
                data = {**((found or {}).get("data") or {}), **((found or {}).get("stringData") or {})}
                if secret["key"] not in data:
                    problem(tree.where, f"{where}: {variable['name']} reads Secret {secret['name']} key {secret['key']}, which the overlay lacks")
        for volume in pod.get("volumes") or []:
            config_map = (volume.get("configMap") or {}).get("name")
            if config_map and tree.find("ConfigMap", config_map) is None:
                problem(tree.where, f"Deployment {name}: volume {volume['name']} names no ConfigMap of the tree")
    if is_base and tree.of("Secret"):
        problem(tree.where, "the base holds a Secret: secrets belong to an overlay (or outside the repository)")


def check_services(tree: Tree, problem: Problem) -> None:
    for service in tree.of("Service"):
        name = service["metadata"]["name"]
        deployment = tree.deployment_of(service["spec"].get("selector") or {})
        if deployment is None:
            problem(tree.where, f"Service {name} selects no Deployment's pods")
            continue
        exposed = {}
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            exposed.update(container_ports(container))
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            if target not in exposed and target not in exposed.values():
                problem(tree.where, f"Service {name} port {port['port']}: no container port {target}")


def check_grymd(tree: Tree, problem: Problem) -> None:
    top_level = struct_fields(CONFIG_SOURCE / "mod.rs", "RawConfig") | EXTRA_TOP_LEVEL
    worker_keys = struct_fields(CONFIG_SOURCE / "workers.rs", "RawWorker")
    if len(top_level) < 10 or not worker_keys:
        problem(CONFIG_SOURCE, "cannot read RawConfig's and RawWorker's fields")
        return
    grymd = tree.find("Deployment", "grymd")
    if grymd is None:
        problem(tree.where, "no Deployment grymd")
        return
    container = grymd["spec"]["template"]["spec"]["containers"][0]
    ports = container_ports(container)
    config_maps = [c for c in tree.of("ConfigMap") if "grymd.toml" in (c.get("data") or {})]
    if not config_maps:
        problem(tree.where, "no ConfigMap holds grymd.toml")
    for config_map in config_maps:
        where = f"{tree.where}: ConfigMap {config_map['metadata']['name']} grymd.toml"
        try:
            config = tomllib.loads(config_map["data"]["grymd.toml"])
        except tomllib.TOMLDecodeError as error:
            problem(where, f"does not parse: {error}")
            continue
        for key in sorted(set(config) - top_level):
            problem(where, f"`{key}` is no key grymd knows (RawConfig)")
        for key in sorted(set(config.get("metrics") or {}) - METRICS_KEYS):
            problem(where, f"`metrics.{key}` is no key grymd knows")
        if port(config.get("listen")) != ports.get("grpc"):
            problem(where, f"`listen` is not the grpc port the container exposes ({ports.get('grpc')})")
        metrics_port = port((config.get("metrics") or {}).get("listen"))
        metrics = str(metrics_port)
        if metrics_port is None or metrics_port != ports.get("metrics"):
            problem(where, f"`metrics.listen` is not the metrics port the container exposes ({ports.get('metrics')})")
        service = tree.find("Service", "grymd") or {}
        for holder, annotations in (("Service grymd", (service.get("metadata") or {}).get("annotations") or {}),
                                    ("grymd's pods", grymd["spec"]["template"]["metadata"].get("annotations") or {})):
            if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != metrics:
                problem(tree.where, f"{holder}: prometheus.io annotations must scrape port {metrics}")
        grace = grymd["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        shutdown = re.fullmatch(r"(\d+)s", str(config.get("shutdown_grace", "30s")))
        if shutdown and int(shutdown.group(1)) >= grace:
            problem(where, f"shutdown_grace must end before terminationGracePeriodSeconds ({grace})")
        listed = set()
        for index, worker in enumerate(config.get("workers") or []):
            for key in sorted(set(worker) - worker_keys):
                problem(where, f"workers[{index}].{key} is no key grymd knows (RawWorker)")
            for endpoint in worker.get("endpoints") or [worker.get("endpoint", "")]:
                match = DNS_ENDPOINT.fullmatch(endpoint)
                if not match:
                    problem(where, f"workers[{index}]: `{endpoint}` is not dns://SERVICE.NAMESPACE.svc.cluster.local:PORT")
                    continue
                name, namespace, number = match.group(1), match.group(2), int(match.group(3))
                target = tree.find("Service", name, namespace)
                if target is None:
                    problem(where, f"workers[{index}]: no Service {name} in namespace {namespace}")
                    continue
                listed.add(name)
                if target["spec"].get("clusterIP") != "None":
                    problem(tree.where, f"Service {name} must be headless (clusterIP: None) for grymd to see every pod")
                if number not in [p["port"] for p in target["spec"].get("ports") or []]:
                    problem(where, f"workers[{index}]: Service {name} has no port {number}")
                deployment = tree.deployment_of(target["spec"].get("selector") or {})
                command = (deployment or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("command") or []
                served = model_id(command)
                if served is not None and served != worker.get("id"):
                    problem(where, f"workers[{index}]: Service {name} serves model `{served}`, not `{worker.get('id')}`")
        for service in tree.of("Service"):
            labels = service["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/component") == "model-worker" and service["metadata"]["name"] not in listed:
                problem(where, f"lists no endpoint of worker Service {service['metadata']['name']}")


def check_scaling(tree: Tree, problem: Problem) -> None:
    grymd = tree.find("Deployment", "grymd")
    labels = ((grymd or {}).get("spec", {}).get("template", {}).get("metadata") or {}).get("labels") or {}
    budgets = tree.of("PodDisruptionBudget")
    if not any(selects((b["spec"].get("selector") or {}).get("matchLabels") or {}, labels) for b in budgets):
        problem(tree.where, "no PodDisruptionBudget covers grymd's pods")
    for hpa in tree.of("HorizontalPodAutoscaler"):
        name = hpa["metadata"]["name"]
        target = hpa["spec"]["scaleTargetRef"]
        if tree.find(target["kind"], target["name"]) is None:
            problem(tree.where, f"HorizontalPodAutoscaler {name} scales {target['kind']} {target['name']}, not in the tree")
        metrics = hpa["spec"].get("metrics") or []
        if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in metrics):
            problem(tree.where, f"HorizontalPodAutoscaler {name} does not scale on CPU")
        queue = [m for m in metrics if m.get("type") in ("Pods", "External")
                 and m[m["type"].lower()]["metric"]["name"] == "grym_model_queued"]
        if not queue:
            problem(tree.where, f"HorizontalPodAutoscaler {name} does not scale on grym_model_queued")
        for budget in budgets:
            floor = budget["spec"].get("minAvailable")
            if isinstance(floor, int) and hpa["spec"].get("minReplicas", 1) <= floor:
                problem(tree.where, f"minReplicas of {name} must exceed the PDB's minAvailable, or no node drains")


def check(problem: Problem) -> list[str]:
    """Checks every kustomization under deploy/k8s; returns what it rendered."""
    folders = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
    if not folders:
        problem(K8S, "holds no kustomization.yaml")
    rendered = []
    for folder in folders:
        where = str(folder.relative_to(ROOT))
        documents = render(folder, problem)
        if documents is None:
            continue
        rendered.append(f"{where} ({len(documents)} objects)")
        validate_schemas(where, documents, problem)
        tree = Tree(where, documents)
        is_base = folder.name == "base"
        check_deployments(tree, is_base, problem)
        check_services(tree, problem)
        check_grymd(tree, problem)
        check_scaling(tree, problem)
    return rendered
