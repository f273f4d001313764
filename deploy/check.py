"""Offline checks of the deployment material; run by deploy/check.

Checks that every YAML file parses, that docker-compose.yml follows the
Compose Specification (JSON schema vendored by check-jsonschema) and pins
its images, that the collector, Prometheus, Grafana, grymd and compose
configurations agree with one another (ports, hosts, mounts, data source
uids), that the OpenTelemetry Collector configuration is well formed as
far as can be told without the collector, and that the Grafana dashboard
parses, uses only the metric names grym emits (as the collector's
Prometheus exporter translates them) with labels those metrics carry, and
shows every one of them. With promtool at hand it also checks the
Prometheus configuration and the syntax of every dashboard query.

The image, compose and Prometheus agree on health and scraping: the
Dockerfile ships `grym` and exposes grymd's gRPC and metrics ports, each
grym service's healthcheck runs `grym health` on the port it listens on,
`service_healthy` waits only for services that have a healthcheck, and
Prometheus scrapes grymd's `[metrics] listen` port. The Kubernetes
manifests are checked by check_k8s.py.

Exit status 0 when everything holds, 1 otherwise, listing every problem.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

import check_k8s

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR = DEPLOY / "otel-collector.yaml"
PROMETHEUS = DEPLOY / "prometheus.yml"
GRYMD = DEPLOY / "grymd.compose.toml"
DOCKERFILE = ROOT / "Dockerfile"
DATASOURCES = DEPLOY / "grafana/provisioning/datasources"
DASHBOARD_PROVIDERS = DEPLOY / "grafana/provisioning/dashboards"
DASHBOARD = DEPLOY / "grafana/dashboards/grym.json"

# What grym emits: OpenTelemetry name, instrument, unit, attributes.
METRICS = [
    ("grym.task.duration", "histogram", "s", {"task_type", "status", "priority"}),
    ("grym.task.queue_wait", "histogram", "s", {"task_type", "priority", "model"}),
    ("grym.worker.call.duration", "histogram", "s", {"model", "outcome"}),
    ("grym.model.in_flight", "gauge", "{call}", {"model"}),
    ("grym.model.queued", "gauge", "{call}", {"model"}),
    ("grym.selection.count", "counter", "{selection}", {"model", "task_type"}),
    ("grym.fallback.count", "counter", "{fallback}", {"from_model", "to_model", "reason"}),
    ("grym.context.cache.hits", "counter", "{lookup}", set()),
    ("grym.context.cache.misses", "counter", "{lookup}", set()),
    ("grym.context.cache.evictions", "counter", "{entry}", set()),
    ("grym.context.cache.bytes", "gauge", "By", set()),
    ("grym.task.rejected", "counter", "{task}", {"reason"}),
    ("grym.bottleneck.active", "gauge", "{finding}", {"kind", "subject"}),
]
# Labels every series carries: the collector's exporter sets job (the
# service.name) and instance; Prometheus keeps them (honor_labels).
COMMON_LABELS = {"job", "instance"}

# UCUM units the collector's translator spells out (a subset).
UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "KiBy": "kibibytes"}

# Components this configuration may use, by kind.
COLLECTOR_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "resource", "attributes"},
    "exporters": {"otlp_grpc", "otlp_http", "prometheus", "debug"},
    "extensions": {"health_check"},
    "connectors": set(),
}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}

problems: list[str] = []


def problem(where: Path | str, text: str) -> None:
    where = where.relative_to(ROOT) if isinstance(where, Path) else where
    problems.append(f"{where}: {text}")


def prometheus_names(name: str, kind: str, unit: str) -> set[str]:
    """The series names the collector's Prometheus exporter makes of a
    metric (default translation: underscores, unit and type suffixes)."""
    base = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    tokens = [t for t in base.split("_") if t]
    if unit.startswith("{"):
        suffix = None
    elif unit == "1":
        suffix = "ratio" if kind == "gauge" else None
    else:
        suffix = UNIT_WORDS.get(unit, re.sub(r"[^a-zA-Z0-9]", "", unit))
    if suffix and suffix not in tokens:
        tokens.append(suffix)
    if kind == "counter":
        tokens.append("total")
    base = "_".join(tokens)
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


def load_yaml(path: Path):
    try:
        with path.open() as file:
            return yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as error:
        problem(path, f"does not parse: {error}")
        return None


def host_port(endpoint: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"(?:[a-z]+://)?([^:/]+):(\d+)/?", endpoint)
    if not match:
        return None
    return match.group(1), int(match.group(2))


# ---------------------------------------------------------------- compose


def check_compose(check_jsonschema: str | None) -> dict:
    compose = load_yaml(COMPOSE) or {}
    if check_jsonschema:
        result = subprocess.run(
            [check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            problem(COMPOSE, "does not follow the Compose Specification:\n"
                    + (result.stdout + result.stderr).strip())
    services = compose.get("services") or {}
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            if image != "grym:local":
                problem(COMPOSE, f"service {name} builds an image but does not name it grym:local")
        elif not re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image) or image.endswith(":latest"):
            problem(COMPOSE, f"service {name}: image `{image}` is not pinned to a version")
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(".") and not (ROOT / source).exists():
                problem(COMPOSE, f"service {name} mounts {source}, which does not exist")
        command = service.get("command") or []
        if command and command[0] in ("grymd", "grym-worker"):
            environment = service.get("environment") or {}
            if "OTEL_EXPORTER_OTLP_ENDPOINT" not in environment:
                problem(COMPOSE, f"service {name} runs {command[0]} without OTEL_EXPORTER_OTLP_ENDPOINT")
            if "OTEL_SERVICE_NAME" not in environment:
                problem(COMPOSE, f"service {name} runs {command[0]} without OTEL_SERVICE_NAME")
    return services


def listen_port(service: dict) -> int | None:
    for arg in service.get("command") or []:
        match = re.fullmatch(r"--listen[= ]\S*:(\d+)", str(arg))
        if match:
            return int(match.group(1))
    command = service.get("command") or []
    for flag, value in zip(command, command[1:]):
        if flag == "--listen":
            return int(str(value).rsplit(":", 1)[1])
    return None


def check_grymd_config(services: dict) -> None:
    try:
        config = tomllib.loads(GRYMD.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        problem(GRYMD, f"does not parse: {error}")
        return
    grymd = services.get("grymd") or {}
    mounted = any(str(v).startswith("./deploy/grymd.compose.toml:") for v in grymd.get("volumes") or [])
    if not mounted:
        problem(COMPOSE, "grymd does not mount deploy/grymd.compose.toml")
    for worker in config.get("workers", []):
        endpoints = worker.get("endpoints") or [worker.get("endpoint", "")]
        for endpoint in endpoints:
            target = host_port(endpoint)
            if target is None:
                problem(GRYMD, f"worker {worker.get('id')}: endpoint `{endpoint}` is not http://host:port")
                continue
            host, port = target
            service = services.get(host)
            if service is None:
                problem(GRYMD, f"worker {worker.get('id')}: no compose service `{host}`")
            elif listen_port(service) != port:
                problem(GRYMD, f"worker {worker.get('id')}: service {host} does not listen on port {port}")
            else:
                command = service.get("command") or []
                model_id = next((a.split("=", 1)[1] for a in command if str(a).startswith("--model-id=")), None)
                if model_id is not None and model_id != worker.get("id"):
                    problem(GRYMD, f"worker {worker.get('id')}: service {host} serves model `{model_id}`")


# -------------------------------------------------------------- collector


def check_collector(services: dict) -> None:
    config = load_yaml(COLLECTOR)
    if not isinstance(config, dict):
        return
    unknown = set(config) - set(COLLECTOR_COMPONENTS) - {"service"}
    if unknown:
        problem(COLLECTOR, f"unknown top-level keys {sorted(unknown)}")
    defined = {kind: set((config.get(kind) or {}).keys()) for kind in COLLECTOR_COMPONENTS}
    for kind, names in defined.items():
        for name in names:
            if name.split("/", 1)[0] not in COLLECTOR_COMPONENTS[kind]:
                problem(COLLECTOR, f"{kind}.{name}: not a component this stack uses")
    service = config.get("service") or {}
    for extension in service.get("extensions") or []:
        if extension not in defined["extensions"]:
            problem(COLLECTOR, f"service.extensions names undefined `{extension}`")
    used: dict[str, set[str]] = {kind: set() for kind in COLLECTOR_COMPONENTS}
    used["extensions"] = set(service.get("extensions") or [])
    pipelines = service.get("pipelines") or {}
    if set(pipelines) != {"traces", "metrics"}:
        problem(COLLECTOR, f"pipelines are {sorted(pipelines)}, expected traces and metrics")
    for pipeline_name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            names = pipeline.get(kind) or []
            if kind != "processors" and not names:
                problem(COLLECTOR, f"pipeline {pipeline_name} has no {kind}")
            for name in names:
                if name not in defined[kind]:
                    problem(COLLECTOR, f"pipeline {pipeline_name}: {kind} `{name}` is not defined")
                used[kind].add(name)
        processors = pipeline.get("processors") or []
        if processors and processors[0] != "memory_limiter":
            problem(COLLECTOR, f"pipeline {pipeline_name}: memory_limiter must come first")
        if "batch" not in processors or processors[-1] != "batch":
            problem(COLLECTOR, f"pipeline {pipeline_name}: batch must come last")
    for kind in COLLECTOR_COMPONENTS:
        for name in defined[kind] - used[kind]:
            problem(COLLECTOR, f"{kind}.{name} is defined but used by no pipeline")

    # Ports and hosts agree with compose and Prometheus.
    receivers = config.get("receivers") or {}
    grpc = ((receivers.get("otlp") or {}).get("protocols") or {}).get("grpc") or {}
    grpc_endpoint = host_port(str(grpc.get("endpoint", "")))
    if grpc_endpoint is None or grpc_endpoint[0] != "0.0.0.0":
        problem(COLLECTOR, "the OTLP gRPC receiver must listen on 0.0.0.0:PORT inside its container")
    for name, service in services.items():
        environment = service.get("environment") or {}
        endpoint = environment.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint and grpc_endpoint and host_port(endpoint) != ("otel-collector", grpc_endpoint[1]):
            problem(COMPOSE, f"service {name} sends OTLP to {endpoint}, not the collector's gRPC receiver")
    exporters = config.get("exporters") or {}
    for name, exporter in exporters.items():
        if name.startswith("otlp_grpc"):
            target = host_port(str((exporter or {}).get("endpoint", "")))
            if target is None or target[0] not in services:
                problem(COLLECTOR, f"exporter {name} sends to a host that is no compose service")
            if not ((exporter or {}).get("tls") or {}).get("insecure"):
                problem(COLLECTOR, f"exporter {name}: the stack speaks plaintext, set tls.insecure")
    prometheus_exporter = host_port(str((exporters.get("prometheus") or {}).get("endpoint", "")))
    scrape = load_yaml(PROMETHEUS) or {}
    targets = [
        target
        for job in scrape.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    if prometheus_exporter is None or f"otel-collector:{prometheus_exporter[1]}" not in targets:
        problem(PROMETHEUS, "does not scrape the collector's Prometheus exporter")
    if not any(job.get("honor_labels") for job in scrape.get("scrape_configs") or []):
        problem(PROMETHEUS, "honor_labels must be on, or the job label (service.name) is lost")


# ------------------------------------------------- health and scraping


def port_of(address: str) -> int | None:
    match = re.fullmatch(r"(?:[a-z]+://)?[^/]*:(\d+)/?", address)
    return int(match.group(1)) if match else None


def check_health_and_scrape(services: dict) -> None:
    try:
        config = tomllib.loads(GRYMD.read_text())
        dockerfile = DOCKERFILE.read_text()
    except (OSError, tomllib.TOMLDecodeError):
        return  # reported by check_grymd_config
    grpc_port = port_of(str(config.get("listen", "")))
    metrics_port = port_of(str((config.get("metrics") or {}).get("listen", "")))
    if metrics_port is None:
        problem(GRYMD, "`[metrics] listen` must open grymd's Prometheus scrape endpoint")
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.*)$", dockerfile, re.M) for p in line.split()}
    for port in (grpc_port, metrics_port):
        if port is not None and port not in exposed:
            problem(DOCKERFILE, f"does not EXPOSE {port}")
    if not re.search(r"^COPY --from=build .*/out/grym\b(?!-)", dockerfile, re.M):
        problem(DOCKERFILE, "does not ship the grym command line (HEALTHCHECK runs it)")
    if not re.search(r"^HEALTHCHECK .*\n?.*\"grym\", \"health\"", dockerfile, re.M):
        problem(DOCKERFILE, "has no HEALTHCHECK running `grym health`")
    grymd = services.get("grymd") or {}
    if metrics_port and f"127.0.0.1:{metrics_port}:{metrics_port}" not in (grymd.get("ports") or []):
        problem(COMPOSE, f"grymd does not publish its metrics port {metrics_port} on loopback")
    for name, service in services.items():
        command = [str(a) for a in service.get("command") or []]
        test = [str(a) for a in (service.get("healthcheck") or {}).get("test") or []]
        if service.get("image") == "grym:local" and command:
            port = grpc_port if command[0] == "grymd" else listen_port(service)
            expected = ["CMD", "grym", "health", "--addr", f"http://127.0.0.1:{port}"]
            if test[:5] != expected:
                problem(COMPOSE, f"service {name}: healthcheck must run `{' '.join(expected[1:])}`")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problem(COMPOSE, f"service {name}: depends_on must say the condition of each service")
            continue
        for other, condition in depends.items():
            if other not in services:
                problem(COMPOSE, f"service {name} depends on unknown service {other}")
            elif (condition or {}).get("condition") == "service_healthy" and "healthcheck" not in services[other]:
                problem(COMPOSE, f"service {name} waits for {other} to be healthy, which has no healthcheck")
    scrape = load_yaml(PROMETHEUS) or {}
    jobs = [
        job for job in scrape.get("scrape_configs") or []
        for group in job.get("static_configs") or []
        if f"grymd:{metrics_port}" in (group.get("targets") or [])
    ]
    if not jobs:
        problem(PROMETHEUS, f"does not scrape grymd's /metrics (grymd:{metrics_port})")
    elif any(job.get("metrics_path", "/metrics") != "/metrics" for job in jobs):
        problem(PROMETHEUS, "the grymd job must scrape /metrics")
    environment = grymd.get("environment") or {}
    if jobs and environment.get("OTEL_METRICS_EXPORTER") != "none":
        problem(COMPOSE, "grymd's metrics reach Prometheus by scrape and by the collector: set OTEL_METRICS_EXPORTER=none")


# ---------------------------------------------------------------- grafana


def check_grafana(services: dict) -> set[str]:
    uids = set()
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        config = load_yaml(path) or {}
        for source in config.get("datasources") or []:
            uids.add(source.get("uid"))
            target = host_port(str(source.get("url", "")))
            if target is None or target[0] not in services:
                problem(path, f"data source {source.get('name')} points at no compose service")
    for path in sorted(DASHBOARD_PROVIDERS.glob("*.y*ml")):
        config = load_yaml(path) or {}
        grafana = services.get("grafana") or {}
        mounts = {str(v).split(":")[1] for v in grafana.get("volumes") or []}
        for provider in config.get("providers") or []:
            if (provider.get("options") or {}).get("path") not in mounts:
                problem(path, f"provider {provider.get('name')} reads a path Grafana does not mount")
    return uids


def metric_names_and_labels(expr: str):
    """(metric names, labels matched per metric, labels in by/without/on
    clauses) of a PromQL expression, by a small tokenizer."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    clause_labels: set[str] = set()
    for match in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        clause_labels |= {label.strip() for label in match.group(1).split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    selectors: dict[str, set[str]] = {}
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", text):
        labels = {m.group(1) for m in re.finditer(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2))}
        selectors.setdefault(match.group(1), set()).update(labels)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set(selectors)
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if token.lower() in PROMQL_WORDS or re.fullmatch(r"\d.*", token):
            continue
        names.add(token)
    return names, selectors, clause_labels


