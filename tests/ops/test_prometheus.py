"""The operations kit against the real thing: a real Prometheus scrapes a real `serve`
(gRPC workers, a moment process, a notice process) with the shipped alert rules, and
every metric the rules and the dashboard use is there, with the labels they use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from tests.server.conftest import RULES, Server, free_port, load_demo, start_server

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "decision-engine.json"

# Every metric the alert rules and the dashboard read, and the labels they group by or
# match on. A metric added to either without a row here fails the first test.
USED: dict[str, set[str]] = {
    "up": {"job"},
    "decisions_total": {"queue", "degraded"},
    "decision_latency_seconds_bucket": {"le"},
    "internal_errors_total": {"method"},
    "requests_shed_total": {"method", "reason"},
    "redis_errors_total": {"kind"},
    "offers_returned_total": {"offer_id"},
    "cap_exhausted_total": {"offer_id"},
    "outcomes_reconciled_total": set(),
    "business_events_total": {"type", "status"},
    "business_event_lag_seconds": set(),
    "notices_decided_total": {"notice", "status"},
    "notices_suppressed_total": {"reason"},
    "notice_deliveries_total": {"channel", "result"},
    "notice_delivery_latency_seconds_bucket": {"le", "channel"},
    "notice_outbox_lag_seconds": set(),
    "notice_dead_letters": set(),
    "live_interactions": set(),
    "ruleset_reloads_total": set(),
    "ruleset_reload_failures_total": set(),
    "process_restarts_total": {"kind"},
}
_SUFFIXES = ("_total", "_bucket", "_seconds", "_letters", "_interactions")


def expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    names = {n for n in re.findall(r"[a-z_][a-z0-9_]*", expr) if n.endswith(_SUFFIXES)}
    for alternatives in re.findall(r'__name__=~"([^"]+)"', expr):
        names.update(alternatives.split("|"))
    if re.search(r"\bup\b", expr):
        names.add("up")
    return names


def test_the_table_names_every_metric_the_rules_and_the_dashboard_use() -> None:
    used = set().union(*(metric_names(e) for e in expressions()))
    assert used == set(USED)


def _get(port: int, path: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def scraped(tmp_path: Path, redis_url: str) -> Iterator[tuple[Server, int]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed: `make ops-tools` installs it"
    load_demo(redis_url, generated=50)
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis_url,
                          "--data-dir", str(tmp_path), moment_workers=1,
                          notice_workers=1)  # fmt: skip
    port = free_port()
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{
            "job_name": "decision-engine",
            "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"]}],
        }],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(port, process, tmp_path / "prometheus.log")
        yield server, port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        assert server.stop() == 0, server.log()


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"Prometheus not ready:\n{log.read_text()}")


def drive(server: Server) -> None:
    """What makes the labelled series appear: decisions, offers, an event and its notice."""
    with server.channel() as channel:
        decide = pb_grpc.DecisionServiceStub(channel)
        for customer in ("C-1001", "C-1002", "C-1003"):
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
            decide.Decide(pb.DecideRequest(customer_id=customer, context=context), timeout=5)
        notices = pb_grpc.NoticeServiceStub(channel)
        event = pb.BusinessEvent(
            event_id="ops-1", type="card_compromised", customer_id="C-1001",
            attributes={"card_last4": "4242"},
        )  # fmt: skip
        notices.PublishEvent(event, timeout=5)


def test_prometheus_scrapes_every_metric_the_rules_and_the_dashboard_use(
    scraped: tuple[Server, int],
) -> None:
    server, port = scraped
    drive(server)
    missing: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        missing = {}
        for name, labels in USED.items():
            series = _get(port, "/api/v1/series", **{"match[]": name})
            seen = set().union(*(s.keys() for s in series)) if series else set()
            if not series:
                missing[name] = "no series"
            elif not labels <= seen:
                missing[name] = f"labels {sorted(labels - seen)} missing"
        if not missing:
            break
        time.sleep(0.5)
    assert missing == {}, server.log()[-3000:]
    # The shipped rules load and evaluate in this Prometheus, and none fires on a healthy
    # replica (DecisionEngineDown would mean the scrape failed).
    groups = _get(port, "/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"])
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == []
