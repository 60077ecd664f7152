"""The web dashboard in a real headless Chromium: the page loads from the
binary (no CDN), its tables show what the head's APIs report, a submitted
job appears and its logs stream. Screenshots land in tmp/artifacts/."""

import json
import re
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from browser import Browser, chromium_binary
from conftest import Pool, wait_for

pytestmark = pytest.mark.skipif(chromium_binary() is None and not __import__("os").environ.get("CI"),
                                reason="no Chromium on this machine (make ci-deps installs chromium-headless-shell)")


@pytest.fixture(scope="module")
def dash_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=3)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def base(pool):
    return "http://127.0.0.1:%d" % pool.status_port


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def test_page_is_self_contained(dash_pool):
    with urllib.request.urlopen(base(dash_pool) + "/", timeout=10) as r:
        html = r.read().decode()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    # Every script and stylesheet comes from the head itself.
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith("/static/") or ref.startswith("#") for ref in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            with urllib.request.urlopen(base(dash_pool) + ref, timeout=10) as r:
                assert r.status == 200 and len(r.read()) > 100
    # Unknown paths are not swallowed by the page.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base(dash_pool) + "/api/no/such/thing", timeout=10)
    assert e.value.code == 404


def test_nodes_page_shows_what_the_status_api_reports(dash_pool, browser):
    st = get_json(base(dash_pool) + "/api/gray/status")
    head = [n for n in st["nodes"] if n["head"]][0]
    browser.goto(base(dash_pool) + "/#/nodes")
    text = browser.wait_text(head["node_id"][:12])
    total = head["total"]["CPU"]
    assert "CPUs in use" in text
    assert re.search(r"\b\d+(\.\d+)? / %s\b" % re.escape(("%g" % total)), text), text
    assert "1 / 1" in text  # nodes alive
    browser.screenshot("dashboard-nodes.png")


def test_phone_layout_fits_the_screen(dash_pool):
    phone = Browser(width=390, height=844, mobile=True)
    try:
        phone.goto(base(dash_pool) + "/#/nodes")
        phone.wait_text("Nodes")
        # The page itself never scrolls sideways on a phone; wide tables scroll inside their box.
        assert phone.eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
        phone.screenshot("dashboard-phone.png")
    finally:
        phone.close()


def test_billing_page_says_when_billing_is_off(dash_pool, browser):
    browser.goto(base(dash_pool) + "/#/billing")
    browser.wait_text("Billing is not enabled")


def run_driver(pool, source):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(source)],
                            env={**__import__("os").environ, "GRAY_ADDRESS": "ray://" + pool.address},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_actor_and_placement_group_pages_follow_the_state_api(dash_pool, browser):
    driver = run_driver(dash_pool, """
        import os, sys, ray
        from ray.util.placement_group import placement_group
        ray.init(os.environ["GRAY_ADDRESS"])
        @ray.remote
        class DashboardProbe:
            def ping(self): return 1
        a = DashboardProbe.options(name="probe-actor").remote()
        ray.get(a.ping.remote())
        pg = placement_group([{"CPU": 1}], name="probe-pg")
        ray.get(pg.ready())
        print("READY", flush=True)
        __import__("time").sleep(120)
    """)
    try:
        seen = []
        for line in driver.stdout:
            seen.append(line)
            if line.strip() == "READY":
                break
        assert seen and seen[-1].strip() == "READY", "".join(seen)
        actors = get_json(base(dash_pool) + "/api/v0/actors?limit=100")["data"]["result"]["result"]
        probe = [a for a in actors if a.get("name") == "probe-actor"][0]
        browser.goto(base(dash_pool) + "/#/actors")
        text = browser.wait_text("DashboardProbe")
        assert probe["actor_id"][:12] in text and "probe-actor" in text
        browser.screenshot("dashboard-actors.png")
        browser.goto(base(dash_pool) + "/#/placement-groups")
        browser.wait_text("probe-pg")
    finally:
        driver.kill()
        driver.wait()


def test_submitted_job_appears_and_its_logs_stream(dash_pool, browser, tmp_path):
    from ray.job_submission import JobSubmissionClient
    client = JobSubmissionClient(base(dash_pool))
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import time
        print("first line from the job", flush=True)
        time.sleep(3)
        print("second line from the job", flush=True)
    """))
    sid = client.submit_job(entrypoint="python slow.py", runtime_env={"working_dir": str(tmp_path)})
    browser.goto(base(dash_pool) + "/#/jobs")
    browser.wait_text(sid)
    browser.goto(base(dash_pool) + "/#/jobs/" + sid)
    # The first line shows while the job still runs: the page follows the log.
    browser.wait_text("first line from the job")
    assert client.get_job_status(sid).value in ("RUNNING", "SUCCEEDED")
    text = browser.wait_text("second line from the job")
    browser.wait_text("SUCCEEDED")
    assert text.index("first line") < text.index("second line")
    browser.screenshot("dashboard-job-logs.png")
