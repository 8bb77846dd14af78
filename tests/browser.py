"""Open an HTML report in a real headless Chromium and check it through the DevTools protocol.

No browser driver package: Chromium speaks the protocol over a pipe (``--remote-debugging-pipe``:
it reads commands from fd 3 and writes replies and events to fd 4, each message JSON followed
by a NUL byte). :func:`check_report` loads the page at laptop width, collects console errors and
uncaught exceptions, reads the rendered DOM (sections, figures, images) and takes a screenshot.

By hand (prints what it found, exit status 1 if anything is wrong)::

    python tests/browser.py report.html --expect overview,run,neuron-set,ablation --screenshot shot.png
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with a protocol connection over a pipe."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="langloc-chromium-")
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def fds():  # the child's fd 3 reads our commands, its fd 4 writes to us
            # Copies first: the pipes may themselves be 3 or 4, and dup2 of an fd onto itself
            # would leave it close-on-exec.
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     # Python's own descriptors are not inherited (PEP 446); only 3 and 4 are.
                                     preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.time() + (timeout or self.timeout)
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


# What the page holds, read in the page itself.
_INSPECT = """
(() => {
  const sections = [...document.querySelectorAll('main > section')].map(s => ({
    id: s.id, kind: s.dataset.kind, title: ((s.querySelector('h2') || {}).firstChild || {}).textContent || '',
    text: s.textContent.trim().length,
    figures: [...s.querySelectorAll('figure')].map(f => {
      const img = f.querySelector('img'), svg = f.querySelector('svg');
      const box = (img || svg) ? (img || svg).getBoundingClientRect() : {width: 0, height: 0};
      return {img: !!img, svg: !!svg,
              loaded: img ? (img.complete && img.naturalWidth > 0) : (!!svg && svg.querySelectorAll('*').length > 10),
              width: box.width, height: box.height,
              command: (f.querySelector('.cmd') || {}).textContent || ''};
    })}));
  const imgs = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}));
  return {title: document.title, sections, imgs, width: document.documentElement.scrollWidth,
          viewport: window.innerWidth};
})()
"""


@dataclass
class Result:
    sections: list[dict]
    images: list[dict]
    console_errors: list[str]
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_report(page: str | Path, expect: list[str], screenshot: str | Path | None = None,
                 executable: str | None = None, width: int = 1366, height: int = 900,
                 full_page: float | None = None) -> Result:
    """Render ``page`` in headless Chromium at a laptop's width and check that every section in
    ``expect`` (section ids) is there with a title and content, every figure and image has
    loaded, every figure names its command, and nothing was logged as an error.
    ``full_page``: screenshot the whole page at this scale instead of the first screen."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("chromium not found")
    url = Path(page).resolve().as_uri()
    b = Browser(executable)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            b.send(f"{domain}.enable", session=s)
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=s)
        b.send("Page.navigate", {"url": url}, session=s)
        b.wait_for("Page.loadEventFired")
        info = b.send("Runtime.evaluate", {"expression": _INSPECT, "returnByValue": True}, session=s)["result"]["value"]
        shot = None
        if screenshot is not None:
            params = {"format": "png"}
            if full_page:  # the whole page, scaled (the viewport only by default)
                size = b.send("Page.getLayoutMetrics", session=s)["cssContentSize"]
                params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width,
                                                                "height": size["height"], "scale": full_page})
            data = b.send("Page.captureScreenshot", params, session=s)["data"]
            shot = Path(screenshot)
            shot.write_bytes(base64.b64decode(data))
        # Sorting a table runs the page's script (after the screenshot, which shows the page as
        # it opens): click the first header of every table twice.
        b.send("Runtime.evaluate", {"expression": "document.querySelectorAll('table.sortable thead th:first-child')"
                                                  ".forEach(th => { th.click(); th.click(); })"}, session=s)
        time.sleep(0.2)
        b.send("Runtime.evaluate", {"expression": "1"}, session=s)  # drain events logged meanwhile
        errors = []
        for e in b.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
    finally:
        b.close()
    result = Result(info["sections"], info["imgs"], errors, screenshot=shot)
    ids = [x["id"] for x in info["sections"]]
    for sid in expect:
        if sid not in ids:
            result.problems.append(f"section {sid!r} is missing (found: {', '.join(ids)})")
    for x in info["sections"]:
        if not x["title"].strip() or x["text"] < 20:
            result.problems.append(f"section {x['id']!r} is empty")
        for i, f in enumerate(x["figures"]):
            if not f["loaded"] or f["width"] < 50 or f["height"] < 50:
                result.problems.append(f"figure {i + 1} of section {x['id']!r} did not render ({f})")
            if not f["command"].strip():
                result.problems.append(f"figure {i + 1} of section {x['id']!r} does not say its command")
    for im in info["imgs"]:
        if not im["ok"]:
            result.problems.append(f"image {im['alt']!r} did not load")
    if info["width"] > info["viewport"] + 1:
        result.problems.append(f"the page is wider ({info['width']} px) than the window ({info['viewport']} px)")
    result.problems += errors
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Check a langloc HTML report in headless Chromium.")
    ap.add_argument("page")
    ap.add_argument("--expect", default="overview", help="comma-separated section ids")
    ap.add_argument("--screenshot")
    ap.add_argument("--full-page", type=float, default=None, help="screenshot the whole page at this scale")
    a = ap.parse_args(argv)
    r = check_report(a.page, a.expect.split(","), a.screenshot, full_page=a.full_page)
    for x in r.sections:
        print(f"section {x['id']:<22} {x['title'][:50]:<50} figures: {len(x['figures'])} "
              f"({sum(f['loaded'] for f in x['figures'])} rendered)")
    print(f"images: {len(r.images)} ({sum(i['ok'] for i in r.images)} loaded); console errors: {len(r.console_errors)}")
    for p in r.problems:
        print("PROBLEM:", p)
    print("OK" if r.ok else "FAILED")
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
