#!/usr/bin/env python3
"""Helper of scripts/gpu-check.sh, for a machine with real NVIDIA GPUs.

  gpu_check.py report FILE
      Validate the JSON `gray gpu-check` printed (every GPU passed, labels
      set) and cross-check its numbers with PyTorch on the same GPUs:
      device count, names and UUIDs, copy bandwidth and FP32 matmul speed.

  gpu_check.py pool ADDRESS FILE
      With the stock ray client, run num_gpus=1 tasks on the gray pool at
      ADDRESS (host:port) that do a PyTorch matmul on CUDA, check it against
      the CPU, and return torch.cuda.get_device_name() and the GPU's UUID,
      which must be among the GPUs in FILE.

Exit status 0 when every check passed; 1 otherwise. Everything is printed.
"""

import json
import os
import sys
import time

# gray's numbers and PyTorch's must agree within these factors; outside
# them one of the two measurements is wrong.
BANDWIDTH_RATIO = (0.5, 2.0)  # gray copy GB/s / torch copy GB/s
FP32_RATIO = (0.7, 3.0)  # gray FMA TFLOP/s / torch SGEMM TFLOP/s (FMA >= SGEMM)
JOIN_BUDGET_S = 2.0  # the target for one GPU's verification

failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


def warn(what):
    print("  warn  " + what)


def load(path):
    with open(path) as f:
        return json.load(f)


def torch_uuid(torch, i):
    """The GPU's UUID as NVML and gray print it, or None if torch lacks it."""
    u = getattr(torch.cuda.get_device_properties(i), "uuid", None)
    if u is None:
        return None
    s = str(u)
    return s if s.startswith("GPU-") else "GPU-" + s


def torch_bandwidth(torch, i, nbytes=256 << 20, reps=8):
    """Device-to-device copy GB/s, counting read+write (as gray does)."""
    with torch.cuda.device(i):
        src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            dst.copy_(src)
        end.record()
        end.synchronize()
        return 2 * nbytes * reps / (start.elapsed_time(end) / 1e3) / 1e9


