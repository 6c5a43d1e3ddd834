#!/usr/bin/env python3
"""Cold start: how long until a large image's first line of output, run by
ucrfs lazily against a full pull and against containerd, same image, same
registry, same run.

The image (image.py, built once and cached): Debian bookworm minbase +
python3-numpy + python3-scipy, three gzip layers. It is pushed to Debian's
docker-registry (filesystem storage, started here) three ways:
  gzip           skopeo copy of the layout;
  eStargz        that image converted by a private containerd with
                 `ctr-remote image convert --estargz --oci`, pushed with --plain-http;
  indexed gzip   the gzip image again, in a repository of its own, plus
                 `ucrfs index push` (reported as not available while this
                 ucrfs has no `index push`).
The command is `python3 -c 'import numpy, scipy.linalg; print(1)'`
(PYTHONDONTWRITEBYTECODE=1: the ucrfs rootfs is read-only); the timer starts
after `sync; echo 3 > /proc/sys/vm/drop_caches`, with a fresh ucrfs store,
containerd root or directory, and stops at the first line of its stdout:
  full pull      skopeo copy docker://… oci:DIR + umoci unpack + chroot ROOTFS python3 …
  containerd     ctr pull --plain-http + ctr run --rm (overlayfs snapshotter, runc)
  ucrfs <format> ucrfs mount IMAGE MNT + chroot MNT python3 …; then
                 `ucrfs stats MNT --json` and umount. The lazy formats run
                 with the default prefetch (all: the rest is fetched in the
                 background while the command runs), with --prefetch none,
                 and replaying a trace recorded by one untimed run; eStargz
                 also with --read-ahead 512K.
Bytes fetched are what the registry served (its access log: manifests,
configs, blobs, Ranges) between the timer's start and the end of the row;
for ucrfs also its own count, `ucrfs stats` mountBytes + bytesFetched (read
right after the first line from a stats file the server rewrites at most every
500 ms, so it can lag). Medians of --runs runs; ratios against the full
pull's median.
--link 100mbit runs the registry inside a network namespace reached through a
veth pair shaped to 100 Mbit/s both ways (tc tbf), made and removed here.

  python3 bench/startup/run.py [--ucrfs PATH] [--runs 3] [--cache DIR] [--link loopback|100mbit|both]
      [--index-span SIZE] [--only full,containerd,ucrfs] [--json FILE]
"""
import argparse
import datetime
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))                      # bench/: benchlib
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))  # lib.containerd

import image  # noqa: E402
from benchlib import busy_note  # noqa: E402
from servers import Registry, ShapedLink, sh  # noqa: E402

PY = "import numpy, scipy.linalg; print(1)"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
REPO_NAME = "bench/startup"
IDX_REPO = "bench/startup-idx"
CTR_NS = "ucrfs-bench"
TARGET_TIME = {"loopback": 1 / 8, "100mbit": 1 / 10}
TARGET_BYTES = 0.15
STEP_TIMEOUT = 1800
# (variant, row label, mount flags). The default prefetch (all) keeps
# fetching in the background while the command runs; --prefetch none
# fetches only what is read.
TRACE = "{trace}"  # in a row's flags: the trace recorded for that row's image
UCRFS_ROWS = (("gzip", "ucrfs lazy, gzip (unindexed: layers downloaded)", ()),
              ("eStargz", "ucrfs lazy, eStargz", ()),
              ("eStargz", "ucrfs lazy, eStargz, --prefetch none", ("--prefetch", "none")),
              # What follows each fetching read in the layer, fetched in a
              # request of its own while the command goes on.
              ("eStargz", "ucrfs lazy, eStargz, --read-ahead 512K", ("--read-ahead", "512K")),
              ("indexed gzip", "ucrfs lazy, indexed gzip", ()),
              ("indexed gzip", "ucrfs lazy, indexed gzip, --prefetch none", ("--prefetch", "none")),
              # Replays of a trace recorded by one untimed run of the command
              # (`mount --record`, then `mount --prefetch TRACE`): the bytes
              # the command reads are fetched in the order it reads them from
              # the moment the mount serves, at full bandwidth.
              ("eStargz", "ucrfs lazy, eStargz, replaying a recorded trace", ("--prefetch", TRACE)),
              ("indexed gzip", "ucrfs lazy, indexed gzip, replaying a recorded trace", ("--prefetch", TRACE)))


