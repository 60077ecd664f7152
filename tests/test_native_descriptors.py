"""Check that proto/ray/*.proto match the Ray wheel's native protocol descriptors.

proto/ray/ holds gray's copy of Ray's GCS, raylet (NodeManagerService), core
worker and pubsub protocol, written by proto/ray/fromwheel.py and compiled into
proto/ray/*pb. The descriptors compiled into our Go packages (dumped by
`dumpdesc -native`) are compared file by file with the wheel's
``ray/core/generated/*_pb2.py``: messages, fields, enums, services and methods,
with the same rules as test_proto_descriptors.py.
"""

import importlib
import os
import subprocess

import pytest
from google.protobuf import descriptor_pb2

from test_proto_descriptors import REPO_ROOT, _collect, _diff_attrs, _diff_sets

WHEEL_ROOTS = ["gcs_service", "node_manager", "core_worker", "autoscaler"]
SRC_PREFIX = "src/ray/protobuf/"


def _ours():
    prebuilt = os.environ.get("GRAY_DUMPDESC")
    cmd = [prebuilt, "-native"] if prebuilt else ["go", "run", "./proto/cmd/dumpdesc", "-native"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr.decode()}")
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(proc.stdout)
    return {f.name[len("ray/"):]: f for f in fds.file}


def _wheel():
    seen = {}

    def walk(fd):
        if fd.name in seen:
            return
        p = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(p)
        seen[fd.name] = p
        for d in fd.dependencies:
            walk(d)

    for n in WHEEL_ROOTS:
        walk(importlib.import_module(f"ray.core.generated.{n}_pb2").DESCRIPTOR)
    return {
        name[len(SRC_PREFIX):]: p for name, p in seen.items() if name.startswith(SRC_PREFIX)
    }


@pytest.fixture(scope="module")
def both():
    return _ours(), _wheel()


def test_same_files(both):
    ours, wheel = both
    assert sorted(ours) == sorted(wheel)
    # Guard against comparing two empty sets.
    assert {"gcs_service.proto", "node_manager.proto", "core_worker.proto"} <= set(wheel)


def _file_names():
    return sorted(_wheel())


@pytest.mark.parametrize("name", _file_names())
def test_file_matches_wheel(both, name):
    ours, wheel = both
    o, w = ours[name], wheel[name]
    diffs = []
    if o.package != w.package:
        diffs.append(f"package differs: ours={o.package!r} wheel={w.package!r}")
    strip = lambda deps: [d.replace(SRC_PREFIX, "ray/") for d in deps]
    if list(o.dependency) != strip(w.dependency):
        diffs.append(f"imports differ: ours={list(o.dependency)} wheel={list(w.dependency)}")
    om, oe, osv = _collect(o)
    wm, we, wsv = _collect(w)
    diffs += _diff_sets("message", om, wm)
    for m in sorted(set(om) & set(wm)):
        diffs += _diff_sets("field", om[m]["fields"], wm[m]["fields"], prefix=f"{m}.")
        for f in wm[m]["field_order"]:
            if f in om[m]["fields"]:
                diffs += _diff_attrs(f"field {m}.{f}", om[m]["fields"][f], wm[m]["fields"][f])
        for key in ("oneofs", "map_entry", "reserved_ranges", "reserved_names"):
            if om[m][key] != wm[m][key]:
                diffs.append(f"message {m}: {key} differs: ours={om[m][key]!r} wheel={wm[m][key]!r}")
    diffs += _diff_sets("enum", oe, we)
    for e in sorted(set(oe) & set(we)):
        if oe[e] != we[e]:
            diffs.append(f"enum {e} differs: ours={oe[e]} wheel={we[e]}")
    diffs += _diff_sets("service", osv, wsv)
    for s in sorted(set(osv) & set(wsv)):
        diffs += _diff_sets("method", osv[s], wsv[s], prefix=f"{s}.")
        for meth in sorted(set(osv[s]) & set(wsv[s])):
            diffs += _diff_attrs(f"method {s}.{meth}", osv[s][meth], wsv[s][meth])
    assert not diffs, "\n".join(diffs)
