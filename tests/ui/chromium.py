"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no extra package.

MLflow's UI is a JavaScript app, so a page is read once it has rendered: ``wait_for`` polls a JavaScript
condition, ``text`` is what a person would read (``document.body.innerText``), ``screenshot`` writes a PNG.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Browser:
    def __init__(self, width: int = 1500, height: int = 900, executable: str | None = None):
        self.profile = tempfile.TemporaryDirectory(prefix="medlora-chromium-")
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def fds():  # Chromium reads commands on fd 3 and writes answers on fd 4
            reads, writes = os.dup(to_chrome), os.dup(from_chrome)  # out of the way of 3 and 4 first
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.proc = subprocess.Popen(
            [executable or find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(to_chrome)
        os.close(from_chrome)
        self._ids, self._buffer = itertools.count(1), b""
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def call(self, method: str, params: dict | None = None) -> dict:
        return self._call(method, params, self.session)

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def wait_for(self, condition: str, timeout: float = 60) -> bool:
        """Poll the JavaScript ``condition`` until it is truthy; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(f"Boolean({condition})"):
                return True
            time.sleep(0.25)
        return False

    def wait_for_text(self, *needles: str, timeout: float = 60) -> bool:
        return self.wait_for(" && ".join(f"document.body && document.body.innerText.includes({json.dumps(n)})"
                                         for n in needles), timeout)

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def frames_text(self) -> str:
        """The text of the page and of the iframes in it, sandboxed ones included: MLflow shows an HTML
        artifact in a sandboxed iframe, which Chromium runs as a target of its own."""
        texts = [self.text()]
        for target in self._call("Target.getTargets")["targetInfos"]:
            if target["type"] != "iframe":
                continue
            session = self._call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            result = self._call("Runtime.evaluate", {"expression": "document.body ? document.body.innerText : ''",
                                                     "returnByValue": True}, session["sessionId"])
            texts.append(result["result"].get("value") or "")
            self._call("Target.detachFromTarget", {"sessionId": session["sessionId"]})
        return "\n".join(texts)

    def wait_for_frames_text(self, *needles: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.frames_text()
            if all(n in text for n in needles):
                return True
            time.sleep(0.25)
        return False

    def click_text(self, text: str, selector: str = "button, a, [role=button], [role=tab], span, div") -> bool:
        """Click the innermost element matching ``selector`` whose text is exactly ``text``."""
        return bool(self.eval(f"""(() => {{
            const hits = Array.from(document.querySelectorAll({json.dumps(selector)}))
                .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            if (!hits.length) return false;
            hits[hits.length - 1].click();
            return true;
        }})()"""))

    def click(self, selector: str) -> bool:
        """Click the first element matching the CSS ``selector``; False when there is none."""
        return bool(self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                              "if (!e) return false; e.click(); return true; })()"))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._out, self._in):
            os.close(fd)
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
