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

_HDR = struct.Struct("<I")


class Conn:
    """Framed messages over the raylet socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb", buffering=1 << 20)
        self.lock = threading.Lock()

    def send(self, header, blobs=()):
        header["blobs"] = [len(b) for b in blobs]
        h = json.dumps(header).encode()
        with self.lock:
            self.sock.sendall(_HDR.pack(len(h)) + h)
            for b in blobs:
                if len(b):
                    self.sock.sendall(b)

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
        import ray
        from ray.util.client import common
        from ray.util.client import client_pickler

        self.ray = ray
        self.common = common
        self.client_pickler = client_pickler

    # ---- references -------------------------------------------------------

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
                    return c.ClientActorHandle(c.ClientActorRef(pid.ref_id))
                if t == "RemoteFunc":
                    return rt.remote_func(pid.ref_id, pid.baseline_options)
                if t == "RemoteActor":
                    return rt.actor_class(pid.ref_id, pid.baseline_options)
                if t == "RemoteMethod":
                    h = c.ClientActorHandle(c.ClientActorRef(pid.ref_id))
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
        contained = []
        base = self.client_pickler.ClientPickler

        class RecordingPickler(base):
            def persistent_id(self, obj):
                stub = super().persistent_id(obj)
                if stub is not None and stub.type in ("Object", "RemoteFunc", "RemoteActor"):
                    contained.append(stub.ref_id.hex())
                return stub

        with io.BytesIO() as f:
            RecordingPickler("", f, protocol=5).dump(value)
            return f.getvalue(), contained

    # ---- execution --------------------------------------------------------

    def load_function(self, task, blobs):
        fid = task["fn"]
        fn = self.functions.get(fid)
        if fn is None:
            fn = self.unpickler(blobs[task["fn_blob"]], task).load()
            self.functions[fid] = fn
        return fn

    def run_task(self, task, blobs):
        name = task.get("name", "f")
        if task.get("baseline_blob", -1) >= 0:
            task["_baseline"] = pickle.loads(blobs[task["baseline_blob"]])
        try:
            fn = self.load_function(task, blobs)
            deps = {}
            for hex_id, idx in task.get("deps", {}).items():
                deps[bytes.fromhex(hex_id)] = self.unpickler(blobs[idx], task).load()
            args, kwargs = self.unpickler(blobs[task["args_blob"]], task).load()
            ref_type = self.common.ClientObjectRef

            def resolve(v):
                if isinstance(v, ref_type):
                    key = v.id
                    if key in deps:
                        return deps[key]
                return v

            args = [resolve(a) for a in args]
            kwargs = {k: resolve(v) for k, v in kwargs.items()}
            env = task.get("env_vars") or {}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                result = fn(*args, **kwargs)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            n = task.get("num_returns", 1)
            if n == 0:
                values = []
            elif n == 1:
                values = [result]
            else:
                if not isinstance(result, (tuple, list)) or len(result) != n:
                    raise ValueError(
                        "Task returned %s but num_returns=%d"
                        % (type(result).__name__ if not isinstance(result, (tuple, list)) else "%d objects" % len(result), n)
                    )
                values = list(result)
            out_blobs, contained = [], []
            for v in values:
                b, refs = self.dumps(v)
                out_blobs.append(b)
                contained.append(refs)
            flush_std()
            self.conn.send({"t": "done", "task_id": task["task_id"], "contained": contained}, out_blobs)
        except KeyboardInterrupt:
            flush_std()
            from ray.exceptions import TaskCancelledError

            err = TaskCancelledError()
            self.send_error(task, err, user=False)
        except BaseException as e:  # noqa: BLE001 - every failure goes to the caller
            flush_std()
            tb = traceback.format_exc()
            self.send_error(task, self.task_error(name, tb, e), user=True)

    def task_error(self, name, tb, exc):
        from ray.exceptions import RayTaskError

        try:
            err = RayTaskError(
                function_name=name,
                traceback_str=tb,
                cause=exc,
                proctitle="ray::%s()" % name,
                pid=os.getpid(),
                ip=os.environ.get("GRAY_NODE_IP", "127.0.0.1"),
            )
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

    # ---- loop -------------------------------------------------------------

    def reader(self):
        try:
            while True:
                header, blobs = self.conn.recv()
                t = header.get("t")
                if t == "task":
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
                elif t == "exit":
                    break
        except (EOFError, OSError):
            pass
        os._exit(0)

    def serve(self):
        threading.Thread(target=self.reader, daemon=True, name="gray-reader").start()
        self.conn.send({"t": "ready", "worker_id": self.worker_id, "pid": os.getpid()})
        while True:
            with self.cv:
                while not self.tasks:
                    self.cv.wait()
                header, blobs = self.tasks.pop(0)
                self.current = header["task_id"]
            try:
                self.run_task(header, blobs)
            except KeyboardInterrupt:
                pass
            with self.cv:
                self.current = None


def flush_std():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--worker-id", required=True)
    a = p.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wd = os.environ.get("GRAY_WORKING_DIR")
    if wd:
        os.chdir(wd)
        sys.path.insert(0, wd)
    conn = Conn(a.socket)
    import ray

    ray.init(
        "ray://" + a.address,
        _metadata=[("gray-worker-id", a.worker_id)],
        logging_level="WARNING",
    )
    Runtime(conn, a.worker_id).serve()


if __name__ == "__main__":
    main()
