"""`report`: Wilson intervals, Newcombe differences, parsing the counters, the command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from decision_engine.analytics.counters import ArmCounts, OfferCounts, parse_counters
from decision_engine.analytics.report import NO_OUTCOMES, build_report, report_command
from decision_engine.analytics.stats import Interval, difference, rate, wilson_interval
from decision_engine.store.embedded import URL_FILE, EmbeddedRedis
from decision_engine.store.keys import ARM_STATS, DECISION_SECRET, OFFER_STATS, OUTCOME_STREAM

Z = 1.959963984540054
"""97.5th percentile of the standard normal, written out (not computed by the code under test)."""


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The textbook formula, independently of the module."""
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


def newcombe_by_hand(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_by_hand(k1, n1), wilson_by_hand(k2, n2)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


# --- Wilson -------------------------------------------------------------------------------


def _pair(interval: Interval) -> tuple[float, float]:
    return interval.low, interval.high


def test_wilson_closed_forms_at_the_edges_and_the_middle() -> None:
    # 0/n: [0, z²/(n+z²)]; n/n: [n/(n+z²), 1]; 5/10 is symmetric around 1/2.
    assert _pair(wilson_interval(0, 10)) == pytest.approx((0.0, Z**2 / (10 + Z**2)))
    assert _pair(wilson_interval(10, 10)) == pytest.approx((10 / (10 + Z**2), 1.0))
    low, high = wilson_by_hand(5, 10)
    assert _pair(wilson_interval(5, 10)) == pytest.approx((low, high))
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(10, 10).high == 1.0  # exact
    assert low == pytest.approx(0.236593, abs=1e-6)
    assert high == pytest.approx(1 - low)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(k, n)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_rejects_impossible_counts_and_rate_has_none() -> None:
    for k, n in ((1, 0), (0, 0), (11, 10), (-1, 10)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)
        assert rate(k, n) is None
    r = rate(3, 12)
    assert r is not None and r.value == 0.25 and r.trials == 12


# --- difference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
        ((5, 56), (0, 29), -0.0381, 0.1926),
        ((0, 10), (0, 20), -0.1611, 0.2775),
    ],
)
def test_difference_matches_published_values(
    a: tuple[int, int], b: tuple[int, int], low: float, high: float
) -> None:
    ra, rb = rate(*a), rate(*b)
    assert ra is not None and rb is not None
    d = difference(ra, rb)
    assert d.value == pytest.approx(a[0] / a[1] - b[0] / b[1])
    assert d.interval.low == pytest.approx(low, abs=5e-5)
    assert d.interval.high == pytest.approx(high, abs=5e-5)


def test_difference_contains_the_point_and_narrows_with_more_data() -> None:
    widths = []
    for scale in (1, 10, 100):
        a, b = rate(60 * scale, 100 * scale), rate(50 * scale, 100 * scale)
        assert a is not None and b is not None
        d = difference(a, b)
        assert d.value == pytest.approx(0.1)
        assert d.interval.low < d.value < d.interval.high
        widths.append(d.interval.high - d.interval.low)
    assert widths[0] > widths[1] > widths[2]


# --- parsing ------------------------------------------------------------------------------


def test_parse_counters_types_fields_and_ignores_what_it_does_not_know() -> None:
    counters = parse_counters(
        {
            "card-upgrade|presented": "7",
            "champion|card-upgrade|presented": "5",
            "champion|card-upgrade|accepted": "2",
            "beta|x-1|declined": "1",
            "champion|card-upgrade|clicked": "4",
            "a|b|c|presented": "1",
            "champion|card-upgrade|no_response": "lots",
        },
        {
            "champion|decisions": "10",
            "champion|resolved": "3",
            "control|not_resolved": "2",
            "champion|bogus": "1",
            "nopipe": "1",
        },
    )
    assert counters.by_arm_offer[("champion", "card-upgrade")] == OfferCounts(5, 2, 0, 0)
    assert counters.by_arm_offer[("beta", "x-1")] == OfferCounts(declined=1)
    assert counters.by_offer == {"card-upgrade": OfferCounts(presented=7)}
    assert counters.arms == {
        "champion": ArmCounts(decisions=10, resolved=3),
        "control": ArmCounts(not_resolved=2),
    }
    assert len(counters.ignored) == 5
    report = build_report(counters)
    assert report.unattributed == 2  # 7 presented in all, 5 of them in an arm
    assert [r.arm for r in report.arms] == ["champion", "control", "beta"]  # unknown arm last


def test_more_accepted_than_presented_has_no_rate() -> None:
    report = build_report(parse_counters({"champion|o|accepted": "3"}, {}))
    assert report.offers[0].acceptance is None
    assert report.arms[0].acceptance is None
    assert report.inconsistent == ("arm champion", "offer o in arm champion")


