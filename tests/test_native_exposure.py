"""Who can reach a native node. Its GCS and raylet listen on the node IP
(stock drivers dial it even when given 127.0.0.1), but a head started for
this machine only (the default `--host 127.0.0.1`) closes connections from
other hosts; `--host 0.0.0.0` opens them, unless the head runs in token
mode (its default then): stock native drivers carry no gray token, so a
token-mode head serves native Ray to local drivers only. The other host is a network
namespace on this machine, reaching the node IP through a veth pair."""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from native_pool import NativePool

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or os.environ.get("NATIVE_TARGET") == "ray",
    reason="needs root and iproute2 to make a second host (a network namespace)",
)

PROBE = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
try:
    data = s.recv(9)
except (ConnectionResetError, socket.timeout):
    data = b""
print("OPEN" if data else "CLOSED")
"""


@pytest.fixture(scope="module")
def other_host():
    ns, tag = "grt" + uuid.uuid4().hex[:6], uuid.uuid4().hex[:4]
    host_if, ns_if = "vg%sa" % tag, "vg%sb" % tag
    sub = "10.%d.%d" % (200 + int(tag[:2], 16) % 50, int(tag[2:], 16) % 250)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", ns)
        run("ip", "addr", "add", sub + ".1/24", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", sub + ".2/24", "dev", ns_if)
        run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", sub + ".1")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip("cannot make a network namespace here: %s" % getattr(e, "stderr", e))
    yield ns
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def probe(ns, host, port):
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, host, str(port)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("host,mode,want", [
    ("127.0.0.1", None, "CLOSED"),
    ("0.0.0.0", "disabled", "OPEN"),
    ("0.0.0.0", None, "CLOSED"),  # token mode by default off loopback
])
def test_other_hosts_reach_the_gcs_only_when_the_head_is_open(gray_bin, other_host, host, mode, want):
    extra = ("--host", host) + (("--auth-mode", mode) if mode else ())
    p = NativePool(gray_bin, extra=extra)
    try:
        ip, port = p.address.rsplit(":", 1)
        assert probe(other_host, ip, port) == want, p.logs()[-3000:]
        # Local drivers are served either way.
        p.check("""
            import ray
            ray.init(address=ADDRESS)
            assert ray.get(ray.put(7)) == 7
            ray.shutdown()
        """)
        if want == "CLOSED":
            assert "refused a connection from another host" in p.logs()
    finally:
        p.stop()
