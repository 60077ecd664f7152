"""gray start / status / stop as a user runs them."""

import json
import socket
import os
import subprocess
import sys
import tempfile
import time

from conftest import free_port, stop_process


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


def test_native_port_taken(gray_bin, tmp_path):
    # Native Ray's default GCS port may be another program's (Redis, a
    # stock Ray): the pool starts without native mode and says so; asked for
    # that port explicitly, it refuses to start.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("0.0.0.0", 6379))
        except OSError:
            pass  # someone else holds it already: the same situation
        taken.listen()
        short = tempfile.mkdtemp(prefix="grc", dir="/tmp")  # unix socket paths < 108 bytes
        env = dict(os.environ, TMPDIR=str(tmp_path), RAY_TMPDIR=short)
        base = [gray_bin, "start", "--head", "--port", str(free_port()), "--status-port", "0",
                "--node-port", "-1", "--python", sys.executable, "--num-cpus", "1",
                "--state-dir", str(tmp_path / "state")]
        log = open(tmp_path / "default.log", "w+")
        proc = subprocess.Popen(base, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 60
            text = ""
            while time.time() < deadline and "gray pool is up" not in text:
                assert proc.poll() is None, open(log.name).read()
                time.sleep(0.2)
                text = open(log.name).read()
            assert "gray pool is up" in text, text
            assert "native Ray is off" in text and "Native Ray:" not in text, text
        finally:
            stop_process(proc)
        r = subprocess.run(base + ["--gcs-port", "6379"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0 and "GCS port" in r.stdout + r.stderr, r.stdout + r.stderr
