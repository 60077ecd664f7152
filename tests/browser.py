"""A real headless Chromium driven over the DevTools protocol, for the
dashboard tests: load a page, read what it shows, keep screenshots."""

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import aiohttp

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def chromium_binary():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def artifacts_dir():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = os.environ.get("GRAY_TEST_ARTIFACTS", os.path.join(here, "tmp", "artifacts"))
    os.makedirs(d, exist_ok=True)
    return d


class Browser:
    """One Chromium process with one page."""

    def __init__(self, width=1280, height=900, mobile=False):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("no Chromium found (apt-get install chromium-headless-shell)")
        self.profile = tempfile.mkdtemp(prefix="gray-chromium-", dir="/tmp")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             "--user-data-dir=" + self.profile, "--window-size=%d,%d" % (width, height), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = None
        deadline = time.time() + 30
        while time.time() < deadline and endpoint is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited with %s" % self.proc.returncode)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                endpoint = m.group(1)
        if endpoint is None:
            raise RuntimeError("chromium printed no DevTools endpoint")
        self.http = "http://" + endpoint.split("/")[2]
        self.loop = asyncio.new_event_loop()
        self.next_id = 0
        self.run(self._connect(width, height, mobile))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _connect(self, width, height, mobile):
        self.session = aiohttp.ClientSession()
        async with self.session.get(self.http + "/json/list") as r:
            pages = [t for t in await r.json(content_type=None) if t.get("type") == "page"]
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        await self._call("Page.enable")
        await self._call("Runtime.enable")
        await self._call("Emulation.setDeviceMetricsOverride",
                         width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    async def _call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError("DevTools connection closed: %s" % msg.type)
            body = json.loads(msg.data)
            if body.get("id") == mid:
                if "error" in body:
                    raise RuntimeError("%s: %s" % (method, body["error"]))
                return body.get("result", {})

    def goto(self, url):
        self.run(self._call("Page.navigate", url=url))

    def eval(self, expression):
        res = self.run(self._call("Runtime.evaluate", expression=expression, returnByValue=True))
        if "exceptionDetails" in res:
            raise RuntimeError("page raised: %s" % res["exceptionDetails"])
        return res.get("result", {}).get("value")

    def text(self):
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def wait_text(self, needle, timeout=30):
        """Poll what the page shows until it contains needle."""
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            last = self.text()
            if needle in last:
                return last
            time.sleep(0.2)
        raise AssertionError("page never showed %r; it shows:\n%s" % (needle, last[:3000]))

    def screenshot(self, name):
        data = self.run(self._call("Page.captureScreenshot", format="png"))["data"]
        path = os.path.join(artifacts_dir(), name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.run(self.ws.close())
            self.run(self.session.close())
        except Exception:
            pass
        self.loop.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
