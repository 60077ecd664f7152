"""gray worker runtime.

A Python process started by the gray raylet. It connects back to the raylet
over a Unix socket (length-prefixed JSON headers followed by raw blobs) to
receive tasks, and to the pool's Ray Client front end with the stock `ray`
package so that user code inside a task can call ray.get/put/remote/wait.

Client pickles arrive as the stock client produced them: Ray references are
PickleStub persistent ids, which this runtime maps to client-side handles of
its own connection. Results are pickled the same way the client pickles puts,
so the stock client can load them.
"""

import argparse
import inspect
import io
import json
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import traceback

import gray_patches  # shipped beside this script
from gray_patches import flush_std

_HDR = struct.Struct("<I")
# The first item of an anchor's value (see Runtime.anchor); the front end
# recognises anchors by it.
_ANCHOR_MARKER = "gray-actor-anchor"
_RUNTIME = None


class Conn:
    """Framed messages over the raylet socket.

    Every outgoing message goes through one queue and one writer thread, so
    reference changes (sent from __del__ at arbitrary points, which must
    never block or interleave with a half-written frame) reach the raylet in
    order with task results."""

    def __init__(self, path):
        import queue

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb", buffering=1 << 20)
        self.out = queue.SimpleQueue()
        threading.Thread(target=self._writer, daemon=True, name="gray-writer").start()

    def send(self, header, blobs=()):
        self.out.put((header, blobs))

    def flush(self, timeout=10):
        """Wait until everything sent so far is written to the socket."""
        ev = threading.Event()
        self.out.put((None, ev))
        ev.wait(timeout)

    def _writer(self):
        while True:
            header, blobs = self.out.get()
            if header is None:
                blobs.set()
                continue
            header["blobs"] = [len(b) for b in blobs]
            h = json.dumps(header).encode()
            try:
                self.sock.sendall(_HDR.pack(len(h)) + h)
                for b in blobs:
                    if len(b):
                        self.sock.sendall(b)
            except OSError:
                os._exit(0)

    def _read(self, n):
        data = self.rfile.read(n)
        if data is None or len(data) != n:
            raise EOFError("raylet closed the connection")
        return data

    def recv(self):
        (n,) = _HDR.unpack(self._read(4))
        header = json.loads(self._read(n))
        blobs = [self._read(k) if k else b"" for k in header.get("blobs", [])]
        return header, blobs


_ANY_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
)


