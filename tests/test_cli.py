"""`serve`'s options come from Settings: every field has a flag and a variable, and back."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from decision_engine.cli import serve
from decision_engine.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
EXCEPTIONS = {"rules_dir": ("--rules", "DECISION_ENGINE_RULES")}
"""Settings fields whose flag and variable are not named after the field."""


def _options() -> dict[str, click.Option]:
    return {p.name: p for p in serve.params if isinstance(p, click.Option) and p.name}


def _flag_and_env(name: str) -> tuple[str, str]:
    return EXCEPTIONS.get(name, ("--" + name.replace("_", "-"), "DECISION_ENGINE_" + name.upper()))


def test_every_setting_has_a_flag_and_a_variable() -> None:
    options = _options()
    names = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(options) == sorted(names), "serve's options and Settings' fields differ"
    for name in names:
        flag, env = _flag_and_env(name)
        assert flag in options[name].opts, name
        assert options[name].envvar == env, name
        assert options[name].show_envvar, name


def test_help_lists_every_setting_but_the_secret() -> None:
    result = CliRunner().invoke(serve, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    for f in dataclasses.fields(Settings):
        flag, env = _flag_and_env(f.name)
        shown = f.name != "decision_secret"
        assert (f" {flag} " in text) is shown, f.name
        assert (env in text) is shown, f.name
    assert "--reflection / --no-reflection" in text
    assert "[default: number of CPUs]" in text


def test_variables_set_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECISION_ENGINE_WORKERS", "3")
    monkeypatch.setenv("DECISION_ENGINE_REFLECTION", "false")
    monkeypatch.setenv("DECISION_ENGINE_INSECURE", "1")
    monkeypatch.setenv("DECISION_ENGINE_RULES", "elsewhere")
    params = serve.make_context("serve", []).params
    assert params["workers"] == 3 and params["reflection"] is False and params["insecure"]
    assert params["rules_dir"] == Path("elsewhere")
    params = serve.make_context("serve", ["--reflection", "--rules", "x"]).params
    assert params["reflection"] is True and params["rules_dir"] == Path("x")


def test_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for f in dataclasses.fields(Settings):
        monkeypatch.delenv(_flag_and_env(f.name)[1], raising=False)
    params = serve.make_context("serve", []).params
    assert params.pop("workers") is None  # unset: Settings' default, the number of CPUs
    assert params == {
        f.name: f.default for f in dataclasses.fields(Settings) if f.name != "workers"
    }


def test_readme_configuration_table_names_real_flags_and_variables() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    assert len(rows) > 20
    flags = {opt for p in _options().values() for opt in (*p.opts, *p.secondary_opts)}
    envs = {p.envvar for p in _options().values()}
    for row in rows:
        flag_cell, env_cell = row.split("|")[1:3]
        for flag in re.findall(r"--[a-z-]+", flag_cell):
            assert flag in flags, row
        for env in re.findall(r"DECISION_ENGINE_[A-Z_]*[A-Z](?![A-Z_…])", env_cell):
            assert env in envs, row
