"""A real Prometheus server for tests (Debian's `prometheus`, see debian.py): started on a free
127.0.0.1 port with a configuration the test writes, its storage in the test's directory,
asked through its HTTP API, and always stopped by the test (`stop`, in a finally block)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.harness import free_port
from tests.support.wait import wait_until


def scrape_config(
    targets: list[str], rule_files: list[Path], *, job: str = "sluice", interval: str = "1s"
) -> dict[str, Any]:
    """One scrape job of `targets` (HOST:PORT of the brokers' HTTP listeners), rules and
    scrapes every `interval`."""
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }


class PrometheusServer:
    def __init__(self, binary: str, root: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.config_path = root / "prometheus.yml"
        self.log_path = root / "prometheus.log"
        root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )
        wait_until(
            self._ready,
            "prometheus to be ready (/-/ready)",
            timeout=timeout,
            interval=0.1,
            detail=lambda: f"log: {self.log_tail()}",
        )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>: the decoded answer, whatever its status (an invalid query
        answers 400 with status "error" and the error's text)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                out: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as e:
            out = json.loads(e.read())
        return out

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query now."""
        return self.api("query", query=expr)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"
