"""The deployment files of ops/ (Dockerfile, docker-compose.yml, k8s manifests) against the
real settings: no Docker or cluster here, so what can be checked is that every flag and
DECISION_ENGINE_* variable they use is one `serve` has, and that their ports, probes and
scrape targets agree with the values they set."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_engine.config import SettingOption, setting_options

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "ops" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
K8S = ROOT / "ops" / "k8s"
K8S_FILES = sorted(K8S.glob("*.yaml"))

# How long a serve takes to stop, hard-coded in the server (no setting): each worker's
# server.stop(grace=2.0) (server/worker.py), and up to 5 s per process (server/supervisor.py
# _stop). A pod's terminationGracePeriodSeconds must cover them after its preStop pause.
GRPC_STOP_GRACE_S = 2
PROCESS_JOIN_S = 5

OPTIONS = setting_options()
BY_FLAG: dict[str, SettingOption] = {o.flag: o for o in OPTIONS}
BY_FLAG.update(
    {"--no-" + o.flag[2:]: o for o in OPTIONS if o.annotation is bool and o.default is True}
)
BY_ENV: dict[str, SettingOption] = {o.env: o for o in OPTIONS}
ENV_NAME = re.compile(r"\bDECISION_ENGINE_[A-Z0-9_]+")

Doc = dict[str, Any]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text:
            keyword, _, rest = text.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _dockerfile_runtime() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage (the image that runs)."""
    instructions = _instructions(DOCKERFILE)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in _dockerfile_runtime():
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, eq, value = item.partition("=")
                assert eq, f"ENV {item!r}: write ENV NAME=value"
                env[name] = value
    return env


def _dockerfile_command() -> list[str]:
    """ENTRYPOINT + CMD of the runtime stage (exec form)."""
    found = {k: json.loads(rest) for k, rest in _dockerfile_runtime() if k in ("ENTRYPOINT", "CMD")}
    return [*found.get("ENTRYPOINT", []), *found.get("CMD", [])]


def _compose() -> Doc:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _k8s_docs() -> list[Doc]:
    docs = [d for path in K8S_FILES for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, "no k8s manifests"
    return docs


def _of_kind(kind: str) -> list[Doc]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


def _deployments() -> list[Doc]:
    found = _of_kind("Deployment")
    assert found, "no Deployment"
    return found


def _engine_container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    engines = [c for c in containers if c["name"] == "engine"]
    assert len(engines) == 1, deployment["metadata"]["name"]
    container: Doc = engines[0]
    return container


def _flag_values(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """(--flag, its value or None for a switch) of a `serve` command line."""
    items = list(args)
    for i, arg in enumerate(items):
        if not arg.startswith("--"):
            continue
        flag, eq, value = arg.partition("=")
        if eq:
            yield flag, value
            continue
        option = BY_FLAG.get(flag)
        is_switch = option is not None and option.annotation is bool
        following = items[i + 1] if i + 1 < len(items) else None
        if is_switch or following is None or following.startswith("--"):
            yield flag, None
        else:
            yield flag, following


def _serve_args(command: Sequence[str]) -> list[str]:
    """The arguments after `serve` (the image's entrypoint is `decision-engine`)."""
    assert "serve" in command, f"not a serve command: {command}"
    return list(command[command.index("serve") + 1 :])


def _effective(env: Mapping[str, str], args: Sequence[str]) -> dict[str, str]:
    """Setting name -> value as serve would see it: the image's ENV, then the container's
    environment, then its flags (click: a flag beats its variable)."""
    values = {
        BY_ENV[name].name: v for name, v in {**_dockerfile_env(), **env}.items() if name in BY_ENV
    }
    for flag, value in _flag_values(args):
        option = BY_FLAG[flag]
        values[option.name] = "false" if flag.startswith("--no-") else (value or "true")
    return values


def _setting(values: Mapping[str, str], name: str) -> str:
    if name in values:
        return values[name]
    return str(next(o.default for o in OPTIONS if o.name == name))


def _compose_engine() -> tuple[Doc, dict[str, str]]:
    engine: Doc = _compose()["services"]["engine"]
    env = {str(k): str(v) for k, v in engine.get("environment", {}).items()}
    return engine, _effective(env, _serve_args(engine["command"]))


def _k8s_settings(container: Doc) -> dict[str, str]:
    env = {e["name"]: str(e.get("value", "<from a secret>")) for e in container.get("env", [])}
    return _effective(env, _serve_args(container["args"]))


def _all_serve_commands() -> list[list[str]]:
    commands = [
        _serve_args(_dockerfile_command()),
        _serve_args(_compose()["services"]["engine"]["command"]),
    ]
    commands += [_serve_args(_engine_container(d)["args"]) for d in _deployments()]
    return commands


def test_every_decision_engine_variable_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in [DOCKERFILE, COMPOSE, *K8S_FILES]:
        for name in ENV_NAME.findall(path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert used, "no DECISION_ENGINE_* variable found in the deployment files"
    unknown = {name: sorted(where) for name, where in used.items() if name not in BY_ENV}
    assert not unknown, f"not serve settings (decision_engine/config.py): {unknown}"


def test_every_flag_is_a_serve_option() -> None:
    flags = {flag for args in _all_serve_commands() for flag, _ in _flag_values(args)}
    assert flags, "no flag passed to decision-engine serve in the deployment files"
    assert flags <= set(BY_FLAG), f"not serve options: {sorted(flags - set(BY_FLAG))}"


def test_a_flag_serve_does_not_have_is_caught() -> None:
    """The check above can fail: an unknown flag is collected as such."""
    found = dict(_flag_values(["--workers", "2", "--grace-period", "30", "--insecure"]))
    assert found == {"--workers": "2", "--grace-period": "30", "--insecure": None}
    assert "--grace-period" not in BY_FLAG


def test_the_image_exposes_the_ports_it_sets_and_checks_the_grpc_health_service() -> None:
    values = _effective({}, _serve_args(_dockerfile_command()))
    exposed = {
        int(port.split("/")[0])
        for keyword, rest in _dockerfile_runtime()
        if keyword == "EXPOSE"
        for port in rest.split()
    }
    assert exposed == {int(_setting(values, "port")), int(_setting(values, "metrics_port"))}
    assert _setting(values, "host") == "0.0.0.0"
    assert _setting(values, "metrics_host") == "0.0.0.0"
    healthchecks = [rest for keyword, rest in _dockerfile_runtime() if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "grpc_health.v1" in healthchecks[0] and "HealthStub" in healthchecks[0]
    assert BY_FLAG["--port"].env in healthchecks[0]
    assert any(k == "USER" and rest not in ("root", "0") for k, rest in _dockerfile_runtime())


def test_the_image_builds_the_protos_as_the_makefile_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    sed = "s/^from decision\\.v1 import/from decision_engine._proto.decision.v1 import/"
    assert sed in makefile, "the Makefile's protos target changed: update the Dockerfile"
    text = DOCKERFILE.read_text()
    assert sed in text and "grpc_tools.protoc" in text and "build-essential" in text


def test_compose_publishes_the_ports_the_engine_listens_on() -> None:
    engine, values = _compose_engine()
    container_ports = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in engine["ports"]}
    assert container_ports == {int(_setting(values, "port")), int(_setting(values, "metrics_port"))}
    assert engine["build"]["dockerfile"] == str(DOCKERFILE.relative_to(ROOT))
    assert (DOCKER / engine["build"]["context"]).resolve() == ROOT
    rules_dir = _setting(values, "rules_dir")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in engine["volumes"]}
    assert (DOCKER / mounts[rules_dir]).resolve() == ROOT / "rules"


def test_compose_mounts_files_that_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"


def _scrape_targets(config: Doc) -> list[str]:
    return [
        target
        for job in config["scrape_configs"]
        if job["job_name"] == "decision-engine"
        for static in job["static_configs"]
        for target in static["targets"]
    ]


def test_compose_prometheus_scrapes_the_engines_metrics_port_with_the_alert_rules() -> None:
    services = _compose()["services"]
    _, values = _compose_engine()
    mounts = {v.split(":")[1]: DOCKER / v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    assert _scrape_targets(config) == [f"engine:{_setting(values, 'metrics_port')}"]
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts, f"{rule_file} is not mounted"
    assert mounts["/etc/prometheus/alerts.yml"].resolve() == ROOT / "ops/prometheus/alerts.yml"


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make ops-tools)")
    shutil.copy(DOCKER / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "ops/prometheus/alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_dashboard_and_a_default_prometheus() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: DOCKER / v.split(":")[0] for v in grafana["volumes"]}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090" and "prometheus" in _compose()["services"]
    dashboards = yaml.safe_load((provisioning / "dashboards/decision-engine.yml").read_text())
    (provider,) = dashboards["providers"]
    dashboard = mounts[f"{provider['options']['path']}/decision-engine.json"]
    assert json.loads(dashboard.read_text())["uid"] == "decision-engine"


def _prestop_seconds(container: Doc) -> int:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        return 0
    assert command[0] == "sleep", command
    return int(command[1])


def test_k8s_deployments_probe_the_grpc_port_they_set() -> None:
    for deployment in _deployments():
        name = deployment["metadata"]["name"]
        container = _engine_container(deployment)
        values = _k8s_settings(container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        grpc_port, metrics_port = (
            int(_setting(values, "port")),
            int(_setting(values, "metrics_port")),
        )
        assert ports == {"grpc": grpc_port, "metrics": metrics_port}, name
        for probe in ("livenessProbe", "readinessProbe"):
            # The kubelet's gRPC probe: grpc.health.v1 Check, service "" (NOT_SERVING until
            # the rules are loaded and from SIGTERM on); its port is a number, not a name.
            assert container[probe]["grpc"]["port"] == grpc_port, f"{name} {probe}"
            assert container[probe]["grpc"].get("service", "") == "", f"{name} {probe}"
        if "startupProbe" in container:
            assert container["startupProbe"]["grpc"]["port"] == grpc_port, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics_port), name
        pod = deployment["spec"]["template"]["spec"]
        processes = sum(
            int(_setting(values, setting))
            for setting in ("workers", "moment_workers", "notice_workers")
        )
        # The supervisor's joins run one after another: the worst case is 5 s each.
        needed = _prestop_seconds(container) + GRPC_STOP_GRACE_S + PROCESS_JOIN_S * processes
        assert pod["terminationGracePeriodSeconds"] > needed, name
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["rules"] == _setting(values, "rules_dir"), name
        assert volumes["rules"]["configMap"]["name"] == "decision-engine-rules", name
        secret_dir = mounts["secrets"]
        for setting in ("auth_tokens", "tls_cert", "tls_key"):
            if setting in values:
                key = Path(values[setting]).relative_to(secret_dir).as_posix()
                items = {i["path"] for i in volumes["secrets"]["secret"]["items"]}
                assert key in items, f"{name}: {setting} {values[setting]} is not mounted"


def test_k8s_grpc_deployment_runs_three_replicas_without_moment_processes() -> None:
    (grpc,) = [d for d in _deployments() if d["metadata"]["name"] == "decision-engine"]
    assert grpc["spec"]["replicas"] == 3
    values = _k8s_settings(_engine_container(grpc))
    # A moment process per replica would split an interaction's events between replicas.
    assert _setting(values, "moment_workers") == "0"
    moments = [d for d in _deployments() if d["metadata"]["name"] != "decision-engine"]
    assert moments, "no Deployment for the moment processes"
    for deployment in moments:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_k8s_services_pdb_and_hpa_point_at_the_grpc_deployment() -> None:
    (grpc,) = [d for d in _deployments() if d["metadata"]["name"] == "decision-engine"]
    labels = grpc["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"]: p["containerPort"] for p in _engine_container(grpc)["ports"]}
    services = _of_kind("Service")
    assert services
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
            assert port["port"] == port_names[port["targetPort"]]
    (pdb,) = _of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < grpc["spec"]["replicas"]
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "decision-engine"
    assert hpa["spec"]["minReplicas"] == grpc["spec"]["replicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_k8s_rules_configmap_holds_the_repositorys_rules() -> None:
    (configmap,) = _of_kind("ConfigMap")
    rules = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
    assert configmap["data"] == rules, (
        "ops/k8s/configmap-rules.yaml differs from rules/*.yaml: regenerate it (its header)"
    )


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S_FILES} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
