"""Check that proto/ray_client.proto matches the Ray wheel's Ray Client protocol.

The descriptor of our generated Go package (dumped by ./proto/cmd/dumpdesc)
is compared with ``ray.core.generated.ray_client_pb2.DESCRIPTOR`` from the
installed wheel: messages (including nested types and map entries), fields
(name, number, type, label, type_name, oneof, proto3_optional), enums,
services and methods. File name, options, comments, json_name and go_package
are deliberately ignored.

Set GRAY_DUMPDESC to a prebuilt dumpdesc binary to skip `go run`.
"""

import os
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

import ray.core.generated.ray_client_pb2 as ray_client_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ray.rpc"

FDP = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {v: k for k, v in FDP.Type.items()}
LABEL_NAMES = {v: k for k, v in FDP.Label.items()}


# --------------------------------------------------------------------------
# Loading the two descriptors


def _load_ours() -> descriptor_pb2.FileDescriptorProto:
    prebuilt = os.environ.get("GRAY_DUMPDESC")
    cmd = [prebuilt] if prebuilt else ["go", "run", "./proto/cmd/dumpdesc"]
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, timeout=600, check=False
        )
    except FileNotFoundError as e:
        pytest.fail(f"cannot run {cmd[0]!r}: {e}")
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n"
            + proc.stderr.decode(errors="replace")
        )
    fd = descriptor_pb2.FileDescriptorProto()
    fd.ParseFromString(proc.stdout)
    return fd


def _load_wheel() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    ray_client_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd


@pytest.fixture(scope="module")
def ours():
    return _load_ours()


@pytest.fixture(scope="module")
def wheel():
    return _load_wheel()


# --------------------------------------------------------------------------
# Normalising descriptors into plain, comparable data


def _field_summary(msg, f):
    oneof = None
    if f.HasField("oneof_index"):
        oneof = msg.oneof_decl[f.oneof_index].name
    return {
        "number": f.number,
        "type": TYPE_NAMES[f.type],
        "label": LABEL_NAMES[f.label],
        "type_name": f.type_name,
        "oneof": oneof,
        "proto3_optional": f.proto3_optional,
    }


def _collect(fd):
    """Flatten a FileDescriptorProto into dicts keyed by full name."""
    messages, enums = {}, {}

    def add_enum(prefix, e):
        enums[f"{prefix}.{e.name}"] = {v.name: v.number for v in e.value}

    def add_message(prefix, m):
        full = f"{prefix}.{m.name}"
        messages[full] = {
            "fields": {f.name: _field_summary(m, f) for f in m.field},
            "field_order": [f.name for f in m.field],
            "oneofs": [o.name for o in m.oneof_decl],
            # map_entry lives in options, but it is what makes a field a map.
            "map_entry": m.options.map_entry,
            "reserved_ranges": sorted((r.start, r.end) for r in m.reserved_range),
            "reserved_names": sorted(m.reserved_name),
        }
        for e in m.enum_type:
            add_enum(full, e)
        for n in m.nested_type:
            add_message(full, n)

    for e in fd.enum_type:
        add_enum(fd.package, e)
    for m in fd.message_type:
        add_message(fd.package, m)

    services = {
        s.name: {
            me.name: {
                "input_type": me.input_type,
                "output_type": me.output_type,
                "client_streaming": me.client_streaming,
                "server_streaming": me.server_streaming,
            }
            for me in s.method
        }
        for s in fd.service
    }
    return messages, enums, services


def _diff_sets(what, ours, wheel, prefix=""):
    """Report names present on only one side, e.g. 'field ray.rpc.Arg.data'."""
    out = []
    for name in sorted(set(wheel) - set(ours)):
        out.append(f"{what} {prefix}{name}: missing from proto/ray_client.proto")
    for name in sorted(set(ours) - set(wheel)):
        out.append(f"{what} {prefix}{name}: not in the Ray wheel")
    return out


def _diff_attrs(where, ours, wheel):
    return [
        f"{where}: {key} differs: ours={ours[key]!r} wheel={wheel[key]!r}"
        for key in wheel
        if ours.get(key) != wheel[key]
    ]


def _report(diffs):
    if diffs:
        pytest.fail(
            f"{len(diffs)} difference(s) between proto/ray_client.proto and "
            f"the Ray wheel's ray_client.proto:\n  " + "\n  ".join(diffs),
            pytrace=False,
        )


# --------------------------------------------------------------------------
# Tests


def test_file_level(ours, wheel):
    diffs = []
    if wheel.package != PACKAGE:
        diffs.append(f"wheel package is {wheel.package!r}, expected {PACKAGE!r}")
    if ours.package != PACKAGE:
        diffs.append(f"our package is {ours.package!r}, expected {PACKAGE!r}")
    if ours.syntax != wheel.syntax:
        diffs.append(f"syntax differs: ours={ours.syntax!r} wheel={wheel.syntax!r}")
    if list(ours.dependency) != list(wheel.dependency):
        diffs.append(
            f"imports differ: ours={list(ours.dependency)} "
            f"wheel={list(wheel.dependency)}"
        )
    _report(diffs)


def test_messages(ours, wheel):
    our_msgs, _, _ = _collect(ours)
    wheel_msgs, _, _ = _collect(wheel)
    diffs = _diff_sets("message", our_msgs, wheel_msgs)
    for name in sorted(set(our_msgs) & set(wheel_msgs)):
        o, w = our_msgs[name], wheel_msgs[name]
        diffs += _diff_sets("field", o["fields"], w["fields"], prefix=f"{name}.")
        for fname in w["field_order"]:
            if fname in o["fields"]:
                diffs += _diff_attrs(
                    f"field {name}.{fname}", o["fields"][fname], w["fields"][fname]
                )
        for key in ("oneofs", "map_entry", "reserved_ranges", "reserved_names"):
            if o[key] != w[key]:
                diffs.append(
                    f"message {name}: {key} differs: ours={o[key]!r} wheel={w[key]!r}"
                )
    _report(diffs)


def test_enums(ours, wheel):
    _, our_enums, _ = _collect(ours)
    _, wheel_enums, _ = _collect(wheel)
    diffs = _diff_sets("enum", our_enums, wheel_enums)
    for name in sorted(set(our_enums) & set(wheel_enums)):
        o, w = our_enums[name], wheel_enums[name]
        diffs += _diff_sets("enum value", o, w, prefix=f"{name}.")
        for vname in sorted(set(o) & set(w)):
            if o[vname] != w[vname]:
                diffs.append(
                    f"enum value {name}.{vname}: number differs: "
                    f"ours={o[vname]} wheel={w[vname]}"
                )
    _report(diffs)


def test_services(ours, wheel):
    _, _, our_svcs = _collect(ours)
    _, _, wheel_svcs = _collect(wheel)
    diffs = _diff_sets("service", our_svcs, wheel_svcs)
    for name in sorted(set(our_svcs) & set(wheel_svcs)):
        o, w = our_svcs[name], wheel_svcs[name]
        diffs += _diff_sets("method", o, w, prefix=f"{name}.")
        for mname in sorted(set(o) & set(w)):
            diffs += _diff_attrs(f"method {name}.{mname}", o[mname], w[mname])
    _report(diffs)


def test_expected_services_present(wheel):
    """Guard against comparing two empty descriptors."""
    _, _, services = _collect(wheel)
    assert {"RayletDriver", "RayletDataStreamer", "RayletLogStreamer"} <= set(services)
    assert services["RayletDataStreamer"]["Datapath"]["client_streaming"]
    assert services["RayletDataStreamer"]["Datapath"]["server_streaming"]