class Runtime:
    def __init__(self, conn, worker_id):
        self.conn = conn
        self.worker_id = worker_id
        self.functions = {}  # payload id -> callable
        self.tasks = []
        self.cv = threading.Condition()
        self.current = None
        self.cancelled = set()
        self.unacked = {}
        self.rpc_seq = 0
        self.rpc_waiters = {}
        self.instance = None
        self.actor_id = None
        self.actor_name = "Actor"
        self.is_async = False
        self.pool = None
        self.pools = {}
        self.method_groups = {}
        self.group_limits = {}
        import ray
        from ray.util.client import common
        from ray.util.client import client_pickler

        self.ray = ray
        self.common = common
        self.client_pickler = client_pickler
        self.GrayActorHandle = gray_patches.handle_class(common)

    # ---- references -------------------------------------------------------

    def handle_class(self, actor_ref):
        return self.GrayActorHandle(actor_ref)

    def remote_func(self, oid, options, name="remote_function"):
        c = self.common
        f = c.ClientRemoteFunc.__new__(c.ClientRemoteFunc)
        f._lock = threading.Lock()
        f._func = None
        f._name = name
        f._signature = _ANY_SIGNATURE
        f._ref = c.ClientObjectRef(oid)
        f._client_side_ref = c.ClientSideRefID.generate_id()
        f._options = options
        return f

    def actor_class(self, oid, options, name="Actor"):
        c = self.common
        a = c.ClientActorClass.__new__(c.ClientActorClass)
        a._lock = threading.Lock()
        a.actor_cls = None
        a._name = name
        a._ref = c.ClientObjectRef(oid)
        a._client_side_ref = c.ClientSideRefID.generate_id()
        a._options = options
        return a

    def unpickler(self, data, task):
        rt = self
        c = self.common

        class TaskUnpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                t = pid.type
                if t == "Ray":
                    return rt.ray
                if t == "Object":
                    return c.ClientObjectRef(pid.ref_id)
                if t == "Actor":
                    return rt.handle_class(c.ClientActorRef(pid.ref_id))
                if t == "RemoteFunc":
                    return rt.remote_func(pid.ref_id, pid.baseline_options)
                if t == "RemoteActor":
                    return rt.actor_class(pid.ref_id, pid.baseline_options)
                if t == "RemoteMethod":
                    h = rt.handle_class(c.ClientActorRef(pid.ref_id))
                    return getattr(h, pid.name)
                if t in ("RemoteFuncSelfReference", "RemoteActorSelfReference"):
                    oid = bytes.fromhex(task["self_refs"][pid.ref_id.hex()])
                    opts = task.get("_baseline")
                    if t == "RemoteFuncSelfReference":
                        return rt.remote_func(oid, opts, task.get("name", "f"))
                    return rt.actor_class(oid, opts, task.get("name", "Actor"))
                raise pickle.UnpicklingError("unknown stub type %r" % (t,))

        return TaskUnpickler(io.BytesIO(data))

    def dumps(self, value):
        """Pickle a result; also returns the refs it contains and the actor
        handles (or methods) it carries."""
        contained, handles = [], []
        base = self.client_pickler.ClientPickler

        class RecordingPickler(base):
            def persistent_id(self, obj):
                stub = super().persistent_id(obj)
                if stub is not None and stub.type in ("Object", "RemoteFunc", "RemoteActor"):
                    contained.append(stub.ref_id.hex())
                elif stub is not None and stub.type in ("Actor", "RemoteMethod"):
                    handles.append(obj)
                return stub

        with io.BytesIO() as f:
            RecordingPickler("", f, protocol=5).dump(value)
            data = f.getvalue()
        # The pickler class is freed only by the cycle collector: its closure
        # must not keep the handles (and so their actors) alive.
        found = list(handles)
        handles.clear()
        return data, contained, found

    def anchor(self, handles):
        """Put an anchor for the actor handles a result carries: the result
        contains the anchor, and the pool keeps the actors alive while the
        anchor exists, so an actor this worker created and returns outlives
        this worker's own handle (as a returned handle does in Ray)."""
        return self.ray.put((_ANCHOR_MARKER, handles))

    # ---- execution --------------------------------------------------------

    def load_function(self, task, blobs):
        fid = task["fn"]
        fn = self.functions.get(fid)
        if fn is None:
            fn = self.override(self.unpickler(blobs[task["fn_blob"]], task).load())
            self.functions[fid] = fn
        return fn

    def load_args(self, task, blobs):
        """Unpickle (args, kwargs) and replace top-level refs by their values."""
        deps = {}
        for hex_id, idx in task.get("deps", {}).items():
            deps[bytes.fromhex(hex_id)] = self.unpickler(blobs[idx], task).load()
        args, kwargs = self.unpickler(blobs[task["args_blob"]], task).load()
        ref_type = self.common.ClientObjectRef

        def resolve(v):
            if isinstance(v, ref_type) and v.id in deps:
                return deps[v.id]
            return v

        return [resolve(a) for a in args], {k: resolve(v) for k, v in kwargs.items()}

    def split_returns(self, task, result):
        n = task.get("num_returns", 1)
        if n == 0:
            return []
        if n == 1:
            return [result]
        if not isinstance(result, (tuple, list)) or len(result) != n:
            got = "%d values" % len(result) if isinstance(result, (tuple, list)) else type(result).__name__
            raise ValueError("Task returned %s, but num_returns=%d" % (got, n))
        return list(result)

    def send_result(self, task, values):
        out_blobs, contained, anchors = [], [], []
        for v in values:
            b, refs, handles = self.dumps(v)
            if handles:
                a = self.anchor(handles)
                anchors.append(a)
                refs.append(a.id.hex())
            out_blobs.append(b)
            contained.append(refs)
        flush_std()
        if any(contained):
            # Keep the returned refs alive until the raylet has stored the
            # result (which then holds them); it acks that.
            with self.cv:
                self.unacked[task["task_id"]] = (values, anchors)
        self.conn.send({"t": "done", "task_id": task["task_id"], "contained": contained}, out_blobs)

    def fail(self, task, name, exc, tb, actor_repr=None):
        flush_std()
        if isinstance(exc, KeyboardInterrupt):
            from ray.exceptions import TaskCancelledError

            self.send_error(task, TaskCancelledError(), user=False)
            return
        self.send_error(task, self.task_error(name, tb, exc, actor_repr), user=True)

    def run_task(self, task, blobs):
        name = task.get("name", "f")
        if task.get("baseline_blob", -1) >= 0:
            task["_baseline"] = pickle.loads(blobs[task["baseline_blob"]])
        try:
            fn = self.load_function(task, blobs)
            args, kwargs = self.load_args(task, blobs)
            result = fn(*args, **kwargs)
            values = self.split_returns(task, result)
            self.send_result(task, values)
        except BaseException as e:  # noqa: BLE001 - every failure goes to the caller
            self.fail(task, name, e, user_traceback())

    # ---- actors -----------------------------------------------------------

    def create_actor(self, task, blobs):
        import inspect as _inspect

        name = task.get("name", "Actor")
        if task.get("baseline_blob", -1) >= 0:
            task["_baseline"] = pickle.loads(blobs[task["baseline_blob"]])
        try:
            cls = self.unpickler(blobs[task["fn_blob"]], task).load()
            args, kwargs = self.load_args(task, blobs)
            self.actor_id = task.get("actor_id")
            self.actor_name = getattr(cls, "__name__", name)
            self.instance = cls(*args, **kwargs)
            methods = _inspect.getmembers(cls, lambda m: _inspect.isfunction(m) or _inspect.ismethod(m))
            self.is_async = any(_inspect.iscoroutinefunction(m) for _, m in methods)
            concurrency = task.get("max_concurrency") or (1000 if self.is_async else 1)
            groups = dict(task.get("concurrency_groups") or {})
            # Methods declare their group with @ray.method(concurrency_group=...).
            self.method_groups = {
                mname: getattr(m, "__ray_concurrency_group__", None) for mname, m in methods
            }
            self.group_limits = groups
            if self.is_async:
                import asyncio

                self.loop = asyncio.new_event_loop()
                self.sems = {}
                started = threading.Event()

                def run_loop():
                    asyncio.set_event_loop(self.loop)
                    self.sems[None] = asyncio.Semaphore(concurrency)
                    for g, n in groups.items():
                        self.sems[g] = asyncio.Semaphore(n)
                    started.set()
                    self.loop.run_forever()

                threading.Thread(target=run_loop, daemon=True, name="gray-actor-loop").start()
                started.wait()
            elif concurrency > 1 or groups:
                from concurrent.futures import ThreadPoolExecutor

                self.pools = {None: ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gray-actor")}
                for g, n in groups.items():
                    self.pools[g] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gray-actor-" + g)
                self.pool = self.pools[None]
            info = self.class_info(cls)
            flush_std()
            self.conn.send({"t": "done", "task_id": task["task_id"], "contained": [[]]}, [info])
        except BaseException as e:  # noqa: BLE001
            flush_std()
            from ray.exceptions import ActorDiedError

            rte = self.task_error(name + ".__init__", user_traceback(), e, dual=False)
            try:
                err = ActorDiedError(cause=rte)
            except Exception:  # noqa: BLE001
                err = rte
            self.send_error(task, err, user=True)

    def class_info(self, cls):
        """Method names, num_returns and signatures: the server needs the
        num_returns of each method, and handles that arrive without class
        info (ray.get_actor) read them from the pool's KV."""
        import inspect as _inspect

        from ray._common.signature import extract_signature
        from ray.util.client.common import is_class_method, is_function_or_method, is_static_method

        num_returns, params = {}, {}
        for mname, m in _inspect.getmembers(cls, is_function_or_method):
            num_returns[mname] = getattr(m, "__ray_num_returns__", None)
            try:
                params[mname] = extract_signature(
                    m, ignore_first=not (is_class_method(m) or is_static_method(cls, mname))
                )
            except Exception:  # noqa: BLE001
                params[mname] = list(_ANY_SIGNATURE.parameters.values())
        return pickle.dumps((num_returns, params))

    def group_of(self, task):
        g = task.get("concurrency_group") or self.method_groups.get(task["method"])
        return g if g in self.group_limits else None

    def actor_call(self, task, blobs):
        if self.is_async:
            import asyncio

            asyncio.run_coroutine_threadsafe(self.call_async(task, blobs), self.loop)
        elif self.pool is not None:
            self.pools[self.group_of(task)].submit(self.call_sync, task, blobs)
        else:
            self.call_sync(task, blobs)

    def call_sync(self, task, blobs):
        name = "%s.%s" % (self.actor_name, task["method"])
        if task["method"] == "__ray_terminate__":
            self.exit_gracefully(task)
        try:
            args, kwargs = self.load_args(task, blobs)
            result = getattr(self.instance, task["method"])(*args, **kwargs)
            self.send_result(task, self.split_returns(task, result))
        except gray_patches.ActorExit:
            self.exit_gracefully(task)
        except BaseException as e:  # noqa: BLE001
            self.fail(task, name, e, user_traceback(), actor_repr=repr(self.instance))

    async def call_async(self, task, blobs):
        import inspect as _inspect

        name = "%s.%s" % (self.actor_name, task["method"])
        if task["method"] == "__ray_terminate__":
            self.exit_gracefully(task)
        async with self.sems[self.group_of(task)]:
            try:
                args, kwargs = self.load_args(task, blobs)
                result = getattr(self.instance, task["method"])(*args, **kwargs)
                if _inspect.isawaitable(result):
                    result = await result
                self.send_result(task, self.split_returns(task, result))
            except gray_patches.ActorExit:
                self.exit_gracefully(task)
            except BaseException as e:  # noqa: BLE001
                self.fail(task, name, e, user_traceback(), actor_repr=repr(self.instance))

    def exit_gracefully(self, task):
        gray_patches.exit_gracefully(self, task)

    def task_error(self, name, tb, exc, actor_repr=None, dual=True):
        from ray.exceptions import RayTaskError

        try:
            err = RayTaskError(
                function_name=name,
                traceback_str=tb,
                cause=exc,
                proctitle="ray::%s" % name,
                pid=os.getpid(),
                ip=os.environ.get("GRAY_NODE_IP", "127.0.0.1"),
                actor_repr=actor_repr,
            )
            if not dual:
                return err
            try:
                return err.as_instanceof_cause()
            except Exception:  # noqa: BLE001
                return err
        except Exception:  # noqa: BLE001
            return RuntimeError(tb)

    def send_error(self, task, err, user):
        import ray.cloudpickle as cloudpickle

        try:
            blob = cloudpickle.dumps(err)
        except Exception:  # noqa: BLE001
            blob = cloudpickle.dumps(RuntimeError(str(err)))
        self.conn.send({"t": "error", "task_id": task["task_id"], "user": user}, [blob])

    # ---- calls into the raylet --------------------------------------------

    def rpc(self, op, **kwargs):
        """A request to the raylet (placement groups); raises on error."""
        ev = threading.Event()
        with self.cv:
            self.rpc_seq += 1
            rid = self.rpc_seq
            waiter = [ev, None]
            self.rpc_waiters[rid] = waiter
        msg = dict(kwargs)
        msg.update({"t": "rpc", "rpc_id": rid, "op": op, "task_id": self.current or ""})
        self.conn.send(msg)
        ev.wait()
        reply = waiter[1]
        if reply.get("error"):
            raise ValueError(reply["error"])
        return reply.get("result")

    def override(self, fn):
        """Ray's client-mode helpers run server-side against Ray internals;
        map them to the pool's implementation instead."""
        key = (getattr(fn, "__module__", None), getattr(fn, "__name__", None))
        import gray_pg  # shipped beside this script

        impl = gray_pg.overrides(self).get(key)
        return impl or fn

    # ---- loop -------------------------------------------------------------

    def reader(self):
        try:
            while True:
                header, blobs = self.conn.recv()
                t = header.get("t")
                if t in ("task", "actor_create"):
                    with self.cv:
                        self.tasks.append((header, blobs))
                        self.cv.notify()
                elif t == "call":
                    if self.is_async or self.pool is not None:
                        self.actor_call(header, blobs)
                    else:
                        with self.cv:
                            self.tasks.append((header, blobs))
                            self.cv.notify()
                elif t == "cancel":
                    with self.cv:
                        if self.current == header["task_id"]:
                            # A real SIGINT on the main thread also wakes
                            # blocking calls such as time.sleep.
                            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                        else:
                            self.cancelled.add(header["task_id"])
                elif t == "rpc_reply":
                    with self.cv:
                        waiter = self.rpc_waiters.pop(header["rpc_id"], None)
                    if waiter is not None:
                        waiter[1] = header
                        waiter[0].set()
                elif t == "host_pid":
                    gray_patches.use_host_pid(header["pid"])
                elif t == "ack":
                    with self.cv:
                        self.unacked.pop(header["task_id"], None)
                elif t == "exit":
                    break
        except (EOFError, OSError):
            pass
        os._exit(0)

    def start(self):
        """Say ready to the raylet and start reading its frames; tasks that
        arrive before serve() wait in the queue."""
        threading.Thread(target=self.reader, daemon=True, name="gray-reader").start()
        self.conn.send({"t": "ready", "worker_id": self.worker_id, "pid": os.getpid()})

    def serve(self):
        handlers = {"task": self.run_task, "actor_create": self.create_actor, "call": self.call_sync}
        while True:
            with self.cv:
                while not self.tasks:
                    self.cv.wait()
                header, blobs = self.tasks.pop(0)
                self.current = header["task_id"]
            try:
                handlers[header["t"]](header, blobs)
            except KeyboardInterrupt:
                pass
            with self.cv:
                self.current = None


def user_traceback():
    """The current exception's traceback without this runtime's own frames,
    as Ray hides its worker internals."""
    etype, exc, tb = sys.exc_info()
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(etype, exc, tb))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--worker-id", required=True)
    a = p.parse_args()
    # Ray sets OMP_NUM_THREADS from a task's CPUs unless it is set: 1 below
    # two CPUs; the front end passes larger counts in the task's environment.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wd = os.environ.get("GRAY_WORKING_DIR")
    if wd:
        os.chdir(wd)
        sys.path.insert(0, wd)
    # runtime_env py_modules come first, in their order, then the working_dir.
    mods = [m for m in os.environ.get("GRAY_PY_MODULES", "").split(os.pathsep) if m]
    sys.path[0:0] = mods
    conn = Conn(a.socket)
    import ray

    gray_patches.patch_refcounting(conn)

    global _RUNTIME
    runtime = Runtime(conn, a.worker_id)
    runtime.start()
    # The credential the front end checks before this worker may act for
    # the job of its task (the raylet signs the id it started us with).
    metadata = [("gray-worker-id", a.worker_id)]
    cred = runtime.rpc("worker_cred")
    if cred:
        metadata.append(("gray-worker-cred", cred))
    # The worker authenticates with its credential, never a user's token.
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(var, None)
    ray.init(
        "ray://" + a.address,
        _metadata=metadata,
        logging_level="WARNING",
    )
    gray_patches.patch_gpu_ids()
    gray_patches.patch_exit_actor(lambda: _RUNTIME is not None and _RUNTIME.instance is not None)
    _RUNTIME = runtime
    _RUNTIME.serve()


if __name__ == "__main__":
    main()