class Unavailable(Exception):
    """A row that cannot run here; its message says why."""


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def run(cmd, timeout=STEP_TIMEOUT, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p


def first_line(cmd, t0, timeout=STEP_TIMEOUT, env=None):
    """Starts cmd; returns (seconds from t0 to its first stdout line, the line).
    Waits for it to exit and fails unless it printed 1 and exited 0."""
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                raise RuntimeError(f"{' '.join(cmd)}: no output within {timeout} s")
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        t = time.monotonic() - t0
        rest, _ = p.communicate(timeout=120)
        line = buf.split(b"\n", 1)[0].decode(errors="replace")
        if p.returncode != 0 or line.strip() != "1":
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}, first line {line!r}, "
                               f"stderr: {err.read().decode(errors='replace')[-800:]}")
        return t, line
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        err.close()


def rmtree(path):
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------- rows

class Ucrfs:
    def __init__(self, binary, work, name, image_ref, registry, extra=()):
        self.binary, self.work, self.name, self.image, self.registry = binary, work, name, image_ref, registry
        self.extra = list(extra)

    def record_trace(self):
        """For a row that replays a trace: records it once, untimed, with
        `mount --record` while the command runs (`--prefetch none`, so the
        trace holds only what the command reads), and puts its path in the
        row's flags. Kept across links: it names files and ranges, not the
        registry."""
        if TRACE not in self.extra:
            return
        trace = os.path.join(self.work, "trace-" + re.sub(r"[^a-z]+", "-", self.name.lower()) + ".json")
        if not os.path.exists(trace):
            store, mnt = os.path.join(self.work, "store-trace"), os.path.join(self.work, "mnt-trace")
            rmtree(store)
            os.makedirs(mnt, exist_ok=True)
            g = [self.binary, "--store", store, "--insecure-registry", self.registry.addr]
            try:
                run(g + ["mount", "--prefetch", "none", "--record", trace, self.image, mnt])
                first_line(["chroot", mnt, "python3", "-c", PY], time.monotonic(), env=ENV)
                run(g + ["umount", mnt], timeout=120)
            finally:
                if mounted(mnt):
                    subprocess.run(["umount", "-l", mnt], timeout=60)
                rmtree(store)
        self.extra = [trace if x == TRACE else x for x in self.extra]

    def measure(self, i):
        store = os.path.join(self.work, f"store-{i}")
        mnt = os.path.join(self.work, f"mnt-{i}")
        rmtree(store)
        os.makedirs(mnt, exist_ok=True)
        g = [self.binary, "--store", store, "--insecure-registry", self.registry.addr]
        try:
            drop_caches()
            mark = self.registry.mark()
            t0 = time.monotonic()
            p = run(g + ["--log-level", "info", "mount"] + self.extra + [self.image, mnt])
            ready = time.monotonic() - t0
            first, _ = first_line(["chroot", mnt, "python3", "-c", PY], t0, env=ENV)
            at_first = self.registry.served_since(mark, settle=0)[0]
            stats = json.loads(run([self.binary, "stats", "--json", mnt]).stdout)
            run(g + ["umount", mnt], timeout=120)
        finally:
            if mounted(mnt):
                subprocess.run([self.binary, "umount", "--lazy", mnt], capture_output=True, timeout=60)
            if mounted(mnt):
                subprocess.run(["umount", "-l", mnt], timeout=60)
        served, requests, blob_gets = self.registry.served_since(mark)
        # What the mount fetched before it served: `ucrfs stats` says so
        # (mountBytes) where it can, else the pull's log line.
        pulled = stats.get("mountBytes")
        if pulled is None:
            pulled = sum(int(n) for n in re.findall(r"blobs fetched \((\d+) bytes\)", p.stderr))
        if not mounted(mnt):
            rmtree(store)
        return {"ready": ready, "first": first, "served": served, "servedAtFirstLine": at_first,
                "requests": requests, "blobGets": blob_gets, "ucrfsPulled": pulled, "ucrfsStats": stats,
                "ucrfsBytes": pulled + int(stats.get("bytesFetched", 0))}


