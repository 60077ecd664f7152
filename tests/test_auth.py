"""Trust: a head in token mode (issue 13). The stock ray 2.60 client with
RAY_AUTH_MODE=token and a token from `gray token create` works; without one,
or with a revoked one, it is refused at ray.init; accounts cannot reach each
other's objects, actors or named actors; the HTTP API wants a token, and an
operator token for money; TLS with the stock RAY_USE_TLS variables."""

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest

from conftest import Pool, Provider, free_port, wait_for

USD = 1_000_000


def gray(gray_bin, *args, env=None):
    out = subprocess.run([gray_bin, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def client_env(token=None, extra=None):
    """The environment of a stock client: no token, or RAY_AUTH_MODE=token
    with one; HOME empty so no ~/.ray/auth_token is found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_USE_TLS", "RAY_TLS"))}
    env["HOME"] = tempfile.mkdtemp(prefix="gray-auth-home-")
    if token is not None:
        env["RAY_AUTH_MODE"] = "token"
        if token:
            env["RAY_AUTH_TOKEN"] = token
    env.update(extra or {})
    return env


def run(pool, source, token=None, extra_env=None, timeout=180, stdin=None):
    prog = "import os, sys, json, ray\nADDR = 'ray://' + os.environ['GRAY_ADDRESS']\n" + source
    env = client_env(token, extra_env)
    env["GRAY_ADDRESS"] = pool.address
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout,
                          env=env, input=stdin)


def result(out):
    assert "RESULT" in out.stdout, out.stdout + out.stderr
    return json.loads(out.stdout.split("RESULT", 1)[1].splitlines()[0])


@pytest.fixture(scope="module")
def metrics_addr():
    return "127.0.0.1:%d" % free_port()


@pytest.fixture(scope="module")
def tpool(gray_bin, metrics_addr):
    p = Pool(gray_bin, num_cpus=2, extra=["--auth-mode", "token", "--metrics-addr", metrics_addr])
    yield p
    p.stop()


@pytest.fixture(scope="module")
def bpool(gray_bin):
    ledger = os.path.join(tempfile.mkdtemp(prefix="gray-auth-ledger-"), "ledger.db")
    p = Pool(gray_bin, num_cpus=1, extra=["--auth-mode", "token", "--ledger", ledger])
    yield p
    p.stop()


def status(pool):
    return "127.0.0.1:%d" % pool.status_port


def new_token(gray_bin, pool, account):
    return gray(gray_bin, "token", "create", "--address", status(pool), "--account", account).strip()


def http(pool, path, token=None, method="GET", port=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port or pool.status_port, path), method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


CONNECT = """
try:
    ray.init(ADDR)
    print("RESULT" + json.dumps({"ok": ray.get(ray.put(41)) + 1}))
except Exception as e:
    print("RESULT" + json.dumps({"err": type(e).__name__, "msg": str(e)}))
"""


def test_client_without_token_is_refused_at_init(tpool):
    res = result(run(tpool, CONNECT))
    assert res.get("err") == "ConnectionAbortedError", res
    assert "Unauthorized: Missing authentication token" in res["msg"], res
    assert "AuthenticationError" in res["msg"], res


def test_token_mode_client_without_token_raises_authentication_error(tpool):
    # The stock client refuses by itself: RAY_AUTH_MODE=token and no token.
    res = result(run(tpool, CONNECT, token=""))
    assert res.get("err") == "AuthenticationError", res


def test_valid_token_works_and_revoked_token_is_refused(gray_bin, tpool):
    tok = new_token(gray_bin, tpool, "carol")
    out = run(tpool, """
ray.init(ADDR)
@ray.remote
def outer(x):
    @ray.remote
    def inner(y):
        return y + 1
    return ray.get(inner.remote(x)) * 2
print("RESULT" + json.dumps({"ok": ray.get(outer.remote(3))}))
""", token=tok)
    assert result(out) == {"ok": 8}, out.stderr
    listed = json.loads(gray(gray_bin, "token", "list", "--json", "--address", status(tpool)))
    mine = [t for t in listed if t["account"] == "carol"]
    assert len(mine) == 1 and "token" not in mine[0] and tok not in json.dumps(listed)
    gray(gray_bin, "token", "revoke", "--address", status(tpool), mine[0]["id"])
    res = result(run(tpool, CONNECT, token=tok))
    assert res.get("err") == "ConnectionAbortedError", res
    assert "Forbidden: Invalid authentication token" in res["msg"], res


def test_wrong_token_is_refused(gray_bin, tpool):
    tok = new_token(gray_bin, tpool, "dave")
    forged = tok[:-4] + ("0000" if not tok.endswith("0000") else "1111")
    res = result(run(tpool, CONNECT, token=forged))
    assert "Forbidden: Invalid authentication token" in res.get("msg", ""), res


OWNER = """
ray.init(ADDR, namespace="shared")
@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
c = Counter.options(name="counter", lifetime="detached").remote()
ray.get(c.incr.remote())
secret = ray.put("alice's secret")
print("RESULT" + json.dumps({"oid": secret.id.hex(), "aid": c._actor_id.hex()}), flush=True)
sys.stdin.readline()
print("AFTER" + json.dumps({"n": ray.get(c.incr.remote()), "v": ray.get(secret)}), flush=True)
"""

INTRUDER = """
from ray.util.client.common import ClientActorHandle, ClientActorRef, ClientObjectRef
ray.init(ADDR, namespace="shared")
oid, aid = bytes.fromhex(os.environ["OID"]), bytes.fromhex(os.environ["AID"])
res = {}
def attempt(name, fn):
    try:
        res[name] = "ok: %r" % (fn(),)
    except Exception as e:
        msg = str(e).strip()
        res[name] = "%s: %s ... %s" % (type(e).__name__, msg[:300], msg.splitlines()[-1][-300:] if msg else "")

@ray.remote
def steal(h):
    # A task of this account, in a worker: it must not reach the other
    # account's object either.
    from ray.util.client.common import ClientObjectRef
    return ray.get(ClientObjectRef(bytes.fromhex(h)), timeout=20)

attempt("get", lambda: ray.get(ClientObjectRef(oid), timeout=10))
attempt("in_task", lambda: ray.get(steal.remote(os.environ["OID"]), timeout=60))
attempt("get_actor", lambda: ray.get_actor("counter"))
attempt("get_actor_ns", lambda: ray.get_actor("counter", namespace="shared"))
attempt("list", lambda: ray.util.list_named_actors(all_namespaces=True))
handle = ClientActorHandle(ClientActorRef(aid))
attempt("call", lambda: ray.get(handle.incr.remote(), timeout=30))
attempt("kill", lambda: ray.kill(handle))
print("RESULT" + json.dumps(res))
"""

SAME_ACCOUNT = """
ray.init(ADDR, namespace="shared")
c = ray.get_actor("counter")
print("RESULT" + json.dumps({"n": ray.get(c.incr.remote())}))
"""


def test_accounts_are_isolated(gray_bin, tpool):
    alice, alice2, bob = (new_token(gray_bin, tpool, a) for a in ("alice", "alice", "bob"))
    env = client_env(alice)
    env["GRAY_ADDRESS"] = tpool.address
    prog = "import os, sys, json, ray\nADDR = 'ray://' + os.environ['GRAY_ADDRESS']\n" + OWNER
    owner = subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = owner.stdout.readline()
        assert line.startswith("RESULT"), line + owner.stderr.read()
        ids = json.loads(line[len("RESULT"):])
        out = run(tpool, INTRUDER, token=bob, extra_env={"OID": ids["oid"], "AID": ids["aid"]})
        res = result(out)
        assert res["get"].startswith("ValueError") and "not found" in res["get"], res
        assert not res["in_task"].startswith("ok"), res
        for k in ("get_actor", "get_actor_ns"):
            assert res[k].startswith("ValueError") and "Failed to look up actor" in res[k], res
        assert res["list"] == "ok: []", res
        # Refused: by the front end, or (with token auth the foreign actor's
        # method table is in its owner's KV) when the handle is resolved.
        assert not res["call"].startswith("ok") and (
            "doesn't have a handle" in res["call"] or "Failed to look up actor" in res["call"]), res
        # Another session of alice's account shares her named detached actor.
        assert result(run(tpool, SAME_ACCOUNT, token=alice2)) == {"n": 2}
        # ...which bob's ray.kill did not kill, and her object is intact.
        owner.stdin.write("\n")
        owner.stdin.flush()
        after = owner.stdout.readline()
        assert after.startswith("AFTER"), after + owner.stderr.read()
        assert json.loads(after[len("AFTER"):]) == {"n": 3, "v": "alice's secret"}
    finally:
        owner.kill()
        owner.wait()


def test_billing_account_is_the_tokens(gray_bin, bpool):
    erin, frank = new_token(gray_bin, bpool, "erin"), new_token(gray_bin, bpool, "frank")
    # No operator token: refused, and the ledger is unchanged.
    for tok in (None, erin):
        code, _ = http(bpool, "/api/gray/billing/deposit?account=erin&micro_usd=5000000", token=tok, method="POST")
        assert code in (401, 403), code
    op = json.loads(gray(gray_bin, "billing", "--json", "--address", status(bpool)))
    assert "client:erin" not in op["balances_micro_usd"], op
    gray(gray_bin, "billing", "deposit", "--address", status(bpool), "--account", "erin", "--usd", "5")
    # A user sees only its own balance.
    code, body = http(bpool, "/api/gray/billing", token=frank)
    assert code == 200 and json.loads(body)["balances_micro_usd"] == {}, body
    code, body = http(bpool, "/api/gray/billing", token=erin)
    assert json.loads(body)["balances_micro_usd"] == {"client:erin": 5 * USD}, body
    # frank (no money) names erin's account the old way: his session still
    # spends his own, empty account, and is refused work.
    out = run(bpool, """
ray.init(ADDR, runtime_env={"env_vars": {"GRAY_ACCOUNT": "erin"}})
@ray.remote
def f():
    return 1
try:
    print("RESULT" + json.dumps({"ran": ray.get(f.remote(), timeout=60)}))
except Exception as e:
    print("RESULT" + json.dumps({"refused": str(e)[:300]}))
""", token=frank)
    res = result(out)
    assert "refused" in res and "spent its budget" in res["refused"] and "frank" in res["refused"], res
    # erin's session takes its escrow from erin's account while it runs.
    out = run(bpool, """
import urllib.request
ray.init(ADDR)
@ray.remote
def f():
    return 1
ray.get(f.remote())
req = urllib.request.Request("http://127.0.0.1:%s/api/gray/billing" % os.environ["STATUS_PORT"],
                             headers={"Authorization": "Bearer " + os.environ["RAY_AUTH_TOKEN"]})
print("RESULT" + urllib.request.urlopen(req).read().decode().strip())
""", token=erin, extra_env={"STATUS_PORT": str(bpool.status_port)})
    assert result(out)["balances_micro_usd"] == {"client:erin": 0}, out.stdout
    wait_for(lambda: json.loads(http(bpool, "/api/gray/billing", token=erin)[1])["balances_micro_usd"]
             == {"client:erin": 5 * USD})


def test_http_needs_tokens(gray_bin, tpool, metrics_addr):
    code, body = http(tpool, "/api/gray/status")
    assert code == 401 and "Unauthorized: Missing authentication token" in body
    code, body = http(tpool, "/api/gray/status", token="gray_nope")
    assert code == 403 and "Forbidden: Invalid authentication token" in body
    code, body = http(tpool, "/api/authentication_mode")
    assert code == 200 and json.loads(body) == {"authentication_mode": "token"}
    user = new_token(gray_bin, tpool, "gina")
    assert http(tpool, "/api/gray/status", token=user)[0] == 200
    # Token management is the operator's.
    assert http(tpool, "/api/gray/tokens", token=user)[0] == 403
    assert http(tpool, "/api/gray/tokens?account=x", token=user, method="POST")[0] == 403
    # /metrics: open, on its own address only.
    host, port = metrics_addr.split(":")
    code, body = http(tpool, "/metrics", port=int(port))
    assert code == 200 and "gray_" in body
    assert http(tpool, "/metrics", token=user)[0] == 404


@pytest.fixture(scope="module")
def tls_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=1, extra=["--auth-mode", "token", "--tls", "auto"])
    yield p
    p.stop()


def test_tls_client_connects_with_stock_env(gray_bin, tls_pool):
    tok = new_token(gray_bin, tls_pool, "tess")
    state = [a for a in tls_pool.proc.args if a.startswith("/") and "gray-head-state-" in a][0]
    ca = os.path.join(state, "tls-ca.pem")
    # The stock client wants a client certificate too: any will do, here
    # one it makes itself.
    d = tempfile.mkdtemp(prefix="gray-tls-client-")
    key, crt = os.path.join(d, "client.key"), os.path.join(d, "client.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=client"], check=True, capture_output=True)
    tls_env = {"RAY_USE_TLS": "1", "RAY_TLS_CA_CERT": ca, "RAY_TLS_SERVER_CERT": crt, "RAY_TLS_SERVER_KEY": key}
    assert result(run(tls_pool, CONNECT, token=tok, extra_env=tls_env)) == {"ok": 42}
    # A plain-text client does not get through.
    out = run(tls_pool, CONNECT, token=tok, extra_env={"RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "2"}, timeout=240)
    assert "err" in result(out), out.stdout
    # The CLI finds the pool's CA and operator token by itself.
    st = json.loads(gray(gray_bin, "status", "--json", "--address", status(tls_pool)))
    assert st["client_address"] == tls_pool.address


def test_provider_workers_authenticate_nested_calls(gray_bin):
    """A provider's workers make their task's nested ray calls with the
    credential the provider's raylet signs (from the join secret)."""
    head = Pool(gray_bin, num_cpus=0, extra=["--auth-mode", "token"])
    provider = None
    try:
        provider = Provider(gray_bin, head, num_cpus=2)
        tok = new_token(gray_bin, head, "nina")
        out = run(head, """
ray.init(ADDR)
@ray.remote
def outer(x):
    @ray.remote
    def inner(y):
        return y + 1
    return ray.get(inner.remote(x)) * 2, ray.get_runtime_context().get_node_id()
print("RESULT" + json.dumps({"v": ray.get(outer.remote(3))}))
""", token=tok)
        v, node = result(out)["v"]
        # The head offers no CPU: the tasks ran on the provider.
        st = json.loads(gray(gray_bin, "status", "--json", "--address", status(head)))
        heads = [n["node_id"] for n in st["nodes"] if n["head"]]
        assert v == 8 and node not in heads, (out.stderr, node, heads)
    finally:
        if provider:
            provider.stop()
        head.stop()


def test_accounts_have_their_own_kv_and_packages(gray_bin, tpool, tmp_path):
    alice, bob = new_token(gray_bin, tpool, "kv-alice"), new_token(gray_bin, tpool, "kv-bob")
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "whose.py").write_text("OWNER = 'alice'\n")
    # The name the stock client gives alice's package (a hash of its content).
    name = result(run(tpool, """
from ray._private.runtime_env.packaging import get_uri_for_directory
print("RESULT" + json.dumps(get_uri_for_directory(os.environ['WD'], include_gitignore=True)))
""", token=alice, extra_env={"WD": str(wd)}))
    assert name.startswith("gcs://_ray_pkg_"), name
    # Bob plants a package under that name and writes a KV key.
    planted = result(run(tpool, """
import io, zipfile
from ray.experimental import internal_kv
ray.init(ADDR)
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("whose.py", "OWNER = 'bob'\\n")
internal_kv._internal_kv_put(os.environ["NAME"].encode(), buf.getvalue())
internal_kv._internal_kv_put(b"shared-looking-key", b"bob's value")
print("RESULT" + json.dumps(internal_kv._internal_kv_exists(os.environ["NAME"].encode())))
""", token=bob, extra_env={"NAME": name}))
    assert planted is True
    # Alice's client still uploads her own package, her task imports her code,
    # and she sees none of bob's entries.
    res = result(run(tpool, """
from ray.experimental import internal_kv
ray.init(ADDR, runtime_env={"working_dir": os.environ["WD"]})
@ray.remote
def owner():
    import whose
    return whose.OWNER
print("RESULT" + json.dumps({
    "owner": ray.get(owner.remote()),
    "bobs_key": (internal_kv._internal_kv_get(b"shared-looking-key") or b"").decode() or None,
    "keys": [k.decode() for k in internal_kv._internal_kv_list(b"shared")],
}))
""", token=alice, extra_env={"WD": str(wd)}))
    assert res == {"owner": "alice", "bobs_key": None, "keys": []}, res
    # Bob still reads his own entry.
    mine = result(run(tpool, """
from ray.experimental import internal_kv
ray.init(ADDR)
print("RESULT" + json.dumps(internal_kv._internal_kv_get(b"shared-looking-key").decode()))
""", token=bob))
    assert mine == "bob's value"


def test_jobs_and_state_api_show_only_the_callers_account(gray_bin, tpool, tmp_path):
    alice, bob = new_token(gray_bin, tpool, "jobs-alice"), new_token(gray_bin, tpool, "jobs-bob")
    api = "http://127.0.0.1:%d" % tpool.status_port
    (tmp_path / "entry.py").write_text(
        "import ray\n"
        "ray.init()\n"
        "@ray.remote\n"
        "def f(): return 6 * 7\n"
        "print('answer', ray.get(f.remote()))\n"
        "@ray.remote\n"
        "class JobsProbe:\n"
        "    def ping(self): return 1\n"
        "a = JobsProbe.options(name='jobs-probe', lifetime='detached').remote()\n"
        "ray.get(a.ping.remote())\n")
    # Alice submits with the stock SDK; her entrypoint runs as her account.
    sub = result(run(tpool, """
import time
from ray.job_submission import JobSubmissionClient
c = JobSubmissionClient(os.environ["API"])
sid = c.submit_job(entrypoint="python entry.py", runtime_env={"working_dir": os.environ["WD"]})
deadline = time.time() + 120
while time.time() < deadline and not c.get_job_status(sid).is_terminal():
    time.sleep(0.5)
print("RESULT" + json.dumps({"sid": sid, "status": str(c.get_job_status(sid).value), "logs": c.get_job_logs(sid)}))
""", token=alice, extra_env={"API": api, "WD": str(tmp_path)}))
    assert sub["status"] == "SUCCEEDED" and "answer 42" in sub["logs"], sub
    look = """
from ray.job_submission import JobSubmissionClient
c = JobSubmissionClient(os.environ["API"])
res = {"jobs": [j.submission_id for j in c.list_jobs()]}
try:
    c.get_job_info(os.environ["SID"])
    res["info"] = "ok"
except Exception as e:
    res["info"] = type(e).__name__ + ": " + str(e)[:200]
import urllib.request
req = urllib.request.Request(os.environ["API"] + "/api/v0/actors?limit=1000",
                             headers={"Authorization": "Bearer " + os.environ["RAY_AUTH_TOKEN"]})
rows = json.load(urllib.request.urlopen(req))["data"]["result"]["result"]
res["actors"] = [r["name"] for r in rows]
print("RESULT" + json.dumps(res))
"""
    mine = result(run(tpool, look, token=alice, extra_env={"API": api, "SID": sub["sid"]}))
    assert sub["sid"] in mine["jobs"] and mine["info"] == "ok" and "jobs-probe" in mine["actors"], mine
    theirs = result(run(tpool, look, token=bob, extra_env={"API": api, "SID": sub["sid"]}))
    assert sub["sid"] not in theirs["jobs"], theirs
    assert "does not exist" in theirs["info"], theirs
    assert "jobs-probe" not in theirs["actors"], theirs
