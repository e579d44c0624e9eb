from __future__ import annotations

import json
from pathlib import Path

import redis
from click.testing import CliRunner

from decision_engine.store.commands import profiles
from decision_engine.store.keys import profile_key

RULES = Path(__file__).parents[2] / "rules"


def test_generate_then_import_with_the_shipped_ruleset(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "customers.jsonl"
    runner = CliRunner()
    generated = runner.invoke(
        profiles, ["generate", "--count", "30", "--seed", "5", "--out", str(out)]
    )
    assert generated.exit_code == 0, generated.output
    assert len(out.read_text().splitlines()) == 30

    imported = runner.invoke(
        profiles,
        ["import", str(out)],
        env={"DECISION_ENGINE_REDIS_URL": redis_url, "DECISION_ENGINE_RULES": str(RULES)},
    )
    assert imported.exit_code == 0, imported.output
    assert "imported 30 profiles" in imported.stdout
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(profile_key("C-000030"))


def test_generate_follows_the_schema_of_rules(bank_rules: Path, tmp_path: Path) -> None:
    out = tmp_path / "bank.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        profiles, ["generate", "--count", "40", "--rules", str(bank_rules), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    people = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(people) == 40
    assert {p["segment"] for p in people} <= {"mass", "affluent", "premier"}
    assert {type(p["has_mortgage"]) for p in people} == {bool}
    assert "clv" not in people[0]
    # The rules directory comes from the serve setting's environment variable too.
    from_env = runner.invoke(
        profiles, ["generate", "--count", "3"], env={"DECISION_ENGINE_RULES": str(bank_rules)}
    )
    assert from_env.exit_code == 0 and "card_tier" in from_env.stdout


def test_bad_lines_are_listed_and_fail_the_command(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"customer_id": "C-1", "clv": 5, "shoe_size": 42})]
    lines += [json.dumps({"customer_id": f"C-{n}", "clv": -1}) for n in range(55)]
    path.write_text("\n".join(lines) + "\n")

    result = CliRunner().invoke(
        profiles, ["import", str(path), "--redis-url", redis_url, "--rules", str(RULES)]
    )

    assert result.exit_code == 1
    assert "imported 1 profile from" in result.stdout
    assert f"{path}:2: clv: -1 is below the minimum 0" in result.stderr
    assert f"{path}:51:" in result.stderr and f"{path}:52:" not in result.stderr
    assert "and 5 more bad lines" in result.stderr
    assert "55 bad lines skipped" in result.stderr
    assert result.stderr.count("shoe_size") == 1


def test_profiles_for_another_schema_are_named_once(
    redis_url: str, bank_rules: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bank.jsonl"
    runner = CliRunner()
    generated = runner.invoke(
        profiles, ["generate", "--count", "60", "--rules", str(bank_rules), "--out", str(out)]
    )
    assert generated.exit_code == 0, generated.output
    with out.open("a") as handle:  # and one line bad on another field: still listed
        handle.write(json.dumps({"customer_id": "X", "clv": -1}) + "\n")

    result = runner.invoke(
        profiles, ["import", str(out), "--redis-url", redis_url, "--rules", str(RULES)]
    )

    assert result.exit_code == 1
    mismatch = [line for line in result.stderr.splitlines() if "do not match" in line]
    assert len(mismatch) == 1, result.stderr
    assert f"the profiles do not match the schema of {RULES}/: segment: " in mismatch[0]
    assert "60 of 61 lines fail on segment" in mismatch[0] and "pass --rules" in mismatch[0]
    assert result.stderr.count("is not one of") == 1
    assert f"{out}:61: clv: -1 is below the minimum 0" in result.stderr
    assert "61 bad lines skipped" in result.stderr

    right = runner.invoke(
        profiles, ["import", str(out), "--redis-url", redis_url, "--rules", str(bank_rules)]
    )
    assert "imported 61 profiles" in right.stdout, right.output


def test_generate_dates_are_relative_to_now(tmp_path: Path) -> None:
    runner = CliRunner()

    def generated(*now: str) -> list[dict[str, object]]:
        result = runner.invoke(profiles, ["generate", "--count", "50", *now])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    march = generated("--now", "2025-03-03")
    assert generated("--now", "2025-03-03T23:00:00Z") == march  # the same day
    ends = sorted(str(p["contract_end"]) for p in march if "contract_end" in p)
    # The demo's contract ends lie from a year before to two years after the day.
    assert ends[0] >= "2024-03-03" and ends[-1] <= "2027-03-03"
    june = generated("--now", "2025-06-01")
    assert [p.get("contract_end") for p in june] != [p.get("contract_end") for p in march]
    bad = runner.invoke(profiles, ["generate", "--count", "1", "--now", "soon"])
    assert bad.exit_code == 2 and "not an ISO date or time" in bad.output