# --- the command on a real Redis ----------------------------------------------------------

ARM_FIELDS = {
    "champion|decisions": 1000,
    "champion|resolved": 600,
    "champion|not_resolved": 400,
    "challenger|decisions": 400,
    "challenger|resolved": 180,
    "challenger|not_resolved": 220,
    "control|decisions": 100,
    "control|resolved": 50,
    "control|not_resolved": 50,
}
OFFER_FIELDS = {
    "champion|card-upgrade|presented": 200,
    "champion|card-upgrade|accepted": 50,
    "champion|card-upgrade|declined": 100,
    "champion|card-upgrade|no_response": 50,
    "champion|retention-10-off|presented": 300,
    "champion|retention-10-off|accepted": 30,
    "champion|retention-10-off|declined": 200,
    "champion|retention-10-off|no_response": 70,
    "challenger|card-upgrade|presented": 100,
    "challenger|card-upgrade|accepted": 40,
    "challenger|card-upgrade|declined": 60,
    "card-upgrade|presented": 300,
    "card-upgrade|accepted": 90,
    "card-upgrade|declined": 160,
    "card-upgrade|no_response": 50,
    "retention-10-off|presented": 300,
    "retention-10-off|accepted": 30,
    "retention-10-off|declined": 200,
    "retention-10-off|no_response": 70,
}


def _fill(url: str, offers: dict[str, int], arms: dict[str, int]) -> None:
    with redis.Redis.from_url(url) as client:
        if offers:
            client.hset(OFFER_STATS, mapping=offers)
        if arms:
            client.hset(ARM_STATS, mapping=arms)