def check_dashboard(uids: set[str], promtool: str | None) -> None:
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as error:
        problem(DASHBOARD, f"does not parse: {error}")
        return
    allowed: dict[str, set[str]] = {}
    metric_of: dict[str, str] = {}
    for name, kind, unit, labels in METRICS:
        for series in prometheus_names(name, kind, unit):
            allowed[series] = labels | COMMON_LABELS | ({"le"} if series.endswith("_bucket") else set())
            metric_of[series] = name
    panels = list(dashboard.get("panels") or [])
    for panel in list(panels):
        panels.extend(panel.get("panels") or [])
    ids = [panel.get("id") for panel in panels]
    if len(ids) != len(set(ids)):
        problem(DASHBOARD, "panel ids are not unique")
    expressions: list[tuple[str, str]] = []
    for panel in panels:
        title = panel.get("title", "?")
        for target in panel.get("targets") or []:
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("uid") not in uids:
                problem(DASHBOARD, f"panel `{title}` uses data source `{datasource.get('uid')}`, not provisioned")
            expressions.append((f"panel `{title}`", target.get("expr", "")))
        if panel.get("type") != "row" and not panel.get("targets"):
            problem(DASHBOARD, f"panel `{title}` has no query")
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("definition", "")
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        if not match:
            problem(DASHBOARD, f"variable {variable.get('name')}: expected label_values(metric, label)")
            continue
        metric, label = match.groups()
        if metric not in allowed or label not in allowed[metric]:
            problem(DASHBOARD, f"variable {variable.get('name')}: `{metric}` has no label `{label}`")
    shown: set[str] = set()
    for where, expr in expressions:
        names, selectors, clause_labels = metric_names_and_labels(expr)
        unknown = names - set(allowed)
        if unknown:
            problem(DASHBOARD, f"{where}: unknown metrics {sorted(unknown)} in `{expr}`")
        known = names & set(allowed)
        shown |= {metric_of[n] for n in known}
        for name, labels in selectors.items():
            if name in allowed and labels - allowed[name]:
                problem(DASHBOARD, f"{where}: `{name}` has no labels {sorted(labels - allowed[name])}")
        available = set().union(*(allowed[n] for n in known)) if known else set()
        if clause_labels - available:
            problem(DASHBOARD, f"{where}: groups by {sorted(clause_labels - available)}, which its metrics lack")
    for name, *_ in METRICS:
        if name not in shown:
            problem(DASHBOARD, f"shows nothing of `{name}`")
    if promtool:
        check_promql(promtool, expressions)


def check_promql(promtool: str, expressions: list[tuple[str, str]]) -> None:
    """promtool parses every query, as a recording rule, with the Grafana
    variables replaced by plausible values."""
    substitutions = {
        "$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
        "$model": ".*", "$task_type": ".*",
    }
    rules = []
    for index, (where, expr) in enumerate(expressions):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            problem(DASHBOARD, f"{where}: unknown variable in `{expr}`")
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, file)
        file.flush()
        result = subprocess.run([promtool, "check", "rules", file.name], capture_output=True, text=True)
    if result.returncode != 0:
        problem(DASHBOARD, "promtool refuses a query:\n" + (result.stdout + result.stderr).strip())


def check_prometheus(promtool: str | None) -> None:
    if not promtool:
        return
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        problem(PROMETHEUS, "promtool refuses it:\n" + (result.stdout + result.stderr).strip())


# ------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-jsonschema", help="the check-jsonschema executable")
    parser.add_argument("--promtool", help="the promtool executable")
    args = parser.parse_args()

    yaml_files = sorted(
        p for p in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), COMPOSE]
        if "bench" not in p.relative_to(ROOT).parts
    )
    for path in yaml_files:
        try:
            list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            problem(path, f"does not parse: {error}")
    services = check_compose(args.check_jsonschema)
    check_grymd_config(services)
    check_health_and_scrape(services)
    check_collector(services)
    check_prometheus(args.promtool)
    uids = check_grafana(services)
    check_dashboard(uids, args.promtool)
    rendered = check_k8s.check(problem)

    checked = [str(p.relative_to(ROOT)) for p in yaml_files] + [str(DASHBOARD.relative_to(ROOT)), str(GRYMD.relative_to(ROOT))]
    if problems:
        print("\n".join(f"FAIL {p}" for p in problems))
        print(f"{len(problems)} problem(s)")
        return 1
    print(f"ok: {len(checked)} files ({', '.join(checked)})")
    print("ok: compose spec" + (" (schema checked)" if args.check_jsonschema else " (schema NOT checked)"))
    second = " (kubectl kustomize agrees)" if shutil.which("kubectl") else " (no kubectl to compare with)"
    print(f"ok: kustomize{second} and Kubernetes {', '.join(check_k8s.KUBERNETES_VERSIONS)} schemas: {', '.join(rendered)}")
    print("ok: promtool" + (" (config and queries checked)" if args.promtool else " NOT available: config and query syntax unchecked"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
