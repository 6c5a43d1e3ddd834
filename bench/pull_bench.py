#!/usr/bin/env python3
"""Pull throughput: `ucrfs pull` against `skopeo copy docker://… dir:` (the peer),
same image, same local docker-registry, same run.

Both fetch every blob over HTTP from 127.0.0.1 and verify digests; skopeo
writes a `dir:` copy, ucrfs writes its store. Each tool runs --runs times on a
fresh destination; the median wall time and the peak RSS are reported, with
ucrfs/skopeo ratios.

  python3 bench/pull_bench.py --ucrfs build/tools/ucrfs [--layers 4] [--layer-mib 64] [--runs 3]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

from benchlib import finish_layout, put_blob


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_layout(root, layers, layer_mib):
    """OCI layout with `layers` gzip layers of incompressible content."""
    descs, diff_ids = [], []
    for i in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for j in range(layer_mib):
                data = os.urandom(1 << 20)
                ti = tarfile.TarInfo(f"layer{i}/file{j}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        raw = buf.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        d, n = put_blob(root, gzip.compress(raw, compresslevel=1))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
    finish_layout(root, descs, diff_ids)


def run_one(cmd):
    # Measure each child on its own so peak RSS is per run.
    r = subprocess.run([sys.executable, "-c", (
        "import resource,subprocess,sys,time,json;"
        "t=time.monotonic();p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE);"
        "w=time.monotonic()-t;"
        "print(json.dumps({'rc':p.returncode,'wall':w,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        "'err':p.stderr.decode()[-400:]}))")] + cmd, capture_output=True, text=True, check=True)
    res = json.loads(r.stdout)
    if res["rc"] != 0:
        sys.exit(f"{cmd[0]} failed: {res['err']}")
    return res["wall"], res["rss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ucrfs", default="build/tools/ucrfs")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    ucrfs = os.path.abspath(a.ucrfs)
    work = tempfile.mkdtemp(prefix="ucrfs-bench-")
    reg = None
    try:
        make_layout(os.path.join(work, "oci"), a.layers, a.layer_mib)
        port = free_port()
        with open(os.path.join(work, "registry.yml"), "w") as f:
            f.write(f"version: 0.1\nlog: {{level: error}}\n"
                    f"storage: {{filesystem: {{rootdirectory: {work}/registry}}}}\n"
                    f"http: {{addr: 127.0.0.1:{port}}}\n")
        reg = subprocess.Popen(["docker-registry", "serve", os.path.join(work, "registry.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        image = f"127.0.0.1:{port}/bench:bench"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        f"oci:{work}/oci:bench", f"docker://{image}"], check=True)
        results = {"ucrfs": [], "skopeo": []}
        for i in range(a.runs):
            dest = os.path.join(work, f"run{i}")
            results["ucrfs"].append(run_one([ucrfs, "--store", dest + "-store", "pull", image]))
            results["skopeo"].append(run_one(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                              f"docker://{image}", f"dir:{dest}-dir"]))
            shutil.rmtree(dest + "-store", ignore_errors=True)
            shutil.rmtree(dest + "-dir", ignore_errors=True)
        total_mib = a.layers * a.layer_mib
        print(f"image: {a.layers} gzip layers x {a.layer_mib} MiB (incompressible), {a.runs} runs each, "
              f"registry on 127.0.0.1, {os.cpu_count()} cores")
        print(f"{'tool':8} {'median s':>9} {'MiB/s':>8} {'peak RSS MiB':>13}")
        med = {}
        for tool, rs in results.items():
            wall = statistics.median(r[0] for r in rs)
            rss = max(r[1] for r in rs) / 1024
            med[tool] = (wall, rss)
            print(f"{tool:8} {wall:9.2f} {total_mib / wall:8.0f} {rss:13.1f}")
        print(f"ratio ucrfs/skopeo: time {med['ucrfs'][0] / med['skopeo'][0]:.2f}, "
              f"peak RSS {med['ucrfs'][1] / med['skopeo'][1]:.2f}")
    finally:
        if reg:
            reg.terminate()
            reg.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
