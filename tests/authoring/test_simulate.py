"""`simulate`: the same core as the server, shares, the baseline diff, inputs and outputs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from decision_engine.authoring.contexts import read_contexts
from decision_engine.authoring.population import (
    Population,
    build_population,
    declared_intents,
    generated_profiles,
    profile_schema,
    read_profiles,
)
from decision_engine.authoring.render_html import render_html
from decision_engine.authoring.render_json import report_json
from decision_engine.authoring.results import SimulationReport
from decision_engine.authoring.simulate_command import parse_now, simulate_command
from decision_engine.authoring.simulation import run, simulate
from decision_engine.decide.engine import decide
from decision_engine.decide.values import Decision
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled

DEMO = Path(__file__).resolve().parents[2] / "rules"
NOW_TEXT = "2025-06-01T12:00:00+00:00"
NOW = parse_now(NOW_TEXT)
TODAY = date(2025, 6, 1)
COUNT = 400


@pytest.fixture(scope="module")
def demo() -> CompiledRuleset:
    return load_compiled(DEMO)


@pytest.fixture(scope="module")
def population(demo: CompiledRuleset) -> Population:
    profiles = generated_profiles(COUNT, seed=3, today=TODAY, schema=profile_schema(demo))
    return build_population(profiles, declared_intents(demo), now=NOW, seed=3)


@pytest.fixture
def stricter_rules(tmp_path: Path) -> Path:
    """The demo with one routing threshold raised: retention-standard from 1500 to 4000."""
    directory = tmp_path / "stricter"
    shutil.copytree(DEMO, directory)
    routing = directory / "routing.yaml"
    text = routing.read_text()
    old = 'when: intent == "cancel" and clv >= 1500'
    assert text.count(old) == 1
    routing.write_text(text.replace(old, 'when: intent == "cancel" and clv >= 4000'))
    return directory


def direct(ruleset: CompiledRuleset, population: Population, i: int) -> Decision:
    """A decision made by calling the core directly, as the server does."""
    return decide(
        ruleset,
        state=population.states[i],
        context=population.contexts[i],
        now=NOW,
        decision_id=f"d-{i}",
    )


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(simulate_command, ["--now", NOW_TEXT, *args])
    return result.exit_code, result.stdout, result.stderr


# --- the report ---------------------------------------------------------------------------


def test_shares_sum_to_one(demo: CompiledRuleset, population: Population) -> None:
    outcome = simulate(demo, population, now=NOW).new
    assert outcome.decisions == COUNT
    assert sum(s.share for s in outcome.queues) == pytest.approx(1.0)
    assert sum(s.share for s in outcome.routing_rules) == pytest.approx(1.0)
    assert sum(s.count for s in outcome.queues) == COUNT
    # Every offer of the ruleset is listed, the ones never shown too.
    assert sorted(s.key for s in outcome.offers) == sorted(o.spec.id for o in demo.offers)
    assert len(outcome.queues) > 3, "the mix should reach several queues"


def test_counts_match_a_direct_loop_over_decide(
    demo: CompiledRuleset, population: Population
) -> None:
    outcome = simulate(demo, population, now=NOW).new
    decisions = [direct(demo, population, i) for i in range(len(population))]
    queues = Counter(d.routing.queue for d in decisions)
    rules = Counter(d.routing.rule_id for d in decisions)
    offers = Counter(o.offer_id for d in decisions for o in d.offers)
    assert {s.key: s.count for s in outcome.queues} == queues
    assert {s.key: s.count for s in outcome.routing_rules if s.count} == rules
    assert {s.key: s.count for s in outcome.offers if s.count} == offers
    assert outcome.no_offer == sum(1 for d in decisions if not d.offers)
    first = sum(d.offers[0].expected_value for d in decisions if d.offers)
    every = sum(o.expected_value for d in decisions for o in d.offers)
    assert outcome.first_offer_ev == pytest.approx(first)
    assert outcome.all_offers_ev == pytest.approx(every)
    assert outcome.first_offer_ev_mean == pytest.approx(first / COUNT)


def test_each_customer_gets_what_decide_gives_them(
    demo: CompiledRuleset, population: Population
) -> None:
    result = run(demo, population, now=NOW)
    for i in range(0, COUNT, 37):
        decision = direct(demo, population, i)
        assert result.queues[i] == decision.routing.queue
        assert result.rule_ids[i] == decision.routing.rule_id
        assert result.offer_ids[i] == tuple(o.offer_id for o in decision.offers)


def test_the_drawn_mix_is_seeded_and_uses_declared_intents(demo: CompiledRuleset) -> None:
    schema, intents = profile_schema(demo), declared_intents(demo)
    profiles = generated_profiles(200, seed=5, today=TODAY, schema=schema)
    one = build_population(profiles, intents, now=NOW, seed=5)
    two = build_population(profiles, intents, now=NOW, seed=5)
    other = build_population(profiles, intents, now=NOW, seed=6)
    assert one.contexts == two.contexts and one.states == two.states
    assert one.contexts != other.contexts
    drawn = Counter(c.intent for c in one.contexts)
    assert set(drawn) <= set(intents) and len(drawn) >= 4
    assert any(state.contacts for state in one.states), "some customers called before"


# --- the baseline diff --------------------------------------------------------------------


def test_baseline_diff_reports_exactly_the_changed_customers(
    demo: CompiledRuleset, population: Population, stricter_rules: Path
) -> None:
    new = load_compiled(stricter_rules)
    report = simulate(new, population, now=NOW, baseline=demo)
    expected: list[str] = []
    routed: Counter[tuple[str, str]] = Counter()
    for i, customer_id in enumerate(population.customer_ids):
        before, after = direct(demo, population, i), direct(new, population, i)
        ids_before = [o.offer_id for o in before.offers]
        ids_after = [o.offer_id for o in after.offers]
        if before.routing.queue != after.routing.queue or ids_before != ids_after:
            expected.append(customer_id)
        if before.routing.queue != after.routing.queue:
            routed[before.routing.queue, after.routing.queue] += 1
    assert expected, "the edited threshold must change some decisions for this population"
    diff = report.diff
    assert diff is not None and report.baseline is not None
    assert list(diff.changed_customers) == expected
    assert {(t.before, t.after): t.count for t in diff.transitions} == routed
    counts = [t.count for t in diff.transitions]
    assert counts == sorted(counts, reverse=True)
    # Only retention-standard lost customers; whoever it lost went to another rule.
    deltas = {r.rule_id: r.new - r.baseline for r in diff.routing_rules}
    assert deltas["retention-standard"] == -diff.routing_changed
    assert sum(deltas.values()) == 0


def test_baseline_against_itself_changes_nothing(
    demo: CompiledRuleset, population: Population
) -> None:
    report = simulate(demo, population, now=NOW, baseline=demo)
    assert report.diff is not None
    assert report.diff.changed == 0 and not report.diff.transitions
    assert all(d.gained == d.lost == 0 for d in report.diff.offers)


def test_offer_gains_and_losses_follow_the_customers(
    demo: CompiledRuleset, population: Population, tmp_path: Path
) -> None:
    directory = tmp_path / "no-streaming"
    shutil.copytree(DEMO, directory)
    offers = directory / "offers.yaml"
    # A lever of 0 keeps the offer eligible but ranks it last: others move up.
    text = offers.read_text()
    marker = "  - id: streaming-bundle\n"
    assert marker in text
    offers.write_text(text.replace(marker, marker + "    lever: 0\n"))
    new = load_compiled(directory)
    diff = simulate(new, population, now=NOW, baseline=demo).diff
    assert diff is not None
    by_id = {d.offer_id: d for d in diff.offers}
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for i in range(len(population)):
        before = {o.offer_id for o in direct(demo, population, i).offers}
        after = {o.offer_id for o in direct(new, population, i).offers}
        gained.update(after - before)
        lost.update(before - after)
    assert lost["streaming-bundle"] > 0
    assert {k: d.gained for k, d in by_id.items() if d.gained} == gained
    assert {k: d.lost for k, d in by_id.items() if d.lost} == lost
    assert by_id["streaming-bundle"].baseline - by_id["streaming-bundle"].new == (
        lost["streaming-bundle"] - gained["streaming-bundle"]
    )


# --- inputs -------------------------------------------------------------------------------


def test_bad_profile_lines_are_reported_with_line_numbers(
    demo: CompiledRuleset, tmp_path: Path
) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text(
        '{"customer_id": "A", "clv": 10}\n'
        "{not json\n"
        '{"customer_id": "B", "clv": "lots"}\n'
        "\n"
        '{"clv": 10}\n'
        '{"customer_id": "C", "segment": "gold"}\n'
        '{"customer_id": "A", "clv": 12000, "churn_risk": 0.8}\n'
    )
    profiles = read_profiles(path, profile_schema(demo))
    # A later line for the same customer replaces the earlier one, as an import does.
    assert profiles.ids == ("A", "C")
    assert [(b.line, b.file) for b in profiles.bad_lines] == [
        (2, str(path)),
        (3, str(path)),
        (5, str(path)),
    ]
    assert "clv" in profiles.bad_lines[1].reason
    assert profiles.fields[0] == {"clv": "12000", "churn_risk": "0.8"}


def test_csv_profiles_and_bad_rows(demo: CompiledRuleset, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("customer_id,clv,segment\nA,100,gold\nB,-5,gold\nC,,\nD,1,wood\n")
    profiles = read_profiles(path, profile_schema(demo))
    assert profiles.ids == ("A", "C")
    assert [b.line for b in profiles.bad_lines] == [3, 5]


def test_cli_lists_bad_lines_and_simulates_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text('{"customer_id": "A", "clv": 100}\n[1]\n{"customer_id": "B"}\n')
    code, out, err = invoke("--rules", str(DEMO), "--profiles", str(path), "--json")
    assert code == 0, err
    assert f"{path}:2: expected a JSON object" in err
    assert "1 bad line(s) skipped" in err
    data = json.loads(out)
    assert data["population"]["customers"] == 2
    assert data["population"]["bad_lines"] == [
        {"file": str(path), "line": 2, "reason": "expected a JSON object, got list"}
    ]


def offer_counts(out: str) -> dict[str, int]:
    return {o["id"]: o["count"] for o in json.loads(out)["new"]["offers"]}


def test_simulate_generates_customers_for_a_non_demo_schema(bank_rules: Path) -> None:
    code, out, err = invoke("--rules", str(bank_rules), "--count", "300", "--json")
    assert code == 0, err
    assert "Traceback" not in err and "bronze" not in err
    data = json.loads(out)
    assert data["population"]["customers"] == 300
    offers = offer_counts(out)
    # Each offer depends on the bank's own fields: some customers get it, not all.
    for offer in ("mortgage-refinance", "card-upgrade", "payment-plan"):
        assert 0 < offers.get(offer, 0) < 300, (offer, offers)
    assert {q["id"] for q in data["new"]["queues"]} == {"collections", "general"}


def test_generated_bank_customers_have_every_field_of_their_type(bank_rules: Path) -> None:
    schema = profile_schema(load_compiled(bank_rules))
    profiles = generated_profiles(200, seed=2, today=TODAY, schema=schema)
    for fields in profiles.fields:
        assert set(fields) == set(schema)  # every declared field, nothing of the demo's
        assert fields["card_status"] in {"active", "frozen", "closed"}
        assert -5000 <= float(fields["balance"]) <= 50000
        assert 0 <= int(fields["days_past_due"]) <= 120
        assert fields["has_mortgage"] in {"true", "false"}
    assert {f["has_mortgage"] for f in profiles.fields} == {"true", "false"}
    assert {f["segment"] for f in profiles.fields} == {"mass", "affluent", "premier"}


def test_population_file_simulates_a_non_demo_schema(bank_rules: Path, tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    path.write_text(
        '{"customer_id": "A", "has_mortgage": true, "days_past_due": 0}\n'
        '{"customer_id": "B", "has_mortgage": false, "days_past_due": 45}\n'
    )
    code, out, err = invoke("--rules", str(bank_rules), "--population", str(path), "--json")
    assert code == 0, err
    assert offer_counts(out) == {"mortgage-refinance": 1, "payment-plan": 1, "card-upgrade": 0}


def test_contexts_file_pairs_deals_and_validates(demo: CompiledRuleset, tmp_path: Path) -> None:
    path = tmp_path / "contexts.jsonl"
    path.write_text(
        '{"customer_id": "C-000002", "channel": "voice", "intent": "lost_card"}\n'
        '{"channel": "chat", "intent": "complaint", "sentiment": -0.8}\n'
        '{"channel": "fax"}\n'
        '{"channel": "voice", "intent": "cancle"}\n'
        '{"channel": "voice", "sentimen": 0.3}\n'
        '{"customer_id": "C-000002", "channel": "chat"}\n'
        '{"channel": "app", "intent": "general_inquiry", "attributes": {"card_status": "stolen"},'
        ' "recent_contacts": [{"channel": "voice", "days_ago": 1}, {"channel": "app"}]}\n'
    )
    intents = declared_intents(demo)
    contexts = read_contexts(path, intents, now=NOW)
    assert [b.line for b in contexts.bad_lines] == [3, 4, 5, 6]
    profiles = generated_profiles(4, seed=1, today=TODAY, schema=profile_schema(demo))
    population = build_population(profiles, intents, now=NOW, seed=1, contexts=contexts)
    result = run(demo, population, now=NOW)
    # C-000002 has its own context; the free ones are dealt in file order to the others.
    assert [c.intent for c in population.contexts] == [
        "complaint",
        "lost_card",
        "general_inquiry",
        "complaint",
    ]
    assert result.queues[1] == "card_security"
    assert result.queues[2] == "card_security", "card_status from the attributes"
    assert len(population.states[2].contacts) == 2
    assert result.queues[0] == result.queues[3] == "customer_care"


def test_contexts_naming_unknown_customers_are_a_warning(
    demo: CompiledRuleset, tmp_path: Path
) -> None:
    path = tmp_path / "contexts.jsonl"
    path.write_text('{"customer_id": "nobody", "channel": "voice"}\n')
    contexts = read_contexts(path, declared_intents(demo), now=NOW)
    profiles = generated_profiles(3, seed=1, today=TODAY, schema=profile_schema(demo))
    population = build_population(
        profiles, declared_intents(demo), now=NOW, seed=1, contexts=contexts
    )
    assert len(population.warnings) == 1 and "nobody" in population.warnings[0]


def test_unreadable_profiles_exit_1(tmp_path: Path) -> None:
    code, _, err = invoke("--rules", str(DEMO), "--profiles", str(tmp_path / "none.jsonl"))
    assert code == 1
    assert "none.jsonl" in err
    code, _, err = invoke("--rules", str(DEMO), "--profiles", str(tmp_path / "x.txt"))
    assert code == 1 and "extension" in err


def test_a_ruleset_that_does_not_load_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(DEMO, broken)
    routing = broken / "routing.yaml"
    routing.write_text(routing.read_text().replace("clv >= 1500", "clvv >= 1500"))
    code, _, err = invoke("--rules", str(broken), "--count", "5")
    assert code == 2
    assert "routing.yaml" in err and "clvv" in err
    code, _, err = invoke("--rules", str(DEMO), "--baseline", str(broken), "--count", "5")
    assert code == 2 and "baseline" in err


def test_count_with_profiles_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"customer_id": "A"}\n')
    code, _, _ = invoke("--profiles", str(path), "--count", "5")
    assert code == 2


def test_parse_now() -> None:
    assert parse_now("2025-06-01") == parse_now("2025-06-01T00:00:00Z")
    assert parse_now("2025-06-01T02:00:00+02:00") == parse_now("2025-06-01T00:00:00")


# --- outputs ------------------------------------------------------------------------------


def test_json_output_parses_and_agrees_with_the_api(
    demo: CompiledRuleset, stricter_rules: Path
) -> None:
    args = ["--rules", str(stricter_rules), "--baseline", str(DEMO), "--count", "300"]
    code, out, err = invoke(*args, "--seed", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["now"] == NOW_TEXT
    assert data["new"]["decisions"] == data["baseline"]["decisions"] == 300
    assert sum(q["share"] for q in data["new"]["queues"]) == pytest.approx(1.0)
    assert data["new"]["decisions_per_second"] > 0
    # The same population through the API gives the same changed customers.
    profiles = generated_profiles(300, seed=3, today=TODAY, schema=profile_schema(demo))
    population = build_population(profiles, declared_intents(demo), now=NOW, seed=3)
    diff = simulate(load_compiled(stricter_rules), population, now=NOW, baseline=demo).diff
    assert diff is not None
    assert data["diff"]["changed_customers"] == list(diff.changed_customers)
    assert data["diff"]["changed"] == diff.changed > 0


def test_table_output_names_queues_and_speed(stricter_rules: Path) -> None:
    code, out, err = invoke("--rules", str(stricter_rules), "--baseline", str(DEMO))
    assert code == 0, err
    for text in ("general", "retention", "decisions/s", "Routing transitions", "retention →"):
        assert text in out
    assert "10,000 customers" in out


def test_html_report_is_written_and_self_contained(tmp_path: Path, stricter_rules: Path) -> None:
    page = tmp_path / "report.html"
    args = ["--rules", str(stricter_rules), "--baseline", str(DEMO), "--count", "500"]
    code, _, err = invoke(*args, "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    assert html.startswith("<!doctype html>")
    for queue in ("general", "retention", "customer_care", "card_security"):
        assert f">{queue}<" in html
    assert "baseline" in html and "What changes" in html
    for external in ("<script", "src=", "href=", "http://", "https://", "@import"):
        assert external not in html


def test_html_escapes_names(demo: CompiledRuleset, population: Population) -> None:
    report = simulate(demo, population, now=NOW, rules_dir="<rules>")
    odd = SimulationReport(
        now=report.now,
        population="<b>file</b>",
        customers=report.customers,
        bad_lines=(),
        warnings=(),
        new=report.new,
    )
    html = render_html(odd)
    assert "<b>file</b>" not in html and "&lt;b&gt;file&lt;/b&gt;" in html
    assert report_json(odd)["population"]["source"] == "<b>file</b>"


def test_drawn_contexts_follow_the_declared_intent_mix_and_attributes(
    demo: CompiledRuleset,
) -> None:
    from decision_engine.ruleset.schema import FieldPopulation, FieldSpec

    weights = (("cancel", 1.0), ("complaint", 3.0), ("upgrade", 0.0))
    intent = FieldSpec(
        "intent", "enum", ("cancel", "complaint", "upgrade"), source="context",
        population=FieldPopulation("weights", weights=weights),
    )  # fmt: skip
    outage = FieldSpec(
        "outage", "enum", ("none", "reported"), source="attribute",
        population=FieldPopulation("weights", weights=(("none", 9), ("reported", 1))),
    )  # fmt: skip
    silent = FieldSpec("card_status", "enum", ("active", "lost"), source="attribute")
    declared = {"intent": intent, "outage": outage, "card_status": silent}
    profiles = generated_profiles(2000, seed=1, today=TODAY, schema=profile_schema(demo))
    population = build_population(profiles, intent.values, now=NOW, seed=1, declared=declared)
    intents = Counter(c.intent for c in population.contexts)
    assert intents["upgrade"] == 0 and 0.7 < intents["complaint"] / 2000 < 0.8
    outages = Counter(c.attributes.get("outage") for c in population.contexts)
    assert 0.07 < outages["reported"] / 2000 < 0.13 and None not in outages
    assert all("card_status" not in c.attributes for c in population.contexts)
