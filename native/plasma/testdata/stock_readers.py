"""Parse plasma replies with the stock Ray 2.60.0 readers.

Reads a JSON list of {"kind": ..., "hex": ..., "n": ...} on stdin, hands each
body to the matching plasma::Read*Reply function exported by ray/_raylet.so
(the code the core worker runs on every reply), and prints a JSON list of
what the stock reader extracted. Used by TestStockReaders.
"""
import ctypes
import json
import os
import sys

try:
    import ray._raylet as raylet_mod
except ImportError as e:  # no stock wheel here: the Go test skips
    print("no ray wheel: %s" % e, file=sys.stderr)
    sys.exit(3)

lib = ctypes.CDLL(raylet_mod.__file__)

OBJECT_ID_SIZE = 40  # ray::ObjectID: size_t hash_ + uint8_t id_[28], 8-aligned
PLASMA_OBJECT_SIZE = 256  # generous; fields are located by value in the test

SYMS = {
    "create": "_ZN6plasma15ReadCreateReplyEPhmPN3ray8ObjectIDEPmPNS_12PlasmaObjectEPSt4pairIilEPl",
    "get": "_ZN6plasma12ReadGetReplyEPhmPN3ray8ObjectIDEPNS_12PlasmaObjectElRSt6vectorISt4pairIilESaIS8_EERS6_IlSaIlEE",
    "seal": "_ZN6plasma13ReadSealReplyEPhmPN3ray8ObjectIDE",
    "abort": "_ZN6plasma14ReadAbortReplyEPhmPN3ray8ObjectIDE",
    "contains": "_ZN6plasma17ReadContainsReplyEPhmPN3ray8ObjectIDEPb",
    "release": "_ZN6plasma16ReadReleaseReplyEPhmPN3ray8ObjectIDEPb",
    "delete": "_ZN6plasma15ReadDeleteReplyEPhmPSt6vectorIN3ray8ObjectIDESaIS3_EEPS1_INS_7flatbuf11PlasmaErrorESaIS8_EE",
}


# Readers that return a ray::Status get it through a hidden first pointer
# argument (measured by disassembly: their data pointer arrives in rsi);
# the others return nothing the caller looks at.
SRET = {"create", "seal", "release"}


def fn(kind, st):
    f = getattr(lib, SYMS[kind])
    f.restype = None
    if kind in SRET:
        return lambda *args: f(st, *args)
    return f


def status_ok(st):
    return ctypes.cast(st, ctypes.POINTER(ctypes.c_void_p))[0] is None


def oid_hex(buf, i=0):
    raw = ctypes.string_at(ctypes.addressof(buf) + i * OBJECT_ID_SIZE, OBJECT_ID_SIZE)
    return raw.hex()


def words(buf, size):
    raw = ctypes.string_at(ctypes.addressof(buf), size)
    return [int.from_bytes(raw[i:i + 8], "little", signed=True) for i in range(0, size, 8)]


class Vec(ctypes.Structure):
    _fields_ = [("begin", ctypes.c_void_p), ("end", ctypes.c_void_p), ("cap", ctypes.c_void_p)]

    def raw(self):
        if not self.begin:
            return b""
        return ctypes.string_at(self.begin, self.end - self.begin)


def parse(req):
    body = bytes.fromhex(req["hex"])
    data = ctypes.create_string_buffer(body, len(body))
    st = ctypes.create_string_buffer(64)
    kind = req["kind"]
    out = {"kind": kind}
    if kind == "create":
        oid = ctypes.create_string_buffer(OBJECT_ID_SIZE)
        retry = ctypes.c_uint64(0)
        obj = ctypes.create_string_buffer(PLASMA_OBJECT_SIZE)
        fd = ctypes.create_string_buffer(16)
        mmap = ctypes.c_int64(0)
        fn(kind, st)(data, ctypes.c_size_t(len(body)), oid, ctypes.byref(retry), obj, fd,
                 ctypes.byref(mmap))
        out.update(id=oid_hex(oid), retry=retry.value, object=words(obj, PLASMA_OBJECT_SIZE),
                   fd=words(fd, 16), mmap_size=mmap.value)
    elif kind == "get":
        n = req["n"]
        oids = ctypes.create_string_buffer(OBJECT_ID_SIZE * n)
        objs = ctypes.create_string_buffer(PLASMA_OBJECT_SIZE * n)
        fds, sizes = Vec(), Vec()
        fn(kind, st)(data, ctypes.c_size_t(len(body)), oids, objs, ctypes.c_long(n),
                 ctypes.byref(fds), ctypes.byref(sizes))
        out.update(ids=[oid_hex(oids, i) for i in range(n)], objects_words=words(objs, PLASMA_OBJECT_SIZE * n),
                   fds=fds.raw().hex(), mmap_sizes=sizes.raw().hex())
    elif kind in ("seal", "abort"):
        oid = ctypes.create_string_buffer(OBJECT_ID_SIZE)
        fn(kind, st)(data, ctypes.c_size_t(len(body)), oid)
        out.update(id=oid_hex(oid))
    elif kind in ("contains", "release"):
        oid = ctypes.create_string_buffer(OBJECT_ID_SIZE)
        flag = ctypes.c_bool(False)
        fn(kind, st)(data, ctypes.c_size_t(len(body)), oid, ctypes.byref(flag))
        out.update(id=oid_hex(oid), flag=flag.value)
    elif kind == "delete":
        ids, errs = Vec(), Vec()
        fn(kind, st)(data, ctypes.c_size_t(len(body)), ctypes.byref(ids), ctypes.byref(errs))
        out.update(ids=ids.raw().hex(), errors=errs.raw().hex())
    out["ok"] = status_ok(st) if kind in SRET else True
    return out


def main():
    reqs = json.load(sys.stdin)
    json.dump([parse(r) for r in reqs], sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # skip _raylet's static destructors


if __name__ == "__main__":
    main()
