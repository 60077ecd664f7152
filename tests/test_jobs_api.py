"""The Ray Jobs API on a gray head, driven by the stock 2.60.0 `ray job` CLI
and JobSubmissionClient: submit (working_dir, runtime_env, metadata,
submission ids, entrypoint resources), status, logs and their WebSocket tail,
stop, delete, list, and the errors stock clients expect. The entrypoints are
real processes on the head; their ray.init() joins the pool through ray://,
or natively through the GCS port when the head serves native Ray."""

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import requests

from conftest import Pool, free_port, run_client_script
from native_pool import NativePool

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def cli_env():
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_JOB_HEADERS"):
        env.pop(k, None)
    return env


def ray_job(*args, timeout=180, check=True):
    """Runs `ray job ARGS...`; returns the CompletedProcess."""
    r = subprocess.run([RAY, "job", *args], capture_output=True, text=True, timeout=timeout, env=cli_env())
    if check:
        assert r.returncode == 0, f"ray job {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def wait_for(pred, what, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def working_dir(files):
    d = tempfile.mkdtemp(prefix="gray-jobwd-")
    for name, body in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(textwrap.dedent(body))
    return d


@pytest.fixture(scope="module")
def head(gray_bin):
    p = Pool(gray_bin, num_cpus=4, extra=["--node-port", "-1"])
    p.url = "http://127.0.0.1:%d" % p.status_port
    yield p
    p.stop()


@pytest.fixture(scope="module")
def client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.url)