class FullPull:
    name = "full pull (skopeo copy + umoci unpack)"

    def __init__(self, work, image_ref, registry):
        self.work, self.image, self.registry = work, image_ref, registry

    def measure(self, i):
        layout, bundle = os.path.join(self.work, f"oci-{i}"), os.path.join(self.work, f"bundle-{i}")
        rmtree(layout)
        rmtree(bundle)
        try:
            drop_caches()
            mark = self.registry.mark()
            t0 = time.monotonic()
            run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{self.image}",
                 f"oci:{layout}:bench"])
            run(["umoci", "unpack", "--image", f"{layout}:bench", bundle])
            ready = time.monotonic() - t0
            first, _ = first_line(["chroot", os.path.join(bundle, "rootfs"), "python3", "-c", PY], t0, env=ENV)
        finally:
            rmtree(layout)
            rmtree(bundle)
        served, requests, blob_gets = self.registry.served_since(mark)
        return {"ready": ready, "first": first, "served": served, "requests": requests, "blobGets": blob_gets}


class ContainerdRun:
    name = "containerd (ctr pull + ctr run)"

    def __init__(self, work, image_ref, registry):
        self.work, self.image, self.registry = work, image_ref, registry

    def measure(self, i):
        from lib.containerd import Containerd
        cd = Containerd(self.work).start()
        try:
            ctr = ["ctr", "-a", cd.sock, "-n", CTR_NS]
            drop_caches()
            mark = self.registry.mark()
            t0 = time.monotonic()
            run(ctr + ["image", "pull", "--plain-http", "--snapshotter", "overlayfs", self.image])
            ready = time.monotonic() - t0
            envs = [a for k, v in ENV.items() if k != "PATH" for a in ("--env", f"{k}={v}")]
            first, _ = first_line(ctr + ["run", "--rm", "--snapshotter", "overlayfs"] + envs +
                                  [self.image, f"ucrfs-bench-{os.getpid()}-{i}", "python3", "-c", PY], t0)
        finally:
            cd.stop()
        served, requests, blob_gets = self.registry.served_since(mark)
        return {"ready": ready, "first": first, "served": served, "requests": requests, "blobGets": blob_gets}


# ------------------------------------------------------------- the images

