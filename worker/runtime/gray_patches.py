"""gray worker runtime: the parts of the stock client a gray worker changes
(reference counting, GPU ids, exit_actor), its actor handle class, and the
graceful actor exit. Imported by gray_worker.py, shipped beside it."""

import inspect
import os
import pickle
import sys


def handle_class(common):
    """The actor handle class of this worker's runtime."""
    base = common.ClientActorHandle

    class GrayActorHandle(base):
        """An actor handle whose method table comes from the pool's KV,
        where the actor published it when it was created."""

        def _init_class_info(self):
            import time

            from ray.experimental import internal_kv

            key = self.actor_ref.id.hex().encode()
            deadline = time.time() + 300
            while True:
                try:
                    data = internal_kv._internal_kv_get(key, namespace=b"gray_actor_info")
                except ConnectionError as e:
                    # The front end answers NOT_FOUND for an actor of another
                    # account (with token auth): no such actor here.
                    if "not found" not in str(e):
                        raise
                    raise ValueError("Failed to look up actor %s: it does not exist" % key.decode()) from None
                if data:
                    break
                if time.time() > deadline:
                    raise RuntimeError("actor %s never published its methods" % key.decode())
                time.sleep(0.05)
            num_returns, params = pickle.loads(data)
            self._method_num_returns = num_returns
            self._method_signatures = {m: inspect.Signature(parameters=p) for m, p in params.items()}

        @property
        def _ray_method_num_returns(self):
            if self._method_num_returns is None:
                self._init_class_info()
            return self._method_num_returns

        @property
        def _ray_method_signatures(self):
            if self._method_signatures is None:
                self._init_class_info()
            return {m: list(sig.parameters.values()) for m, sig in self._method_signatures.items()}

    return GrayActorHandle


def patch_refcounting(conn):
    """Route this worker's reference counts to the raylet: a ref (or actor
    handle) the worker deserializes is retained when its local count goes
    0 -> 1 and released at 1 -> 0, over the same ordered socket as task
    results, so objects a task or actor keeps stay alive and nothing is
    freed before the result that holds it is stored."""
    from ray.util.client import worker as client_worker

    def call_retain(self, id):
        self.reference_count[id] += 1
        if self.reference_count[id] == 1:
            conn.send({"t": "refs", "retain": [id.hex()]})

    def call_release(self, id):
        if self.closed:
            return
        self.reference_count[id] -= 1
        if self.reference_count[id] == 0:
            del self.reference_count[id]
            conn.send({"t": "refs", "release": [id.hex()]})

    client_worker.Worker.call_retain = call_retain
    client_worker.Worker.call_release = call_release


class ActorExit(SystemExit):
    """Raised by ray.actor.exit_actor() inside a gray actor."""


def patch_exit_actor(in_actor):
    """ray.actor.exit_actor() checks for a core worker in WORKER_MODE, which a
    gray worker is not; inside a gray actor (in_actor() is true) it exits the
    actor gracefully."""
    import ray.actor

    def exit_actor():
        if not in_actor():
            raise TypeError(
                "exit_actor API is called on a non-actor worker. Call this API inside an actor method "
                "if you'd like to exit the actor gracefully."
            )
        raise ActorExit(0)

    ray.actor.exit_actor = exit_actor


def patch_gpu_ids():
    """In client mode ray.get_gpu_ids() returns []; inside a gray task it
    returns the GPUs the raylet assigned (its CUDA_VISIBLE_DEVICES)."""
    from ray.util.client import api

    def get_gpu_ids(self):
        ids = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return [int(x) for x in ids.split(",") if x.strip().isdigit()]

    api._ClientAPI.get_gpu_ids = get_gpu_ids


def exit_gracefully(rt, task):
    """An intentional actor exit (__ray_terminate__, exit_actor()): the
    caller observes the actor's death, the process's atexit handlers run
    (unlike ray.kill), and the actor is not restarted."""
    import atexit

    from ray.exceptions import ActorDiedError

    err = ActorDiedError()
    err.error_msg = (
        "The actor is dead because its worker process exited intentionally: "
        "exit_actor() or __ray_terminate__ was called."
    )
    rt.send_error(task, err, user=False)
    flush_std()
    try:
        # This process's own Ray client goes last: the handlers may use it.
        import ray._private.worker as ray_worker

        atexit.unregister(ray_worker.shutdown)
    except Exception:  # noqa: BLE001
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    flush_std()
    rt.conn.flush()
    try:
        handle = rt.handle_class(rt.common.ClientActorRef(bytes.fromhex(rt.actor_id)))
        # The raylet ends this process and marks the actor dead for good.
        rt.ray.kill(handle, no_restart=True)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(0)


def flush_std():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def use_host_pid(host_pid):
    """In a sandbox the worker is a low pid in its own pid namespace. The
    node reports its host pid (status, log prefixes) and users compare
    os.getpid() across tasks and signal it from outside, so this process
    answers os.getpid() with the host pid, and os.kill() of that pid means
    itself. Forked children go back to the real functions."""
    real_getpid, real_kill = os.getpid, os.kill
    inner = real_getpid()
    if host_pid == inner:
        return

    def getpid():
        return host_pid if real_getpid() == inner else real_getpid()

    def kill(pid, sig):
        return real_kill(inner if pid == host_pid and real_getpid() == inner else pid, sig)

    def restore():
        os.getpid, os.kill = real_getpid, real_kill

    os.getpid, os.kill = getpid, kill
    os.register_at_fork(after_in_child=restore)
    _psutil_knows_host_pid(host_pid, inner, real_getpid)


def _psutil_knows_host_pid(host_pid, inner, real_getpid):
    """psutil reads /proc of the sandbox's pid namespace, where the host pid
    does not exist: map it (and psutil.Process() with no pid, which asks the
    patched os.getpid) to this process, so code that inspects itself with
    psutil (Ray's own runtime_env hooks, memory monitors) keeps working."""
    try:
        import psutil
    except ImportError:
        return

    def inner_pid(pid):
        if real_getpid() != inner:
            return pid  # a forked child: its pids are its own
        if pid is None or pid == host_pid:
            return inner
        return pid

    real_init = psutil.Process.__init__
    real_exists = psutil.pid_exists

    def init(self, pid=None):
        real_init(self, inner_pid(pid))

    real_pid = psutil.Process.pid

    def pid(self):
        p = real_pid.fget(self)
        return host_pid if p == inner and real_getpid() == inner else p

    psutil.Process.__init__ = init
    psutil.Process.pid = property(pid)
    psutil.pid_exists = lambda pid: real_exists(inner_pid(pid))
