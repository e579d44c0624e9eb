"""The operations kit against the real thing: a real Prometheus scrapes a real `serve`
(gRPC workers, a moment process, a notice process) with the shipped alert rules, and
every metric the rules and the dashboard use is there, with the labels they use."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from tests.ops.prometheus import ALERTS, dashboard_panels, query, running_prometheus
from tests.server.conftest import RULES, Server, load_demo, start_server

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
    "outcomes_total": {"offer_id", "outcome"},
    "cap_budget_left": {"offer_id"},
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
_SUFFIXES = ("_total", "_bucket", "_seconds", "_letters", "_interactions", "_left")


def expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    exprs += [t["expr"] for panel in dashboard_panels() for t in panel["targets"]]
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


@pytest.fixture
def scraped(tmp_path: Path, redis_url: str) -> Iterator[tuple[Server, int]]:
    load_demo(redis_url, generated=50)
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis_url,
                          "--data-dir", str(tmp_path), moment_workers=1,
                          notice_workers=1)  # fmt: skip
    try:
        with running_prometheus(tmp_path, [f"127.0.0.1:{server.metrics_port}"]) as port:
            yield server, port
    finally:
        assert server.stop() == 0, server.log()


def drive(server: Server) -> None:
    """What makes the labelled series appear: decisions, offers and their outcomes, an
    event and its notice."""
    with server.channel() as channel:
        decide = pb_grpc.DecisionServiceStub(channel)
        for customer in ("C-1001", "C-1002", "C-1003"):
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
            answer = decide.Decide(
                pb.DecideRequest(customer_id=customer, context=context), timeout=5
            )
            for offer, outcome in zip(
                answer.offers, (pb.OUTCOME_PRESENTED, pb.OUTCOME_ACCEPTED), strict=False
            ):
                decide.RecordOutcome(
                    pb.RecordOutcomeRequest(
                        decision_id=answer.decision_id, offer_id=offer.offer_id, outcome=outcome
                    ),
                    timeout=5,
                )
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
            series = query(port, "/api/v1/series", **{"match[]": name})
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
    groups = query(port, "/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"])
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert firing == []
    # Every panel's query runs in this Prometheus and finds series (a rate needs two
    # scrapes of a series first).
    exprs = {(p["title"], t["expr"]) for p in dashboard_panels() for t in p["targets"]}
    deadline = time.monotonic() + 60
    while exprs and time.monotonic() < deadline:
        exprs = {
            (title, e) for title, e in exprs if not query(port, "/api/v1/query", query=e)["result"]
        }
        time.sleep(0.5)
    assert exprs == set()