def manifest(addr, repo, tag):
    req = urllib.request.Request(f"http://{addr}/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r), r.headers.get("Docker-Content-Digest")


def has_index_push(binary):
    """Whether the binary has `index push` (its help lists an index command
    whose help lists push; `--help` alone exits 0 for any words before it)."""
    top = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    if not re.search(r"^\s+index\s", top, re.M):
        return False
    sub = subprocess.run([binary, "index", "--help"], capture_output=True, text=True).stdout
    return re.search(r"^\s+push\s", sub, re.M) is not None


def push_images(cache, rec, registry, binary, work, span=None):
    """gzip and eStargz into the cached registry storage (once per built
    image); the indexed gzip every time (the index format follows the binary).
    Returns {variant: (reference tail, compressed bytes) or the reason it is missing}."""
    layout = rec["layout"]
    stamp_path = os.path.join(cache, "registry.json")
    stamp = {}
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            stamp = json.load(f)
    want = {"image": rec["layers"][-1]["digest"], "ctr-remote": sh(["ctr-remote", "--version"]).stdout.strip()}
    if {k: stamp.get(k) for k in want} != want:
        print("pushing gzip and converting to eStargz (once per built image) ...", flush=True)
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{rec['tag']}",
             f"docker://{registry.addr}/{REPO_NAME}:gzip"])
        from lib.containerd import Containerd
        cd = Containerd(work).start()
        try:
            # lib.containerd's convert(), with time for a 1 GB image.
            src, dst = f"{registry.addr}/{REPO_NAME}:gzip", f"{registry.addr}/{REPO_NAME}:esgz"
            ctr = ["ctr-remote", "-a", cd.sock, "-n", CTR_NS]
            run(ctr + ["content", "fetch", "--plain-http", src])
            run(ctr + ["image", "convert", "--estargz", "--oci", src, dst])
            run(ctr + ["image", "push", "--plain-http", dst])
        finally:
            cd.stop()
        with open(stamp_path, "w") as f:
            json.dump(want, f)
    out = {}
    for variant, tag in (("gzip", "gzip"), ("eStargz", "esgz")):
        m, _ = manifest(registry.addr, REPO_NAME, tag)
        out[variant] = (f"{REPO_NAME}:{tag}", sum(l["size"] for l in m["layers"]))
    if not has_index_push(binary):
        out["indexed gzip"] = "not available (ucrfs index push missing)"
    else:
        print("pushing the gzip image again and its ucrfs index ...", flush=True)
        ref = f"{registry.addr}/{IDX_REPO}:gzip"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{rec['tag']}", f"docker://{ref}"])
        store = os.path.join(work, "index-push-store")
        try:
            run([binary, "--store", store, "--insecure-registry", registry.addr, "index", "push"] +
                (["--span", span] if span else []) + [ref])
        finally:
            rmtree(store)
        m, _ = manifest(registry.addr, IDX_REPO, "gzip")
        out["indexed gzip"] = (f"{IDX_REPO}:gzip", sum(l["size"] for l in m["layers"]))
    return out


def link_rate(registry, repo, digest, nbytes=16 << 20):
    """Mbit/s of one Range GET of nbytes of a blob through the link."""
    req = urllib.request.Request(f"http://{registry.addr}/v2/{repo}/blobs/{digest}",
                                 headers={"Range": f"bytes=0-{nbytes - 1}"})
    t = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        n = len(r.read())
    return n * 8 / (time.monotonic() - t) / 1e6


# ---------------------------------------------------------------- report

def machine():
    try:
        with open("/etc/debian_version") as f:
            deb = "Debian " + f.read().strip().split(".")[0]
    except OSError:
        deb = os.uname().sysname
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / (1 << 20)
    return f"{deb}, {os.cpu_count()} cores, {mem:.0f} GiB"


def summarize(link, rows, compressed):
    """Per row: medians, ratio to the full pull, bytes / compressed image."""
    full = next((r for r in rows if r["kind"] == "full"), None)
    full_med = statistics.median(x["first"] for x in full["runs"]) if full and full["runs"] else None
    out = []
    for r in rows:
        s = {"link": link, "row": r["name"], "kind": r["kind"], "unavailable": r.get("unavailable")}
        if r["runs"]:
            firsts = [x["first"] for x in r["runs"]]
            s["first"] = statistics.median(firsts)
            s["min"], s["max"] = min(firsts), max(firsts)
            s["ready"] = statistics.median(x["ready"] for x in r["runs"])
            s["served"] = statistics.median(x["served"] for x in r["runs"])
            s["ratio"] = s["first"] / full_med if full_med else None
            s["fraction"] = s["served"] / compressed
            if "ucrfsBytes" in r["runs"][0]:
                s["ucrfsBytes"] = statistics.median(x["ucrfsBytes"] for x in r["runs"])
            if r["kind"] == "ucrfs" and s["ratio"] is not None:
                s["timeTarget"] = TARGET_TIME[link]
                s["timeMet"] = s["ratio"] <= TARGET_TIME[link]
                s["bytesMet"] = s["fraction"] <= TARGET_BYTES
        out.append(s)
    return out


