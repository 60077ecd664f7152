#!/usr/bin/env python3
"""Regenerates the pickle fixtures used by the internal/pickle Go tests.

Run from anywhere with the repository's virtual environment:

    .venv/bin/python internal/pickle/testdata/gen.py

Every task-argument fixture is produced by the real Ray Client pickler
(ray.util.client.client_pickler.dumps_from_client / ClientPickler) applied to
real ClientObjectRef, ClientActorHandle, ClientRemoteFunc, ... objects. Those
normally need a connected client; an offline stand-in worker is installed on
the client context so that they can be constructed without a server. The
identifiers are deterministic so that the Go tests can assert exact stubs:

    object ref n   -> bytes([n]) * 28
    actor id n     -> bytes([n]) * 16
    client side id -> b"\\xcc" + bytes([n]) * 16
"""

import collections
import dataclasses
import io
import os
import pickle

import numpy as np

import ray.cloudpickle as cloudpickle
from ray.job_config import JobConfig
from ray.util.client import ray as client_api  # the RayAPIStub singleton
from ray.util.client.client_pickler import (
    ClientPickler,
    PickleStub,
    dumps_from_client,
)
from ray.util.client.common import (
    ClientActorClass,
    ClientActorHandle,
    ClientActorRef,
    ClientObjectRef,
    ClientRemoteFunc,
    ClientRemoteMethod,
    ClientSideRefID,
    InProgressSentinel,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

OUT = os.path.dirname(os.path.abspath(__file__))
CID = "client-0123"


class _OfflineWorker:
    """Just enough of ray.util.client.worker.Worker for refs to exist."""

    def call_retain(self, id):
        pass

    def call_release(self, id):
        pass

    def is_connected(self):
        return False


client_api.get_context().client_worker = _OfflineWorker()


def oid(n):
    return bytes([n]) * 28


def aid(n):
    return bytes([n]) * 16


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def args(*a, **kw):
    """What ray.util.client.worker.Worker.call_remote sends as task.data."""
    return dumps_from_client((a, kw), CID)


r1, r2, r3 = ClientObjectRef(oid(1)), ClientObjectRef(oid(2)), ClientObjectRef(oid(3))
actor = ClientActorHandle(ClientActorRef(aid(0x41)))


def remote_target(x):
    return x


class Counter:
    def incr(self):
        return 1


remote_func = ClientRemoteFunc(remote_target, {"num_cpus": 2, "max_retries": 3})
remote_func._ref = ClientObjectRef(oid(0x21))
remote_func_self = ClientRemoteFunc(remote_target)
remote_func_self._ref = InProgressSentinel()
remote_func_self._client_side_ref = ClientSideRefID(b"\xcc" + bytes([0x22]) * 16)
remote_actor = ClientActorClass(Counter, {"max_restarts": 1})
remote_actor._ref = ClientObjectRef(oid(0x31))
remote_actor_self = ClientActorClass(Counter)
remote_actor_self._ref = InProgressSentinel()
remote_actor_self._client_side_ref = ClientSideRefID(b"\xcc" + bytes([0x32]) * 16)
method = ClientRemoteMethod(actor, "incr", 1, None)


@dataclasses.dataclass
class Point:
    x: int
    y: float
    ref: object


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenRef:
    name: str
    ref: object


class Slotted:
    __slots__ = ("a", "ref")

    def __init__(self, a, ref):
        self.a, self.ref = a, ref


class Mixed(Slotted):  # has both __dict__ and __slots__ state
    def __init__(self, a, ref):
        super().__init__(a, ref)
        self.extra = "e"


def make_closure(ref):
    scale = 3
    return lambda x: (x * scale, ref)


def make_local_instance(ref):
    class Local:
        def __init__(self, ref):
            self.ref = ref
            self.tag = "local"

        def get(self):
            return self.ref

    return Local(ref)


class CachingPickler(ClientPickler):
    """Returns the same PickleStub for the same object, so the pickler emits
    BINGET + BINPERSID for repeats (stub encoding otherwise identical)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._cache = {}

    def persistent_id(self, obj):
        pid = super().persistent_id(obj)
        if pid is None:
            return None
        return self._cache.setdefault((pid.type, pid.ref_id, pid.name), pid)


class RawPidPickler(cloudpickle.CloudPickler):
    """Emits persistent ids that are not PickleStubs."""

    def __init__(self, pid, *a, **kw):
        super().__init__(*a, **kw)
        self._pid = pid

    def persistent_id(self, obj):
        return self._pid if obj is r1 else None


def dump_with(cls, obj, *a, protocol=None):
    buf = io.BytesIO()
    cls(*a, buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def main():
    write("no_stubs.pkl", args(1, "a", [1, 2], {"x": 1.5}, None, True, b"raw", k="v"))
    write("get_actor.pkl", dumps_from_client(([], {}), CID))
    write("toplevel.pkl", args(r1, 5, r2, a=r3, b=7))
    write(
        "same_ref_nested.pkl",
        args(r1, [r1], {"k": r1}, (r1,), {r1}, kw=r1, nested=[r1]),
    )
    write(
        "memoized.pkl",
        dump_with(CachingPickler, ((r1, [r1], {"k": r2}), {"kw": r1, "x": r2}), CID),
    )
    write(
        "all_types.pkl",
        args(
            actor,
            remote_func,
            remote_func_self,
            remote_actor,
            remote_actor_self,
            method,
            client_api,
            opts={"f": remote_func},
        ),
    )
    write(
        "closure_class.pkl",
        args(make_closure(r2), make_local_instance(r3), lambda: 1, r1),
    )
    write(
        "numpy_bytes.pkl",
        args(np.arange(1000), b"\xab" * (3 << 20), r1, arr=np.arange(6).reshape(2, 3)),
    )
    write(
        "dataclass.pkl",
        args(Point(1, 2.5, r1), FrozenRef("f", r2), Slotted(1, r3), Mixed(2, r1)),
    )
    write(
        "proto5.pkl",
        args(
            bytearray(b"mutable"),
            pickle.PickleBuffer(bytearray(b"in-band buffer")),
            {b"a", b"b"},
            frozenset({1, 2}),
            collections.OrderedDict([("a", r1), ("b", 2)]),
            2**100,
            -(2**70),
            -1,
            1e300,
            "unicode \u2713",
            [[[r2]]],
            {(1, 2): r3},
            {b"k": "v"},
        ),
    )
    write(
        "proto2.pkl",
        dumps_from_client(((r1, {b"x", b"y"}, b"bytes"), {"k": r2}), CID, protocol=2),
    )
    write("proto0.pkl", dumps_from_client(((r1,), {}), CID, protocol=0))
    write(
        "bad_pid_tuple.pkl",
        dump_with(RawPidPickler, ((r1,), {}), ("Object", CID, oid(1), None, None)),
    )
    write("bad_pid_str.pkl", dump_with(RawPidPickler, ((r1,), {}), "just-a-string"))
    write(
        "bad_pid_type.pkl",
        dump_with(RawPidPickler, ((r1,), {}), PickleStub("Bogus", CID, oid(1), None, None)),
    )
    write("not_task_args.pkl", dumps_from_client([r1, r2], CID))

    # Plain stdlib pickles, as sent for task options and the job config.
    write(
        "options.pkl",
        pickle.dumps(
            {
                "num_returns": 2,
                "num_cpus": 1.5,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(
                    "ab" * 28, soft=True
                ),
            }
        ),
    )
    write(
        "job_config.pkl",
        pickle.dumps(
            JobConfig(
                runtime_env={"env_vars": {"A": "1"}, "pip": ["requests"]},
                metadata={"owner": "me"},
                ray_namespace="ns1",
            )
        ),
    )
    write(
        "values.pkl",
        pickle.dumps(
            {
                "none": None,
                "true": True,
                "neg": -5,
                "int32": 70000,
                "int64": 2**40,
                "big": 2**80,
                "float": 1.5,
                "str": "s\u00e9",
                "bytes": b"by",
                "list": [1, (2, 3)],
                "set": {7},
                "frozen": frozenset({8}),
                "bytearray": bytearray(b"ba"),
                "nested": {"x": {"y": 1}},
                "int_keys": {1: "a", 2: "b"},
            }
        ),
    )
    write("bytes_key.pkl", pickle.dumps({b"k": 1}))
    cyc = [1]
    cyc.append(cyc)
    write("cycle.pkl", pickle.dumps(cyc))

    # Values as stored by the server, for WrapList.
    write("wrap_value0.pkl", dumps_from_client({"a": [1, 2, 3], "b": b"xyz"}, CID))
    write("wrap_value1.pkl", dumps_from_client([r1, "x", actor], CID))


if __name__ == "__main__":
    main()