def torch_sgemm(torch, i, n=8192, reps=5):
    """FP32 matmul TFLOP/s with TF32 off (CUDA cores, like gray_fma)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.cuda.device(i):
        a = torch.randn(n, n, device="cuda")
        b = torch.randn(n, n, device="cuda")
        a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def report(path):
    rep = load(path)
    devs = rep.get("devices") or []
    print("gray gpu-check: driver %s (CUDA %s), %d device(s), took %.0f ms"
          % (rep.get("driver"), rep.get("driver_version"), len(devs), rep.get("took_ms", 0)))
    check(rep.get("available") is True, "a CUDA driver and device were found (note: %s)" % rep.get("note", ""))
    check(rep.get("passed") is True, "the report says passed")
    for d in devs:
        ph = d.get("phases", {})
        secs = d.get("duration_ns", 0) / 1e9
        print("  GPU %d %s (%s, cc %s, %d SMs, %.1f GiB): %.1f FP32 TFLOP/s, %.0f GB/s, %d words checked, %.2f s"
              % (d["index"], d["name"], d.get("uuid"), d.get("compute_capability"), d.get("sms", 0),
                 d.get("memory_bytes", 0) / 2**30, d.get("fp32_tflops", 0), d.get("bandwidth_gbs", 0),
                 d.get("hash_checked", 0), secs))
        print("        phases: " + ", ".join("%s %.1f ms" % (k[:-3], v / 1e6) for k, v in ph.items()))
        check(d.get("passed") is True, "GPU %d passed%s" % (d["index"], "" if d.get("passed") else ": " + d.get("reason", "")))
        check(d.get("hash_checked", 0) > 0, "GPU %d: hash kernel output compared bit for bit" % d["index"])
        if secs > JOIN_BUDGET_S:
            warn("GPU %d took %.2f s, over the %.0f s join budget" % (d["index"], secs, JOIN_BUDGET_S))
    labels = rep.get("labels") or {}
    print("  labels: %s" % json.dumps(labels, sort_keys=True))
    check(labels.get("gray.io/gpu-verified") == "true", "label gray.io/gpu-verified=true")
    for k in ("gray.io/gpu-model", "gray.io/gpu-fp32-tflops", "gray.io/gpu-bandwidth-gbs"):
        check(bool(labels.get(k)), "label %s set" % k)

    try:
        import torch
    except ImportError as e:
        warn("no PyTorch (%s): cross-check skipped" % e)
        return
    try:
        cross_check(torch, devs)
    except Exception as e:  # a broken torch install, out of memory, ...
        check(False, "PyTorch cross-check raised %s: %s" % (type(e).__name__, e))


def cross_check(torch, devs):
    print("PyTorch %s cross-check (CUDA %s):" % (torch.__version__, torch.version.cuda))
    check(torch.cuda.is_available(), "torch.cuda.is_available()")
    if not torch.cuda.is_available():
        return
    n = torch.cuda.device_count()
    check(n == len(devs), "torch sees %d GPU(s), gray verified %d" % (n, len(devs)))
    by_uuid = {d.get("uuid"): d for d in devs}
    for i in range(n):
        name, uuid = torch.cuda.get_device_name(i), torch_uuid(torch, i)
        d = by_uuid.get(uuid) if uuid else (devs[i] if i < len(devs) else None)
        check(d is not None and d["name"] == name, "torch GPU %d %s (%s) is in gray's report" % (i, name, uuid))
        if d is None:
            continue
        bw, tf = torch_bandwidth(torch, i), torch_sgemm(torch, i)
        rb, rt = d["bandwidth_gbs"] / bw, d["fp32_tflops"] / tf
        print("  GPU %d: torch copy %.0f GB/s vs gray %.0f (x%.2f); torch SGEMM %.1f TFLOP/s vs gray FMA %.1f (x%.2f)"
              % (i, bw, d["bandwidth_gbs"], rb, tf, d["fp32_tflops"], rt))
        check(BANDWIDTH_RATIO[0] <= rb <= BANDWIDTH_RATIO[1], "GPU %d: gray bandwidth within %s of torch's" % (i, BANDWIDTH_RATIO))
        check(FP32_RATIO[0] <= rt <= FP32_RATIO[1], "GPU %d: gray FP32 within %s of torch SGEMM" % (i, FP32_RATIO))


def pool(address, path):
    import ray

    devs = load(path).get("devices") or []
    names = {d["name"] for d in devs}
    uuids = {d.get("uuid") for d in devs}
    print("ray %s client -> ray://%s" % (ray.__version__, address))
    ray.init("ray://" + address)
    try:
        res = ray.cluster_resources()
        print("  cluster resources: %s" % json.dumps(res, sort_keys=True))
        ngpu = int(res.get("GPU", 0))
        check(ngpu == len(devs), "the pool offers %d GPU(s); gray verified %d" % (ngpu, len(devs)))
        if ngpu == 0:
            return

        @ray.remote(num_gpus=1)
        def matmul(n=4096):
            import torch

            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.manual_seed(0)
            a = torch.randn(n, n, dtype=torch.float64)
            b = torch.randn(n, n, dtype=torch.float64)
            want = (a[:256] @ b).float()
            t = time.time()
            got = (a.float().cuda() @ b.float().cuda())[:256].cpu()
            took = time.time() - t
            err = ((got - want).abs().max() / want.abs().max()).item()
            props = torch.cuda.get_device_properties(0)
            uuid = getattr(props, "uuid", None)
            if uuid is not None:
                uuid = str(uuid) if str(uuid).startswith("GPU-") else "GPU-" + str(uuid)
            return {"name": torch.cuda.get_device_name(), "uuid": uuid, "visible": visible,
                    "gpu_ids": ray.get_gpu_ids(), "devices": torch.cuda.device_count(),
                    "rel_err": err, "seconds": took}

        t = time.time()
        outs = ray.get([matmul.remote() for _ in range(ngpu)], timeout=600)
        print("  %d task(s) in %.1f s" % (len(outs), time.time() - t))
        for o in outs:
            print("  task: %s" % json.dumps(o, sort_keys=True))
            check(o["name"] in names, "task ran on %s, a GPU gray verified" % o["name"])
            check(o["uuid"] is None or o["uuid"] in uuids, "task GPU %s is one gray verified" % o["uuid"])
            check(o["devices"] == 1, "the task sees exactly one GPU (CUDA_VISIBLE_DEVICES=%s)" % o["visible"])
            check(o["rel_err"] < 1e-3, "GPU matmul agrees with the CPU (relative error %.1e)" % o["rel_err"])
        if ngpu > 1:
            vis = [o["visible"] for o in outs]
            if len(set(vis)) != len(vis):
                warn("concurrent tasks shared a GPU: %s (they may have run one after another)" % vis)
    finally:
        ray.shutdown()


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        report(argv[2])
    elif len(argv) == 4 and argv[1] == "pool":
        pool(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if failures:
        print("%d check(s) failed:" % len(failures))
        for f in failures:
            print("  - " + f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
