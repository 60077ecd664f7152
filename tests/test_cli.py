"""gray start / status / stop as a user runs them."""

import json
import os
import subprocess
import sys
import time

from conftest import free_port


def test_start_status_stop(gray_bin, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # isolates the pid file
    port, status_port = free_port(), free_port()
    log = open(tmp_path / "pool.log", "w")
    proc = subprocess.Popen(
        [gray_bin, "start", "--head", "--port", str(port), "--status-port", str(status_port),
         "--python", sys.executable, "--num-cpus", "3", "--gcs-port", "-1", "--resources", '{"custom_thing": 2}'],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 60
        out = None
        while time.time() < deadline:
            r = subprocess.run([gray_bin, "status", "--json"], capture_output=True, text=True, env=env)
            if r.returncode == 0:
                out = json.loads(r.stdout)
                break
            time.sleep(0.2)
        assert out is not None, open(tmp_path / "pool.log").read()
        assert out["client_address"] == "127.0.0.1:%d" % port
        node = out["nodes"][0]
        assert node["total"]["CPU"] == 3 and node["total"]["custom_thing"] == 2
        text = subprocess.run([gray_bin, "status"], capture_output=True, text=True, env=env, check=True).stdout
        assert "Nodes: 1" in text and "custom_thing" in text

        stop = subprocess.run([gray_bin, "stop"], capture_output=True, text=True, env=env, check=True)
        assert "Stopped 1" in stop.stdout
        assert proc.wait(timeout=20) == 0
        r = subprocess.run([gray_bin, "status"], capture_output=True, text=True, env=env)
        assert r.returncode != 0  # nothing answers any more
    finally:
        if proc.poll() is None:
            proc.kill()


def test_start_without_head_is_a_clear_error(gray_bin):
    r = subprocess.run([gray_bin, "start"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "--head" in r.stderr
