"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of web pages.

The browser is Debian's `chromium` (`debian_program`, installed by the project's script when
missing). It talks CDP over `--remote-debugging-pipe`: JSON messages separated by NUL bytes,
commands read from its fd 3 and events and answers written to its fd 4, so no websocket and
no Python package is needed. A small `sh` wrapper puts our pipes on those fds. A daemon
thread reads every message; `call` sends one command to the page's session and waits, with a
deadline, for the answer carrying its id.

    with HeadlessChromium(tmp_path) as browser:
        browser.navigate("http://127.0.0.1:8080/")
        browser.evaluate("document.title")
        browser.screenshot(tmp_path / "page.png")

Chromium runs as root here, so `--no-sandbox`; nothing it does reaches the network beyond
the page's own origin (background networking, component updates and sync are off).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.support.debian import debian_program
from tests.support.wait import wait_until

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-pipe",
)
ON_FDS_3_AND_4 = 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2'
"""sh: the browser reads commands on fd 3 (our stdin pipe), answers on fd 4 (our stdout
pipe); its own stdin is /dev/null and its stdout goes to its log."""


class BrowserError(AssertionError):
    """Chromium answered a command with an error, died, or did not answer in time."""


class HeadlessChromium:
    def __init__(self, workdir: Path, *, width: int = 1400, height: int = 1000) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "chromium.log"
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._session: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HeadlessChromium:
        exe = debian_program("chromium")
        args = [
            exe,
            *FLAGS,
            f"--user-data-dir={self.workdir / 'profile'}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                ["sh", "-c", ON_FDS_3_AND_4, "sh", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self._session = attached["sessionId"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    # -- protocol ---------------------------------------------------------------------------

    def _read(self, pipe: IO[bytes]) -> None:
        buf = b""
        try:
            while chunk := os.read(pipe.fileno(), 1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        with self._cond:
                            self._answers[msg["id"]] = msg
                            self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        page: bool = True,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Send one command (to the page's session unless `page` is False) and return its
        result; BrowserError on an error answer, the browser's exit, or `timeout`."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None, "not started"
        cid = next(self._ids)
        msg: dict[str, Any] = {"id": cid, "method": method, "params": params or {}}
        if page:
            assert self._session is not None
            msg["sessionId"] = self._session
        try:
            proc.stdin.write(json.dumps(msg).encode() + b"\0")
            proc.stdin.flush()
        except OSError as e:
            raise BrowserError(f"{method}: chromium is gone ({e}); log: {self.log_tail()}") from e
        with self._cond:
            if not self._cond.wait_for(
                lambda: cid in self._answers or self._closed, timeout=timeout
            ):
                raise BrowserError(f"{method}: no answer within {timeout:g}s")
            answer = self._answers.pop(cid, None)
        if answer is None:
            raise BrowserError(f"{method}: chromium exited; log: {self.log_tail()}")
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    # -- page operations --------------------------------------------------------------------

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Open `url` and wait until its document has loaded."""
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigating to {url}: {answer['errorText']}")
        loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        wait_until(lambda: bool(self.evaluate(loaded)), f"{url} to load", timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} raised: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the window's height)."""
        answer = self.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path.write_bytes(base64.b64decode(answer["data"]))
        return path

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"
