"""runtime_env pip / uv / py_modules through the stock Ray Client (ray://)
and natively (stock drivers and core workers on gray's raylet): real pip and
uv installs from the package index, into virtualenvs layered on the node's
interpreter."""

import importlib.util
import json
import os
import time

import pytest

from conftest import Pool, Provider, connected, node_of, run_client_script
from native_pool import make_target

# The base venv has six 1.17.x: a pin to 1.16.0 is visible only if honoured.
PIN = "six==1.16.0"
# A tiny pure-python package the base venv does not have.
NEW_PKG, NEW_MOD = "text-unidecode==1.3", "text_unidecode"


def test_base_interpreter_differs():
    import six

    assert six.__version__ != "1.16.0", "pick a pin that differs from the base venv's six"
    assert importlib.util.find_spec(NEW_MOD) is None, NEW_MOD + " is installed in the base venv"


@pytest.fixture(scope="module")
def renv_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=4)
    yield p
    p.stop()


@pytest.fixture
def client(renv_pool):
    import ray

    ray.init("ray://" + renv_pool.address)
    try:
        yield ray
    finally:
        ray.shutdown()


def builds(pool, dir_):
    """How many times the pool built the env in dir_ (its log says)."""
    return sum(1 for line in pool.logs().splitlines() if "built python env" in line and dir_ in line)


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_pinned_version_honoured_and_cached(client, renv_pool, tool):
    ray = client

    @ray.remote
    def probe():
        import sys

        import six

        return six.__version__, six.__file__, sys.prefix, sys.executable

    t0 = time.monotonic()
    ver, path, prefix, exe = ray.get(probe.options(runtime_env={tool: [PIN]}).remote())
    first = time.monotonic() - t0
    assert ver == "1.16.0", (ver, path)
    assert path.startswith(prefix + os.sep), (path, prefix)
    assert "/runtime_resources/pip/" in prefix and exe.startswith(prefix), (prefix, exe)
    ready = os.path.join(prefix, ".gray-ready")
    mark = os.stat(ready).st_mtime_ns, open(ready).read()
    assert json.loads(mark[1])["spec"]["tool"] == tool

    # The same env with other env_vars: another worker, the same virtualenv.
    t0 = time.monotonic()
    again = ray.get(probe.options(runtime_env={tool: [PIN], "env_vars": {"GRAY_RENV": "2"}}).remote())
    second = time.monotonic() - t0
    assert again[0] == "1.16.0" and again[2] == prefix
    assert (os.stat(ready).st_mtime_ns, open(ready).read()) == mark
    assert builds(renv_pool, prefix) == 1
    print(f"\n{tool} {PIN}: first task {first:.2f}s (build), second task in a new worker {second:.2f}s (cached)")

    # Work without the env still sees the base's six.
    @ray.remote
    def plain():
        import six

        return six.__version__

    assert ray.get(plain.remote()) != "1.16.0"


def test_package_not_in_base_becomes_importable(client):
    ray = client

    @ray.remote(runtime_env={"pip": {"packages": [NEW_PKG], "pip_check": False}})
    def use():
        import text_unidecode

        return text_unidecode.unidecode("héllo")

    assert ray.get(use.remote()) == "hello"

    @ray.remote(runtime_env={"pip": [NEW_PKG]})
    class A:
        def use(self):
            import ray  # the base's packages stay importable
            import text_unidecode

            return text_unidecode.unidecode("ça"), ray.__version__

    assert ray.get(A.remote().use.remote()) == ("ca", "2.60.0")


def test_nonexistent_package_fails_setup(client):
    ray = client

    @ray.remote
    def f():
        return 1

    with pytest.raises(ray.exceptions.RuntimeEnvSetupError) as err:
        ray.get(f.options(runtime_env={"pip": ["surely-not-a-package-gray-xyz==1.0"]}).remote())
    assert "surely-not-a-package-gray-xyz" in str(err.value)
    assert "No matching distribution" in str(err.value), str(err.value)

    @ray.remote(runtime_env={"uv": ["surely-not-a-package-gray-xyz==1.0"]})
    class A:
        def ping(self):
            return 1

    with pytest.raises(ray.exceptions.RuntimeEnvSetupError) as err:
        ray.get(A.remote().ping.remote())
    assert "surely-not-a-package-gray-xyz" in str(err.value)
    # The server keeps serving.
    assert ray.get(f.remote()) == 1


def test_unsupported_fields_fail_setup(client):
    """What the stock client lets through but gray does not set up fails as
    RuntimeEnvSetupError naming it (the client validates the rest itself)."""
    ray = client

    @ray.remote
    def f():
        return 1

    with pytest.raises(ray.exceptions.RuntimeEnvSetupError) as err:
        ray.get(f.options(runtime_env={"conda": {"dependencies": ["six"]}}).remote())
    assert "conda" in str(err.value)
    # Packages from outside the cluster are not fetched.
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError) as err:
        ray.get(f.options(runtime_env={"py_modules": ["s3://bucket/gray_mod.zip"]}).remote())
    assert "only packages uploaded by the client" in str(err.value)
    assert ray.get(f.remote()) == 1