def table(date, mach, summaries):
    lines = ["| date | machine | link | row | cold start s (median) | min-max s | rootfs ready s | "
             "ratio to full pull | MB fetched | fetched / compressed image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        if "first" not in s:
            lines.append(f"| {date} | {mach} | {s['link']} | {s['row']} | {s['unavailable']} | | | | | |")
            continue
        if s["kind"] == "full":
            ratio = "1"
        elif s["ratio"] is None:
            ratio = "no full pull measured"
        else:
            ratio = f"**{s['ratio']:.3f}** (1/{1 / s['ratio']:.1f})"
        lines.append(f"| {date} | {mach} | {s['link']} | {s['row']} | {s['first']:.2f} | "
                     f"{s['min']:.2f}-{s['max']:.2f} | {s['ready']:.2f} | {ratio} | {s['served'] / 1e6:.1f} | "
                     f"{100 * s['fraction']:.1f}% |")
    return "\n".join(lines)


def verdicts(summaries, runs):
    out = []
    for s in summaries:
        if s["kind"] != "ucrfs" or "first" not in s or s["ratio"] is None:
            continue
        t = "met" if s["timeMet"] else "NOT met"
        b = "met" if s["bytesMet"] else "NOT met"
        out.append(f"{s['link']}, {s['row']}: cold start {s['ratio']:.3f} of the full pull "
                   f"(target <= 1/{round(1 / s['timeTarget'])}: {t}); fetched {100 * s['fraction']:.1f}% "
                   f"of the compressed image (target <= {100 * TARGET_BYTES:.0f}%: {b})")
    if runs < 3:
        out.append(f"only {runs} run(s) per row: the targets ask for medians of at least 3")
    return out


# ------------------------------------------------------------------ main

def on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ucrfs", default=os.path.join(REPO, "build", "tools", "ucrfs"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", default="/var/tmp/ucrfs-bench-startup",
                    help="the built image and the registry storage are kept here")
    ap.add_argument("--link", choices=("loopback", "100mbit", "both"), default="both")
    ap.add_argument("--json", help="raw timings here (default: CACHE/results-DATE.json)")
    ap.add_argument("--index-span", metavar="SIZE",
                    help="`ucrfs index push --span SIZE` for the indexed gzip image (default: ucrfs's)")
    ap.add_argument("--only", help="comma-separated row kinds to run: full,containerd,ucrfs (all by default)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (drop_caches, chroot, FUSE, network namespaces)")
    missing = [t for t in ("docker-registry", "skopeo", "umoci", "containerd", "ctr", "ctr-remote", "runc",
                           "debootstrap", "ip", "tc") if not shutil.which(t)]
    if missing:
        sys.exit("missing: " + ", ".join(missing))
    binary = os.path.abspath(a.ucrfs)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no ucrfs binary at {binary} (--ucrfs)")
    only = set(a.only.split(",")) if a.only else {"full", "containerd", "ucrfs"}
    signal.signal(signal.SIGTERM, on_sigterm)
    cache = os.path.abspath(a.cache)
    load0 = os.getloadavg()[0]
    try:
        os.nice(-20)
    except OSError:
        pass

    rec = image.build(cache)
    print(image.describe(rec), flush=True)
    compressed = rec["compressed"]
    links = ["loopback", "100mbit"] if a.link == "both" else [a.link]
    date = datetime.date.today().isoformat()
    mach = machine()
    work = tempfile.mkdtemp(prefix="ucrfs-startup-", dir="/var/tmp")
    storage = os.path.join(cache, "registry")
    raw = {"date": date, "machine": mach, "image": rec, "command": PY, "runs": a.runs, "argv": sys.argv[1:],
           "links": {}}
    reg = link = None
    summaries, loads = [], []
    try:
        reg = Registry(storage, work).start()
        variants = push_images(cache, rec, reg, binary, work, a.index_span)
        raw["variants"] = {k: (v if isinstance(v, str) else {"ref": v[0], "compressed": v[1]})
                           for k, v in variants.items()}
        for k, v in variants.items():
            print(f"  {k}: " + (v if isinstance(v, str) else f"{v[0]}, {v[1] / 1e6:.0f} MB compressed"))
        stargz = shutil.which("containerd-stargz-grpc")
        stargz_note = ("containerd + stargz snapshotter (rpull): " +
                       ("containerd-stargz-grpc found but not wired in yet" if stargz else
                        "not measured: Debian's stargz-snapshotter package ships ctr-remote only, "
                        "not the containerd-stargz-grpc snapshotter daemon"))
        print(stargz_note)
        raw["stargzSnapshotter"] = stargz_note
        for ln in links:
            if ln == "100mbit":
                reg.stop()
                link = ShapedLink("100mbit")
                link.up()
                reg = Registry(storage, work, host=link.ns_ip, port=5000, netns=link.netns).start()
            rate = link_rate(reg, REPO_NAME, rec["layers"][-1]["digest"])
            print(f"\n== {ln}: registry at {reg.addr}, one 16 MiB Range GET at {rate:.0f} Mbit/s", flush=True)
            rows = []
            if "full" in only:
                rows.append({"kind": "full", "obj": FullPull(work, f"{reg.addr}/{variants['gzip'][0]}", reg)})
            if "containerd" in only:
                rows.append({"kind": "containerd",
                             "obj": ContainerdRun(work, f"{reg.addr}/{variants['gzip'][0]}", reg)})
            if "ucrfs" in only:
                for v, label, extra in UCRFS_ROWS:
                    if v == "indexed gzip" and a.index_span:
                        label = label.replace("indexed gzip", f"indexed gzip (--span {a.index_span})")
                    if isinstance(variants[v], str):
                        rows.append({"kind": "ucrfs", "name": label, "unavailable": variants[v], "runs": []})
                    else:
                        rows.append({"kind": "ucrfs", "name": label, "obj": Ucrfs(
                            binary, work, label, f"{reg.addr}/{variants[v][0]}", reg, extra)})
            for r in rows:
                r.setdefault("name", getattr(r.get("obj"), "name", None))
                r.setdefault("runs", [])
                if isinstance(r.get("obj"), Ucrfs):
                    r["obj"].record_trace()
            for i in range(a.runs):
                for r in rows:
                    if "obj" not in r:
                        continue
                    load = os.getloadavg()[0]
                    res = r["obj"].measure(i)
                    res["load1"] = load
                    loads.append(load)
                    r["runs"].append(res)
                    print(f"  run {i + 1}/{a.runs} {r['name']}: first line {res['first']:.2f} s "
                          f"(ready {res['ready']:.2f} s), registry served {res['served'] / 1e6:.1f} MB "
                          f"in {res['requests']} requests", flush=True)
            raw["links"][ln] = {"registry": reg.addr, "rangeGetMbit": rate,
                                "rows": [{k: v for k, v in r.items() if k != "obj"} for r in rows]}
            summaries += summarize(ln, rows, compressed)
    finally:
        if reg:
            reg.stop()
        if link:
            link.down()
        leftovers = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith(work + "/")]
        for m in sorted(leftovers, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    raw["summary"] = summaries
    note = busy_note(load0)
    if loads:
        note += (f"; before each measurement: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
                 f"max {max(loads):.2f}")
    raw["load"] = note
    out = a.json or os.path.join(cache, f"results-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    with open(out, "w") as f:
        json.dump(raw, f, indent=1)
    print()
    print(image.describe(rec))
    print(f"command: chroot ROOTFS python3 -c '{PY}'; median of {a.runs} runs; bytes fetched = what the registry "
          f"served; fraction of the gzip image's {compressed / 1e6:.0f} MB")
    print(table(date, mach, summaries))
    for v in verdicts(summaries, a.runs):
        print(v)
    print(stargz_note)
    print(note)
    print(f"raw timings: {out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (servers stopped, mounts and the network namespace removed)")
