"""Bulk import of customer profiles from JSON Lines or CSV.

Each known field is validated by the ruleset's schema and stored in canonical text,
so anything imported is usable by the decision core. Bad lines are reported with
their line number and skipped; the good ones are still imported.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from decision_engine.errors import ProfileImportError
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.profiles import ProfileStore
from decision_engine.vocabulary import id_problem

FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
ID_FIELD = "customer_id"

ProgressCallback = Callable[[int], None]
"""Called with the number of records processed so far."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did."""

    imported: int
    errors: tuple[tuple[int, str], ...]
    """(1-based line, reason) of each skipped line."""
    extra_fields: tuple[str, ...]
    """Fields not in the schema, stored as text unvalidated."""


def detect_format(path: Path) -> str:
    """The format implied by the file extension."""
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise ProfileImportError(
            f"{path}: cannot tell the format from the extension; use .jsonl or .csv, "
            "or name the format"
        ) from None


def canonical_profile(
    record: Mapping[str, object], schema: Mapping[str, FieldSpec]
) -> tuple[str, dict[str, str]]:
    """(customer_id, fields as stored); ValueError says why the record is invalid."""
    customer_id = record.get(ID_FIELD)
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        customer_id = str(customer_id)
    if not isinstance(customer_id, str) or not customer_id.strip():
        raise ValueError(f"missing or empty {ID_FIELD}")
    problem = id_problem(customer_id)
    if problem is not None:
        # Decide refuses such an id, so the profile could never be read.
        raise ValueError(f"{ID_FIELD}: {problem}")
    fields: dict[str, str] = {}
    for name, raw in record.items():
        # Empty and null mean "absent", so a CSV blank cell does not fail validation.
        if name == ID_FIELD or raw is None or raw == "":
            continue
        spec = schema.get(name)
        if spec is not None:
            fields[name] = spec.to_text(spec.parse(raw))
        else:
            fields[name] = raw if isinstance(raw, str) else json.dumps(raw)
    return customer_id, fields


async def import_file(
    store: ProfileStore,
    path: Path,
    *,
    schema: Mapping[str, FieldSpec],
    audiences: tuple[str, ...] = (),
    fmt: str | None = None,
    batch_size: int = 1000,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Validate and store every good record of `path`, replacing existing profiles."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ProfileImportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    imported = 0
    processed = 0
    errors: list[tuple[int, str]] = []
    extra: set[str] = set()
    batch: list[tuple[str, dict[str, str]]] = []

    async def flush() -> None:
        nonlocal imported
        imported += await store.put_profiles(batch, audiences=audiences)
        batch.clear()
        if progress is not None:
            progress(processed)

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = _jsonl(handle) if fmt == "jsonl" else _csv(handle, path)
            for line, record in records:
                processed += 1
                try:
                    if isinstance(record, str):
                        raise ValueError(record)
                    customer_id, fields = canonical_profile(record, schema)
                except ValueError as exc:
                    errors.append((line, str(exc)))
                    continue
                extra.update(name for name in fields if name not in schema)
                batch.append((customer_id, fields))
                if len(batch) >= batch_size:
                    await flush()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileImportError(f"{path}: {exc}") from exc
    await flush()
    return ImportReport(imported, tuple(errors), tuple(sorted(extra)))


# Readers yield (line, record) or (line, reason) for a line that is not a record.


def _jsonl(lines: Iterator[str]) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield number, f"expected a JSON object, got {type(value).__name__}"
            continue
        yield number, value


def _csv(lines: Iterator[str], path: Path) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip() for name in header]
    if ID_FIELD not in header:
        raise ProfileImportError(f"{path}:1: the CSV header has no {ID_FIELD} column")
    start = reader.line_num + 1
    for row in reader:
        # A quoted cell may span lines: report the line the record starts on.
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, f"expected {len(header)} columns, got {len(row)}"
            continue
        yield number, dict(zip(header, row, strict=True))