def terminal(client, sid):
    from ray.job_submission import JobStatus

    return wait_for(lambda: client.get_job_info(sid) if client.get_job_status(sid) in
                    (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None, sid + " to end")


APP = {
    "helper.py": """
        def greet(x):
            return "hello " + x
    """,
    "script.py": """
        import ray, helper
        ray.init()

        @ray.remote
        def square_and_greet(x):
            import helper                       # from the working_dir, on the worker
            return x * x, helper.greet("task")

        out = ray.get([square_and_greet.remote(i) for i in range(5)])
        print(helper.greet("driver"), sum(a for a, _ in out), out[0][1])
    """,
}


def test_submit_working_dir_remote_task_and_output(head, client):
    d = working_dir(APP)
    r = ray_job("submit", "--address", head.url, "--working-dir", d, "--", "python", "script.py")
    assert "hello driver 30 hello task" in r.stdout, r.stdout
    assert "succeeded" in r.stdout
    sid = r.stdout.split("Job '", 1)[1].split("'", 1)[0]
    assert sid.startswith("raysubmit_")
    info = client.get_job_info(sid)
    assert info.status == "SUCCEEDED" and info.driver_exit_code == 0
    assert info.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")
    # The entrypoint's ray:// session is linked to the submission.
    assert info.job_id and info.driver_info and info.driver_info.id == info.job_id
    assert "Running entrypoint for job %s: python script.py" % sid in client.get_job_logs(sid)


def test_no_wait_status_and_follow_logs(head, client):
    gate = tempfile.mktemp(prefix="gray-gate-")
    d = working_dir({"slow.py": """
        import os, sys, time
        print("started", flush=True)
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.1)
        print("finished", flush=True)
    """})
    r = ray_job("submit", "--address", head.url, "--no-wait", "--working-dir", d, "--", "python", "slow.py", gate)
    sid = r.stdout.split("Job '", 1)[1].split("'", 1)[0]
    wait_for(lambda: "started" in client.get_job_logs(sid), "the job to start")
    st = ray_job("status", "--address", head.url, sid)
    assert "RUNNING" in st.stdout, st.stdout
    follow = subprocess.Popen([RAY, "job", "logs", "-f", "--address", head.url, sid],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        open(gate, "w").close()
        out, err = follow.communicate(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, err
    assert "started" in out and "finished" in out, out
    assert "close code 1000" in err, err
    assert client.get_job_status(sid) == "SUCCEEDED"


def test_failing_job_reports_failed_with_logs_and_exit_code(head, client):
    r = ray_job("submit", "--address", head.url, "--", "python", "-c",
                "import sys; print('boom here'); sys.exit(3)", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed" in r.stdout and "boom here" in r.stdout
    sid = r.stdout.split("Job '", 1)[1].split("'", 1)[0]
    info = client.get_job_info(sid)
    assert info.status == "FAILED" and info.driver_exit_code == 3
    assert info.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert info.message.startswith("Job entrypoint command failed with exit code 3, last available logs")
    assert "boom here" in info.message and "boom here" in client.get_job_logs(sid)


def test_stop_ends_the_whole_process_group(head, client):
    import psutil

    pids = tempfile.mktemp(prefix="gray-pids-")
    d = working_dir({"stubborn.py": """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)        # only SIGKILL ends it
        child = subprocess.Popen(["sleep", "1000"])
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write("%d %d" % (os.getpid(), child.pid))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        while True:
            time.sleep(1)
    """})
    sid = client.submit_job(entrypoint="python stubborn.py " + pids, runtime_env={"working_dir": d})
    wait_for(lambda: os.path.exists(pids), "the job's pids")
    procs = [psutil.Process(int(p)) for p in open(pids).read().split()]
    r = ray_job("stop", "--address", head.url, sid)
    assert "was stopped" in r.stdout + r.stderr
    info = client.get_job_info(sid)
    assert info.status == "STOPPED" and info.message == "Job was intentionally stopped."

    def gone(p):
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for(lambda: all(gone(p) for p in procs), "the job's processes to be gone", timeout=30)
    assert client.stop_job(sid) is False          # already terminal


def test_delete(head, client):
    gate = tempfile.mktemp(prefix="gray-gate-")
    sid = client.submit_job(entrypoint="while [ ! -e %s ]; do sleep 0.1; done" % gate)
    wait_for(lambda: client.get_job_status(sid) == "RUNNING", "RUNNING")
    with pytest.raises(RuntimeError, match="non-terminal state"):
        client.delete_job(sid)
    open(gate, "w").close()
    terminal(client, sid)
    r = ray_job("delete", "--address", head.url, sid)
    assert "deleted successfully" in r.stdout + r.stderr
    r = ray_job("status", "--address", head.url, sid, check=False)
    assert r.returncode != 0 and "does not exist" in r.stdout + r.stderr


def test_list_includes_a_ray_client_session_as_a_driver(head, client):
    drv = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import ray, sys
        ray.init("ray://%s")
        print(ray.get_runtime_context().get_job_id(), flush=True)
        sys.stdin.read()
    """ % head.address)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job_id = drv.stdout.readline().strip()
        assert job_id, "the client did not connect"
        jobs = {j.job_id: j for j in client.list_jobs() if j.type == "DRIVER"}
        assert job_id in jobs and jobs[job_id].status == "RUNNING", jobs
        assert jobs[job_id].submission_id is None and jobs[job_id].driver_info.id == job_id
        r = ray_job("list", "--address", head.url)
        assert "DRIVER" in r.stdout and job_id in r.stdout
        # A DRIVER job has no logs to give, as stock answers.
        with pytest.raises(RuntimeError, match="Can only get logs of submission type jobs"):
            client.get_job_logs(job_id)
    finally:
        drv.stdin.close()
        drv.wait(timeout=60)
    wait_for(lambda: client.get_job_info(job_id).status == "SUCCEEDED", "the driver job to end")


def test_duplicate_submission_id_is_refused(head, client):
    ray_job("submit", "--address", head.url, "--submission-id", "gray-dup-1", "--", "true")
    r = ray_job("submit", "--address", head.url, "--submission-id", "gray-dup-1", "--", "true", check=False)
    assert r.returncode != 0
    assert "Job with submission_id gray-dup-1 already exists" in r.stdout + r.stderr


def test_metadata_and_runtime_env_env_vars(head, client):
    r = ray_job("submit", "--address", head.url, "--submission-id", "gray-meta-1",
                "--metadata-json", json.dumps({"owner": "alice"}),
                "--runtime-env-json", json.dumps({"env_vars": {"GREETING": "hi there"}}),
                "--", "python", "-c", "import os; print('GREETING=' + os.environ['GREETING'])")
    assert "GREETING=hi there" in r.stdout
    info = client.get_job_info("gray-meta-1")
    assert info.metadata == {"owner": "alice"}
    assert info.runtime_env["env_vars"] == {"GREETING": "hi there"}


def test_pip_runtime_env_fails_setup(head, client):
    sid = client.submit_job(entrypoint="echo never", runtime_env={"pip": ["surely-not-a-package-gray-xyz==1.0"]})
    info = terminal(client, sid)
    assert info.status == "FAILED" and info.error_type == "RUNTIME_ENV_SETUP_FAILURE"
    assert info.message.startswith("runtime_env setup failed:") and "surely-not-a-package-gray-xyz" in info.message
    assert "No matching distribution" in info.message, info.message
    assert "never" not in client.get_job_logs(sid).replace("echo never", "")


def test_pip_runtime_env_runs_entrypoint_and_tasks_in_it(head, client):
    # The base venv's six is 1.17: the pin shows in the entrypoint's python
    # and in the tasks of its driver (the job's runtime_env).
    src = ("import ray, six; ray.init(); f = ray.remote(lambda: __import__('six').__version__); "
           "print('ENTRY', six.__version__, 'TASK', ray.get(f.remote()))")
    sid = client.submit_job(entrypoint="python -c " + shlex.quote(src), runtime_env={"pip": ["six==1.16.0"]})
    info = terminal(client, sid)
    logs = client.get_job_logs(sid)
    assert info.status == "SUCCEEDED", (info.message, logs)
    assert "ENTRY 1.16.0 TASK 1.16.0" in logs, logs
    assert "Successfully installed six-1.16.0" in logs, logs


def test_py_modules_reach_the_tasks_of_a_client_driver(head, client):
    root = tempfile.mkdtemp(prefix="gray-jobpm-")
    os.makedirs(os.path.join(root, "gray_job_pm"))
    with open(os.path.join(root, "gray_job_pm", "__init__.py"), "w") as f:
        f.write("V = 'job-pm'\n")
    src = ("import ray; ray.init(); f = ray.remote(lambda: __import__('gray_job_pm').V); "
           "print('TASK', ray.get(f.remote()))")
    sid = client.submit_job(entrypoint="python -c " + shlex.quote(src),
                            runtime_env={"py_modules": [os.path.join(root, "gray_job_pm")]})
    info = terminal(client, sid)
    logs = client.get_job_logs(sid)
    assert info.status == "SUCCEEDED", (info.message, logs)
    assert "TASK job-pm" in logs, logs


def test_job_outlives_its_submitting_client(head, client):
    gate = tempfile.mktemp(prefix="gray-gate-")
    submitter = subprocess.Popen(
        [RAY, "job", "submit", "--address", head.url, "--submission-id", "gray-outlive-1", "--",
         "sh", "-c", "echo up; while [ ! -e %s ]; do sleep 0.1; done; echo survived" % gate],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
    def running():
        try:
            return "up" in client.get_job_logs("gray-outlive-1")
        except RuntimeError:  # not submitted yet
            return False
    wait_for(running, "the job to run")
    submitter.send_signal(signal.SIGKILL)          # the laptop goes away
    submitter.wait(timeout=30)
    open(gate, "w").close()
    info = terminal(client, "gray-outlive-1")
    assert info.status == "SUCCEEDED", info
    assert client.get_job_logs("gray-outlive-1").endswith("survived\n")


def test_entrypoint_resources_are_held(head, client):
    gate = tempfile.mktemp(prefix="gray-gate-")
    big = client.submit_job(entrypoint="while [ ! -e %s ]; do sleep 0.1; done" % gate, entrypoint_num_cpus=4)
    wait_for(lambda: client.get_job_status(big) == "RUNNING", "the 4-CPU job to run")
    # The entrypoint holds its CPUs in the head's ledger, as tasks see it.
    r = run_client_script(head, "import os, ray; ray.init(os.environ['GRAY_ADDRESS']); "
                                "print('AVAIL', ray.available_resources().get('CPU', 0))")
    assert "AVAIL 0" in r.stdout, r.stdout + r.stderr
    small = client.submit_job(entrypoint="echo small ran", entrypoint_num_cpus=1)
    time.sleep(1)  # a chance to start wrongly: it must stay pending while the CPUs are held
    info = client.get_job_info(small)
    assert info.status == "PENDING", info
    assert "It may be waiting for resources" in info.message
    open(gate, "w").close()
    assert terminal(client, small).status == "SUCCEEDED"
    assert terminal(client, big).status == "SUCCEEDED"
    # More than the head has fails at once.
    r = ray_job("submit", "--address", head.url, "--entrypoint-num-gpus", "1", "--", "true", check=False)
    assert r.returncode == 1 and "could not be scheduled" in r.stdout, r.stdout


def test_malformed_requests_and_unknown_ids(head, client):
    r = requests.post(head.url + "/api/jobs/", data="{not json", timeout=30)
    assert r.status_code == 400
    r = requests.post(head.url + "/api/jobs/", json={"entrypoint": 5}, timeout=30)
    assert r.status_code == 400 and "entrypoint must be a string" in r.text
    r = requests.get(head.url + "/api/jobs/raysubmit_nope", timeout=30)
    assert r.status_code == 404 and r.text == "Job raysubmit_nope does not exist"
    with pytest.raises(RuntimeError, match="404"):
        client.get_job_info("raysubmit_nope")
    r = ray_job("logs", "--address", head.url, "raysubmit_nope", check=False)
    assert r.returncode != 0 and "does not exist" in r.stdout + r.stderr
    # The server keeps serving.
    assert requests.get(head.url + "/api/version", timeout=30).json()["ray_version"] == "2.60.0"
    assert client.get_job_status(client.submit_job(entrypoint="true")) in ("PENDING", "RUNNING", "SUCCEEDED")


def test_address_through_ray_client(head):
    r = ray_job("submit", "--address", "ray://" + head.address, "--", "echo", "via-ray-client")
    assert "via-ray-client" in r.stdout


@pytest.fixture(scope="module")
def native_head(gray_bin):
    port = free_port()
    p = NativePool(gray_bin, num_cpus=2, extra=["--status-port", str(port)])
    p.url = "http://127.0.0.1:%d" % port
    yield p
    p.stop()


def test_native_head_submit_via_gcs_address(native_head):
    from ray.job_submission import JobSubmissionClient

    d = working_dir(APP)
    # A bare HOST:PORT is the GCS: the client reads the dashboard's address
    # from its KV.
    r = ray_job("submit", "--address", native_head.address, "--working-dir", d,
                "--submission-id", "gray-native-1", "--", "python", "script.py")
    assert "hello driver 30 hello task" in r.stdout, r.stdout + r.stderr
    assert "Connected to Ray cluster" in r.stdout     # a native driver, not ray://
    # ray:// finds the same server through the Ray Client's DASHBOARD_URL.
    r = ray_job("status", "--address", "ray://127.0.0.1:%d" % native_head.port, "gray-native-1")
    assert "succeeded" in r.stdout and native_head.url in r.stdout, r.stdout
    client = JobSubmissionClient(native_head.url)
    info = client.get_job_info("gray-native-1")
    # The native GCS job entry carries the submission id: job_id and
    # driver_info come from it.
    assert info.job_id and info.driver_info.id == info.job_id and int(info.driver_info.pid) > 0
    assert client.get_job_info(info.job_id).submission_id == "gray-native-1"
    # A native driver started by hand is a DRIVER job.
    out = native_head.check("""
        import ray
        ray.init(address=ADDRESS)
        print("JOB", ray.get_runtime_context().get_job_id())
        ray.shutdown()
    """)
    job_id = out.split("JOB ", 1)[1].split()[0]
    jobs = {j.job_id: j for j in client.list_jobs()}
    assert jobs[job_id].type == "DRIVER" and jobs[job_id].submission_id is None
