"""A real Prometheus on an ephemeral port, scraping given targets every second with the
shipped alert rules: for the operations kit's test and the dashboard renderer."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.server.conftest import free_port

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "decision-engine.json"


def query(port: int, path: str, **params: str) -> Any:
    """`data` of a Prometheus HTTP API answer, which must be a success."""
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


@contextmanager
def running_prometheus(tmp: Path, targets: list[str]) -> Iterator[int]:
    """Its HTTP port, once it is ready; stopped on the way out."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed: `make ops-tools` installs it"
    port = free_port()
    shutil.copy(ALERTS, tmp / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": "decision-engine", "static_configs": [{"targets": targets}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log_path = tmp / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_ready(port, process, log_path)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
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


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels
