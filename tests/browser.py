"""Open a local HTML file in Debian's headless Chromium and report what went wrong on the page.

Chromium is driven over the DevTools protocol (CDP) with ``--remote-debugging-pipe``: the browser reads
NUL-separated JSON commands on file descriptor 3 and writes replies and events on descriptor 4, so the
standard library is enough (no websocket client, no Selenium/Playwright, no downloaded browser build).

Use it from a test module with ``pytest_plugins = ["browser"]`` (``tests`` is on ``sys.path`` as for
``cli_runs``), import ``render`` from it and take the ``chromium`` fixture, which skips when Chromium
cannot be had.  PYTEST_DONT_REWRITE: this module has no asserts, and a test module imports it before
``pytest_plugins`` registers it, which would otherwise warn that it cannot be rewritten::

    from browser import render

    pytest_plugins = ["browser"]


    def test_report_renders(chromium, tmp_path):
        report = render(tmp_path / "report.html", screenshot=tmp_path / "report.png")
        assert not report.problems, report
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from debian import apt_install

EXECUTABLE = "chromium"
SRC_CHARS = 80
# Chromium refuses textures taller than this; a longer page is cut rather than failing the screenshot.
MAX_SHOT_HEIGHT = 16384
FLAGS = (
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-sandbox",  # as root Chromium exits at once without it (and a container has no user namespaces)
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's /dev/shm may be 64 MiB, too small for the renderer
    "--allow-file-access-from-files",  # lets file:// pages fetch()/XHR siblings; <img> works without it
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,1024",
    "about:blank",
)
# Why each image failed, not just that it did: complete and naturalWidth > 0 is what the eye sees.
IMAGES_JS = """JSON.stringify({
  title: document.title,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  images: Array.from(document.images, i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0]),
})"""


def ensure_chromium() -> str | None:
    """Make sure ``chromium`` is on PATH, installing Debian's package with apt-get when root.

    Returns
    -------
    str or None
        None when Chromium is there, otherwise a one-line reason to skip.
    """
    return apt_install(["chromium"], [EXECUTABLE])


@pytest.fixture(scope="session")
def chromium() -> Iterator[str]:
    """Yield the path of the ``chromium`` executable, or skip when it cannot be had."""
    reason = ensure_chromium()
    if reason:
        pytest.skip(reason)
    yield shutil.which(EXECUTABLE) or EXECUTABLE


@dataclass
class PageReport:
    """What one page load showed.

    Attributes
    ----------
    console_errors
        Console messages of level error or warning, from the page (``console.error``/``warn``/``assert``)
        and from the browser itself (e.g. ``Failed to load resource``), as ``level: text (url:line)``.
    exceptions
        Uncaught JavaScript exceptions, with the description V8 gives (message and stack).
    failed_requests
        Requests that failed at the network level, as ``url: net::ERROR`` (url truncated).
    images
        ``(src, loaded)`` for every ``<img>`` after the load event; src truncated to about 80 characters,
        loaded meaning complete with a natural width above zero.
    title
        The document's title.
    """

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[tuple[str, bool]] = field(default_factory=list)
    title: str = ""
    overflow: int = 0  # CSS pixels of content beyond the viewport's width (a table off-screen)

    @property
    def problems(self) -> list[str]:
        """Everything above that is wrong, one line each; empty for a clean page."""
        broken = [f"image not loaded: {src}" for src, loaded in self.images if not loaded]
        return [*self.console_errors, *self.exceptions, *self.failed_requests, *broken]


def _truncate(text: str, limit: int = SRC_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _high_pipe() -> tuple[int, int]:
    """A pipe whose both ends are above 9, so dup2 onto 3 and 4 in the child cannot clobber either."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class _Cdp:
    """Blocking CDP client over the pipe: send a command, pump messages until its reply comes back."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float, log: Path) -> None:
        self.to_browser, self.from_browser = to_browser, from_browser
        self.deadline, self.log = deadline, log
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _stderr_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return "\n".join(lines[-10:]) or "(no stderr)"

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError(f"chromium timed out; its stderr ends with:\n{self._stderr_tail()}")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe; its stderr ends with:\n{self._stderr_tail()}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and return its ``result``, keeping the events that arrive meanwhile."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") != self.next_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"CDP {method} failed: {reply['error']}")
            else:
                return reply.get("result", {})

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        """Pump until an event ``method`` (for ``session``) arrives; earlier ones are kept too."""
        seen = len(self.events)
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event["params"]
            seen = len(self.events)
            self.events.append(self._read())


def _collect(events: list[dict[str, Any]], report: PageReport) -> None:
    """Sort the page's console, exception and network events into the report."""
    urls: dict[str, str] = {}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            url = _truncate(urls.get(params["requestId"], params["requestId"]))
            report.failed_requests.append(f"{url}: {params.get('errorText', '?')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)
            frames = params.get("stackTrace", {}).get("callFrames", [])
            where = f" ({frames[0]['url']}:{frames[0]['lineNumber'] + 1})" if frames else ""
            report.console_errors.append(f"{params['type']}: {text}{where}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            # The browser's own messages (failed loads, deprecations); console.* calls come via Runtime.
            entry = params["entry"]
            where = f" ({_truncate(entry['url'])})" if entry.get("url") else ""
            report.console_errors.append(f"{entry['level']}: {entry['text']}{where}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "?")
            report.exceptions.append(f"{text} ({details.get('url', '?')}:{details.get('lineNumber', 0) + 1})")


def render(html: Path, screenshot: Path | None = None, timeout: float = 60, width: int = 1280) -> PageReport:
    """Load ``html`` in headless Chromium and report console errors, exceptions, failed loads and images.

    Parameters
    ----------
    html
        Local HTML file; relative links (images next to it) resolve against its directory.
    screenshot
        Where to write a PNG of the full page (beyond the 1280x1024 viewport); None for none.
    timeout
        Seconds for the whole run: start, load, screenshot and shutdown.
    width
        Viewport width, CSS pixels (the height is 1024).

    Returns
    -------
    PageReport
        What the page showed up to its load event (images block it, so they have settled by then).

    Raises
    ------
    FileNotFoundError
        When ``html`` does not exist, or ``chromium`` is not on PATH (take the ``chromium`` fixture to
        skip instead).
    TimeoutError
        When the browser does not start, load or answer within ``timeout``.
    RuntimeError
        When the browser dies, refuses a command or cannot navigate to the file.
    """
    executable = shutil.which(EXECUTABLE)
    if not executable:
        raise FileNotFoundError(f"{EXECUTABLE} is not on PATH; call ensure_chromium() first")
    if not html.is_file():  # Chromium would only say net::ERR_FILE_NOT_FOUND after a second of start-up
        raise FileNotFoundError(html)
    deadline = time.monotonic() + timeout
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    log = profile / "stderr.log"
    # Browser reads commands from fd 3 and writes to fd 4: its ends are dup2'ed there in the child.
    commands_r, commands_w = _high_pipe()
    replies_r, replies_w = _high_pipe()
    proc = None
    try:
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [executable, f"--user-data-dir={profile / 'profile'}", *FLAGS],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # close_fds would close 3 and 4 after preexec_fn; the other fds here are all non-inheritable.
                close_fds=False,
                preexec_fn=lambda: (os.dup2(commands_r, 3), os.dup2(replies_w, 4)),
                start_new_session=True,  # own process group, so the renderer and GPU helpers die with it
            )
        os.close(commands_r)
        os.close(replies_w)
        commands_r = replies_w = -1
        cdp = _Cdp(commands_w, replies_r, deadline, log)
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            cdp.call(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": 1024, "deviceScaleFactor": 1, "mobile": False}
        cdp.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
        # A file:// URL must be absolute; as_uri also percent-encodes spaces and the like.
        nav = cdp.call("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
        if nav.get("errorText"):
            raise RuntimeError(f"cannot open {html}: {nav['errorText']}")
        cdp.wait_event("Page.loadEventFired", session)
        # Events are delivered in order, so this round trip also flushes everything logged before it.
        page = cdp.call("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session=session)
        if "exceptionDetails" in page:
            raise RuntimeError(f"reading the page failed: {page['exceptionDetails']}")
        state = json.loads(page["result"]["value"])
        report = PageReport(
            images=[(_truncate(src), bool(ok)) for src, ok in state["images"]],
            title=state["title"],
            overflow=int(state["overflow"]),
        )
        _collect([e for e in cdp.events if e.get("sessionId") == session], report)
        if screenshot is not None:
            size = cdp.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_SHOT_HEIGHT)}
            shot = cdp.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
                session=session,
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        try:  # a clean exit; whatever is left of a slow or dead browser is killed below
            cdp.call("Browser.close")
            proc.wait(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            pass
        return report
    finally:
        for fd in (commands_r, commands_w, replies_r, replies_w):
            if fd >= 0:
                os.close(fd)
        if proc is not None:
            try:  # the browser and its renderer/GPU helpers share a process group; none may outlive us
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
