"""A real headless Chromium, driven over the Chrome DevTools Protocol on a pipe.

`--remote-debugging-pipe` makes Chromium read protocol commands from file
descriptor 3 and write answers and events to descriptor 4, as NUL-terminated
JSON: no port, no websocket library, no driver binary. Used by the report
tests to open pages from file:// as a user would, and to ask the page, in
JavaScript, whether every image and audio file loaded.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Browser:
    """One Chromium process and one page (tab) in it."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def use_pipes():  # in the child: the protocol's descriptors are 3 (in) and 4 (out)
            read_end, write_end = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=use_pipes, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    # --- the protocol ---------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            self.events.append(self._read_message(deadline))

    # --- what the tests use ---------------------------------------------------------

    def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        return [json.dumps(e["params"]) for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"]

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window."""
        content = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": content["width"], "height": content["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Waits for every <img> and <audio> of the page to load or fail, then lists what failed.
MEDIA_CHECK = """
(async () => {
  const settle = (element, done, events) => done(element) ? Promise.resolve() : new Promise(resolve => {
    for (const name of events) element.addEventListener(name, resolve, {once: true});
    setTimeout(resolve, 20000);
  });
  const images = [...document.images];
  const audios = [...document.querySelectorAll('audio')];
  for (const audio of audios) if (audio.readyState === 0 && !audio.error) audio.load();
  await Promise.all([
    ...images.map(i => settle(i, x => x.complete, ['load', 'error'])),
    ...audios.map(a => settle(a, x => x.readyState >= 1 || x.error, ['loadedmetadata', 'error'])),
  ]);
  return {
    images: images.map(i => ({src: i.getAttribute('src'), id: i.id, width: i.naturalWidth})),
    audios: audios.map(a => ({src: a.getAttribute('src'), readyState: a.readyState,
                              duration: a.duration, error: a.error ? a.error.code : null})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  };
})()
"""


def broken_media(found: dict) -> list[str]:
    """The images and audio files of a MEDIA_CHECK result that did not load."""
    broken = [f"img {i['src']}" for i in found["images"] if not i["width"]]
    broken += [f"audio {a['src']} (error {a['error']})" for a in found["audios"]
               if a["readyState"] < 1 or a["error"] is not None]
    return broken


def non_relative_links(found: dict) -> list[str]:
    """Links that would not survive zipping the folder: absolute paths and URLs with a scheme."""
    links = [i["src"] for i in found["images"]] + [a["src"] for a in found["audios"]] + found["links"]
    return [link for link in links if not link or link.startswith("/") or ":" in link.split("/")[0]]


def load_page(page: Path) -> dict | None:
    """MEDIA_CHECK of `page` opened from file:// in a fresh Chromium; None where Chromium is
    not installed (the callers still check the HTML itself)."""
    executable = find_chromium()
    if executable is None:
        return None
    with Browser(executable) as browser:
        browser.open(Path(page).resolve().as_uri())
        return browser.evaluate(MEDIA_CHECK)
