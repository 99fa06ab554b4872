"""A headless Chromium driven over the DevTools protocol on a pipe (no network, no port).

``--remote-debugging-pipe`` makes Chromium read protocol commands from fd 3 and write
replies and events to fd 4, each a JSON message ended by NUL. Used by the report tests
and ``benchmarks/bench_report.py`` to load ``report.html`` in a real browser, collect
its console errors and uncaught exceptions, read the DOM and hover over points.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page. Use as a context manager."""

    def __init__(self, executable: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="einnas-chromium-")
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        # above 10, so that moving them to 3 and 4 in the child cannot overwrite each other
        child_in, child_out = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)

        def fds():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-sync", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=False, preexec_fn=fds,
        )
        for fd in (to_child, from_child, child_in, child_out):
            os.close(fd)
        self._write = os.fdopen(from_parent, "wb", buffering=0)
        self._read = os.fdopen(to_parent, "rb", buffering=0)
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next = 0
        self.stderr = b""
        threading.Thread(target=self._reader, daemon=True).start()
        self._errs = threading.Thread(target=self._stderr, daemon=True)
        self._errs.start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Page", "Log"):
            self.send(f"{domain}.enable", session=True)

    def _reader(self):
        buffer = b""
        while True:
            chunk = self._read.read(1 << 16)
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self._messages.put(json.loads(message))

    def _stderr(self):
        self.stderr = self.proc.stderr.read()

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._write.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._get()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _get(self, deadline: float | None = None) -> dict:
        try:
            reply = self._messages.get(timeout=self.timeout if deadline is None else max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("no answer from chromium") from None
        if reply is None:
            raise RuntimeError("chromium closed its pipe: " + self.stderr.decode(errors="replace")[-500:])
        return reply

    def wait_event(self, method: str) -> dict:
        """Wait for the next event ``method`` (or return one that came already)."""
        for event in self.events:
            if event.get("method") == method and not event.get("_seen"):
                event["_seen"] = True
                return event
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._get(deadline)
            self.events.append(event)
            if event.get("method") == method:
                event["_seen"] = True
                return event

    def load(self, url: str) -> float:
        """Navigate and wait for the load event and the page's ``data-rendered`` mark; the seconds taken."""
        start = time.perf_counter()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while not self.evaluate("document.body && document.body.dataset.rendered === '1'"):
            if time.monotonic() > deadline:
                raise TimeoutError("the page never marked itself rendered")
            time.sleep(0.01)
        return time.perf_counter() - start

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def hover(self, x: float, y: float) -> None:
        """Move the mouse to viewport point (x, y), as a user would."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=True)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors and warnings, and error log entries seen so far."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                                for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._errs.join(timeout=5)
        for handle in (self._write, self._read):
            try:
                handle.close()
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