def _run_json(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(report_command, ["--redis-url", url, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _assert_rate(got: dict[str, float], k: int, n: int) -> None:
    low, high = wilson_by_hand(k, n)
    assert got["rate"] == pytest.approx(k / n)
    assert got["low"] == pytest.approx(low)
    assert got["high"] == pytest.approx(high)


def test_json_report_of_a_populated_redis(redis_url: str) -> None:
    _fill(redis_url, OFFER_FIELDS, ARM_FIELDS)
    data = _run_json(redis_url)
    arms = {a["arm"]: a for a in data["arms"]}
    assert [a["arm"] for a in data["arms"]] == ["champion", "challenger", "control"]

    champion = arms["champion"]
    assert (champion["decisions_with_outcome"], champion["presented"], champion["accepted"]) == (
        1000,
        500,
        80,
    )
    _assert_rate(champion["acceptance_rate"], 80, 500)
    assert champion["accepted_per_decision_with_outcome"] == pytest.approx(0.08)
    assert (champion["resolved"], champion["not_resolved"]) == (600, 400)
    _assert_rate(champion["resolution_rate"], 600, 1000)

    challenger = arms["challenger"]
    assert (challenger["presented"], challenger["accepted"]) == (100, 40)
    assert challenger["accepted_per_decision_with_outcome"] == pytest.approx(0.1)
    _assert_rate(challenger["resolution_rate"], 180, 400)

    control = arms["control"]
    assert (control["presented"], control["accepted"], control["acceptance_rate"]) == (0, 0, None)
    assert control["accepted_per_decision_with_outcome"] == 0.0
    assert control["uplift_over_control"] is None

    offers = [(o["arm"], o["offer"], o["presented"]) for o in data["offers"]]
    assert offers == [
        ("champion", "retention-10-off", 300),
        ("champion", "card-upgrade", 200),
        ("challenger", "card-upgrade", 100),
    ]
    card = data["offers"][1]
    assert (card["accepted"], card["declined"], card["no_response"]) == (50, 100, 50)
    _assert_rate(card["acceptance_rate"], 50, 200)
    assert data["unattributed_offer_outcomes"] == 0
    assert data["ignored_fields"] == [] and "message" not in data


def test_uplift_over_control(redis_url: str) -> None:
    _fill(redis_url, OFFER_FIELDS, ARM_FIELDS)
    arms = {a["arm"]: a for a in _run_json(redis_url)["arms"]}
    for arm, k, n in (("champion", 600, 1000), ("challenger", 180, 400)):
        d, low, high = newcombe_by_hand(k, n, 50, 100)
        uplift = arms[arm]["uplift_over_control"]
        assert uplift["difference"] == pytest.approx(d)
        assert uplift["low"] == pytest.approx(low)
        assert uplift["high"] == pytest.approx(high)
        assert uplift["low"] < uplift["difference"] < uplift["high"]
    assert arms["champion"]["uplift_over_control"]["difference"] == pytest.approx(0.1)
    assert arms["challenger"]["uplift_over_control"]["difference"] == pytest.approx(-0.05)


def test_uplift_is_na_without_control_data(redis_url: str) -> None:
    arms = {k: v for k, v in ARM_FIELDS.items() if not k.startswith("control|")}
    _fill(redis_url, OFFER_FIELDS, arms)
    data = _run_json(redis_url)
    assert all(a["uplift_over_control"] is None for a in data["arms"])
    result = CliRunner().invoke(
        report_command, [], env={"DECISION_ENGINE_REDIS_URL": redis_url, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "n/a" in result.output
    assert "retention-10-off" in result.output and "champion" in result.output


def test_table_output(redis_url: str) -> None:
    _fill(redis_url, {**OFFER_FIELDS, "card-upgrade|presented": 320}, ARM_FIELDS)
    result = CliRunner().invoke(report_command, ["--redis-url", redis_url], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "16.0% (13.0–19.5)" in result.output  # champion: 80 of 500 presented
    assert "+10.0 (-0.1 to +20.1)" in result.output and "-5.0 (-15.8 to +5.8)" in result.output
    assert "20 offer outcome(s)" in result.output  # counted per offer, in no arm


def test_empty_redis(redis_url: str) -> None:
    result = CliRunner().invoke(report_command, ["--redis-url", redis_url])
    assert result.exit_code == 0
    assert result.output.strip() == NO_OUTCOMES
    _fill(redis_url, {}, {"champion|decisions": 3})
    result = CliRunner().invoke(report_command, ["--redis-url", redis_url])
    assert result.exit_code == 0
    assert NO_OUTCOMES in result.output
    data = _run_json(redis_url)
    assert data["message"] == NO_OUTCOMES


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "http://localhost:6379"])
def test_unreachable_or_bad_url_exits_1(url: str) -> None:
    result = CliRunner().invoke(report_command, ["--redis-url", url])
    assert result.exit_code == 1
    assert "cannot read the outcome counters from Redis" in result.output


def _serve_data_dir(tmp_path: Path, redis_server: EmbeddedRedis) -> Path:
    """A data dir as serve leaves it: the embedded Redis's URL in `redis/url`."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / URL_FILE).write_text(redis_server.url_file.read_text())
    return tmp_path


def test_without_a_url_it_reads_the_embedded_redis_of_serve(
    redis_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    _fill(redis_url, OFFER_FIELDS, ARM_FIELDS)
    data_dir = _serve_data_dir(tmp_path, redis_server)
    result = CliRunner().invoke(
        report_command,
        ["--data-dir", str(data_dir), "--json"],
        env={"DECISION_ENGINE_REDIS_URL": None},
    )
    assert result.exit_code == 0, result.output
    arms = {a["arm"]: a for a in json.loads(result.output)["arms"]}
    assert arms["champion"]["decisions_with_outcome"] == 1000


def test_without_a_url_or_a_running_embedded_redis_it_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        report_command, ["--data-dir", str(tmp_path)], env={"DECISION_ENGINE_REDIS_URL": None}
    )
    assert result.exit_code == 1
    assert "no --redis-url given and no embedded Redis of serve running in" in result.output
    assert "make run" in result.output


def test_the_outcome_log_is_named_as_such(
    redis_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.xadd(OUTCOME_STREAM, {"offer": "card-upgrade", "outcome": "accepted"})
    data_dir = _serve_data_dir(tmp_path, redis_server)
    result = CliRunner().invoke(
        report_command, ["--redis-url", redis_url, "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 1
    assert NO_OUTCOMES not in result.output
    assert "is the outcome log; the counters are in the decision Redis" in result.output
    assert redis_server.address in result.output
    assert redis_server.password_file.read_text().strip() not in result.output
    with redis.Redis.from_url(redis_url) as client:  # the decision Redis when both are one
        client.set(DECISION_SECRET, "k")
    result = CliRunner().invoke(report_command, ["--redis-url", redis_url])
    assert result.exit_code == 0 and NO_OUTCOMES in result.output


def test_the_decisions_column_says_it_counts_decisions_with_an_outcome(redis_url: str) -> None:
    _fill(redis_url, OFFER_FIELDS, ARM_FIELDS)
    result = CliRunner().invoke(report_command, ["--redis-url", redis_url], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "decisions with an outcome" in result.output


def test_the_embedded_outcome_log_is_named_before_any_outcome(
    redis_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    (tmp_path / "redis-outcomes").mkdir()
    (tmp_path / "redis-outcomes" / URL_FILE).write_text(redis_server.url_file.read_text())
    result = CliRunner().invoke(
        report_command, ["--redis-url", redis_url, "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "is the outcome log; the counters are in the decision Redis" in result.output
    assert "the --redis-url given to serve" in result.output  # no embedded decision Redis