def test_unsupported_job_env_fails_tasks_not_the_connection(renv_pool):
    src = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], runtime_env={"conda": {"dependencies": ["six"]}})

@ray.remote
def f():
    return 1

try:
    ray.get(f.remote())
except ray.exceptions.RuntimeEnvSetupError as e:
    print("SETUP FAILED", "conda" in str(e))
"""
    out = run_client_script(renv_pool, src)
    assert out.returncode == 0, out.stderr
    assert "SETUP FAILED True" in out.stdout, out.stdout + out.stderr


def test_job_env_py_modules_pip_and_progress(renv_pool, tmp_path):
    pkg = tmp_path / "gray_renv_mod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VALUE = 'from py_modules'\n")
    (pkg / "skip.log").write_text("excluded")
    src = f"""
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], runtime_env={{
    "py_modules": [{str(pkg)!r}], "excludes": ["*.log"], "pip": ["six==1.15.0"],
    "config": {{"setup_timeout_seconds": 300}}}})

@ray.remote
def f():
    import gray_renv_mod, six
    here = os.path.dirname(gray_renv_mod.__file__)
    return gray_renv_mod.VALUE, six.__version__, sorted(os.listdir(here))

print("RESULT", ray.get(f.remote()))
"""
    out = run_client_script(renv_pool, src, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "RESULT ('from py_modules', '1.15.0', ['__init__.py'])" in out.stdout, out.stdout
    # pip's output reached the driver as log lines.
    assert "Successfully installed six-1.15.0" in out.stdout + out.stderr, out.stdout + out.stderr


def test_provider_builds_the_env(gray_bin):
    """The spec travels with the task: the provider's raylet builds the env
    in its own session dir."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = Pool(gray_bin, num_cpus=1)
    provider = None
    try:
        provider = Provider(gray_bin, head, num_cpus=1)
        for ray in connected(head):
            node = node_of(ray, provider)

            @ray.remote(runtime_env={"pip": [PIN]})
            def probe():
                import sys

                import six

                return six.__version__, sys.prefix, ray.get_runtime_context().get_node_id()

            st = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            ver, prefix, where = ray.get(probe.options(scheduling_strategy=st).remote())
            assert (ver, where) == ("1.16.0", node)
            assert builds(provider, prefix) == 1 and builds(head, prefix) == 0
    finally:
        if provider:
            provider.stop()
        head.stop()


@pytest.fixture(scope="module")
def native(gray_bin):
    p = make_target(gray_bin)
    yield p
    p.stop()


def test_native_pip_and_uv(native):
    native.check("""
        import os, ray
        ray.init(address=ADDRESS)
        pinned = {"pip": ["six==1.16.0"]}

        @ray.remote
        def probe():
            import sys, six
            return six.__version__, sys.executable

        ver, exe = ray.get(probe.options(runtime_env=pinned).remote())
        assert ver == "1.16.0", ver
        assert "/runtime_resources/pip/" in exe, exe
        assert ray.get(probe.remote())[0] != "1.16.0"  # the default env is untouched

        @ray.remote(runtime_env={"uv": ["text-unidecode==1.3"]})
        class A:
            def use(self):
                import text_unidecode
                return text_unidecode.unidecode("héllo")

        assert ray.get(A.remote().use.remote()) == "hello"

        try:
            ray.get(probe.options(runtime_env={"pip": ["surely-not-a-package-gray-xyz==1.0"]}).remote(), timeout=300)
            raise SystemExit("no error")
        except ray.exceptions.RuntimeEnvSetupError as e:
            assert "surely-not-a-package-gray-xyz" in str(e), str(e)
            assert "No matching distribution" in str(e), str(e)
        assert ray.get(probe.options(runtime_env=pinned).remote())[0] == "1.16.0"
        ray.shutdown()
    """, timeout=600)


def test_native_pip_progress_reaches_the_driver(native):
    # pip's output while the node builds the env is printed by the driver
    # (as stock Ray does with RAY_RUNTIME_ENV_LOG_TO_DRIVER_ENABLED=1).
    out = native.check("""
        import sys, time, ray

        class Tee:
            def __init__(self, inner):
                self.inner, self.seen = inner, []
            def write(self, s):
                self.seen.append(s)
                return self.inner.write(s)
            def flush(self):
                self.inner.flush()
            def text(self):
                return "".join(self.seen)

        tee = sys.stdout = Tee(sys.stdout)
        ray.init(address=ADDRESS)

        @ray.remote(runtime_env={"pip": ["six==1.15.0"]})
        def probe():
            import six
            return six.__version__

        assert ray.get(probe.remote(), timeout=300) == "1.15.0"
        deadline = time.monotonic() + 60
        while "Successfully installed six-1.15.0" not in tee.text():
            assert time.monotonic() < deadline, "no pip output reached the driver"
            time.sleep(0.2)
        line = next(l for l in tee.text().splitlines() if "Successfully installed six-1.15.0" in l)
        print("LINE", line)
        ray.shutdown()
    """, timeout=600)
    assert "runtime_env" in out.split("LINE", 1)[1], out
