from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import pytest
import redis

from decision_engine.errors import ProfileImportError
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.importer import ImportReport, import_file
from decision_engine.store.keys import profile_key
from decision_engine.store.profiles import ProfileStore


def run_import(
    url: str, path: Path, schema: dict[str, FieldSpec], **options: object
) -> ImportReport:
    async def scenario() -> ImportReport:
        async with aclosing(ProfileStore.from_url(url)) as store:
            return await import_file(store, path, schema=schema, **options)  # type: ignore[arg-type]

    return asyncio.run(scenario())


def stored(url: str, customer_id: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        fields: dict[str, str] = client.hgetall(profile_key(customer_id))
        return fields


def test_jsonl_imports_good_lines_and_reports_bad_ones(
    redis_url: str, schema: dict[str, FieldSpec], tmp_path: Path
) -> None:
    path = tmp_path / "profiles.jsonl"
    path.write_text(
        '{"customer_id": "C-1", "clv": 48000.0, "tenure_months": "74", "segment": "platinum",'
        ' "contract_end": "2026-03-01T00:00:00", "churn_risk": null, "plan": ""}\n'
        "{not json\n"
        "\n"
        '{"clv": 10}\n'
        '{"customer_id": "C-2", "churn_risk": 1.5}\n'
        '["C-3"]\n'
        '{"customer_id": "  ", "clv": 1}\n'
        '{"customer_id": "C-4", "segment": "gold", "nickname": "Dee", "vip": true}\n'
        '{"customer_id": "C-5", "tenure_months": 2.5, "nickname": "Eve"}\n'
        '{"customer_id": "C {6}", "clv": 1}\n'
    )
    report = run_import(redis_url, path, schema)

    assert report.imported == 2
    assert [line for line, _ in report.errors] == [2, 4, 5, 6, 7, 9, 10]
    reasons = dict(report.errors)
    assert reasons[2].startswith("invalid JSON")
    assert reasons[4] == "missing or empty customer_id"
    assert "churn_risk" in reasons[5] and "maximum" in reasons[5]
    assert reasons[6] == "expected a JSON object, got list"
    assert "whole number" in reasons[9]
    assert reasons[10].startswith("customer_id: may contain only ASCII letters, digits and")
    assert report.extra_fields == ("nickname", "vip")
    # Canonical text; null and empty mean absent.
    assert stored(redis_url, "C-1") == {
        "clv": "48000",
        "tenure_months": "74",
        "segment": "platinum",
        "contract_end": "2026-03-01",
    }
    assert stored(redis_url, "C-4") == {"segment": "gold", "nickname": "Dee", "vip": "true"}
    assert stored(redis_url, "C-2") == {}


def test_csv_line_numbers_count_physical_lines(
    redis_url: str, schema: dict[str, FieldSpec], tmp_path: Path
) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text(
        "customer_id,clv,segment,note\n"
        'C-1,100,bronze,"two\nlines"\n'
        "C-2,abc,silver,\n"
        "C-3,200,diamond,\n"
        "C-4,300\n"
        ",5,gold,\n"
        "C-6,,gold,\n"
    )
    report = run_import(redis_url, path, schema)

    assert report.imported == 2
    assert [line for line, _ in report.errors] == [4, 5, 6, 7]
    reasons = dict(report.errors)
    assert "not a number" in reasons[4]
    assert "'diamond' is not one of" in reasons[5]
    assert reasons[6] == "expected 4 columns, got 2"
    assert reasons[7] == "missing or empty customer_id"
    assert report.extra_fields == ("note",)
    assert stored(redis_url, "C-1") == {"clv": "100", "segment": "bronze", "note": "two\nlines"}
    assert stored(redis_url, "C-6") == {"segment": "gold"}


def test_reimport_replaces_the_profile(
    redis_url: str, schema: dict[str, FieldSpec], tmp_path: Path
) -> None:
    first = tmp_path / "first.jsonl"
    first.write_text('{"customer_id": "C-1", "clv": 10, "plan": "basic"}\n')
    second = tmp_path / "second.data"
    second.write_text("customer_id,clv\nC-1,20\n")

    run_import(redis_url, first, schema)
    report = run_import(redis_url, second, schema, fmt="csv")

    assert report.imported == 1
    assert stored(redis_url, "C-1") == {"clv": "20"}


def test_batches_report_progress(
    redis_url: str, schema: dict[str, FieldSpec], tmp_path: Path
) -> None:
    path = tmp_path / "profiles.ndjson"
    path.write_text("".join(f'{{"customer_id": "C-{n}", "clv": {n}}}\n' for n in range(5)))
    seen: list[int] = []

    report = run_import(redis_url, path, schema, batch_size=2, progress=seen.append)

    assert report == ImportReport(imported=5, errors=(), extra_fields=())
    assert seen == [2, 4, 5]
    assert stored(redis_url, "C-4") == {"clv": "4"}


def test_unreadable_files_raise(
    redis_url: str, schema: dict[str, FieldSpec], tmp_path: Path
) -> None:
    unknown = tmp_path / "profiles.xlsx"
    unknown.write_text("")
    with pytest.raises(ProfileImportError, match="extension"):
        run_import(redis_url, unknown, schema)

    no_id = tmp_path / "profiles.csv"
    no_id.write_text("id,clv\n1,2\n")
    with pytest.raises(ProfileImportError, match=r"profiles\.csv:1: .*customer_id"):
        run_import(redis_url, no_id, schema)

    with pytest.raises(ProfileImportError, match=r"missing\.jsonl"):
        run_import(redis_url, tmp_path / "missing.jsonl", schema)
