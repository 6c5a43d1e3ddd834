"""Read traces: `ucrfs mount --record FILE` and `--prefetch FILE`.

The TRACE image (two gzip layers built here, converted to eStargz by
stargz-snapshotter's `ctr-remote` through a private containerd, see
lib/containerd.py) is served by lib/fakereg.FakeRegistry, which records the
blob ranges it serves. Each layer starts with filler files ("fill/"), then
the files the workload reads ("app/"), so the chunks the workload needs lie
after chunks it never reads.

Contract under test:
- `--record FILE` with `--prefetch none`: before any read nothing of the
  workload's files is fetched; reading chosen files in a chosen order, then
  `ucrfs umount`, leaves FILE naming exactly those files in that order, each
  range covering what was read (and only about that: a 16 KiB read of a
  6 MiB file is not the whole file), names escaped as documented;
- the trace is also written while the mount serves (within a few seconds of
  a read) and when the server ends on SIGTERM;
- `--prefetch FILE` in a fresh store: the replay fetches those files'
  chunks before any read, in trace order. The background fetch cannot
  explain it: the registry holds every request for the filler chunks that
  come first in each layer (the background fetch goes in blob order, one
  chunk at a time, so it is stuck on the first), and the test checks it was
  indeed held and that nothing but the traced chunks was served. Reading the
  same ranges afterwards makes no request at all; once the hold is released
  the layers carry on as `all` and fetch the rest;
- paths of the trace the image does not have are skipped and counted
  (`ucrfs stats`: traceMissing), the rest replayed;
- a missing or malformed trace file, or a --record path in a missing
  directory: exit 1, one line on stderr naming the problem, nothing mounted,
  the registry not even asked;
- non-UTF-8 names (an OCI layout image, whose tar keeps them byte-exact:
  the eStargz TOC is JSON and cannot) round-trip through the trace file.
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

from lib import containerd as CD
from lib import images as I
from lib import layers as L
from lib.fakereg import FakeRegistry
from lib.mounts import MountTestCase, is_mounted, server_pids, wait_for
from lib.registry import Pusher, RealRegistry
from lib.util import sha256_digest

MiB = 1 << 20
KiB = 1 << 10
REPO = "trace/img"
ODD = "app/100% ünï"  # '%' is the escape character of trace paths
FILES = {  # name -> size; the app/ files are what the workload reads
    "app/lib.so": 6 * MiB + 11,  # two chunks: the workload reads only in the second
    "app/bin": 300000,
    "app/conf": 5,
    ODD: 9,
    "app/unused": 500000,
    "app/data": 2 * MiB + 7,     # layer 2
}
FILLERS = ["fill/f%02d" % i for i in range(12)]  # 1 MiB each, first in layer 1
FILLER2 = "fill2/g0"                              # 1 MiB, first in layer 2
# The workload: (name, offset, length or -1 for the rest), in this order,
# which is not the order of the files in the blobs.
WORKLOAD = [("app/bin", 0, -1), ("app/data", 0, -1), ("app/lib.so", 5 * MiB + 3, 16 * KiB),
            (ODD, 0, -1), ("app/conf", 0, -1)]
ORDER = ["/" + name for name, _, _ in WORKLOAD]

_READER = r"""
import hashlib, os, sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
h = hashlib.sha256()
pos, left = off, n
while left != 0:
    b = os.pread(fd, 1 << 20 if left < 0 else min(left, 1 << 20), pos)
    if not b:
        break
    h.update(b)
    pos += len(b)
    left -= len(b) if left > 0 else 0
print(h.hexdigest())
"""


def rnd(seed, n):
    return random.Random("trace/%s" % seed).randbytes(n)


def contents():
    c = {name: rnd(name, size) for name, size in FILES.items()}
    c["app/conf"] = b"conf\n"
    c[ODD] = b"odd name\n"
    return c


def trace_tars(c):
    l1 = [L.dir_("fill")] + [L.reg(f, rnd(f, MiB)) for f in FILLERS] + [L.dir_("app")]
    l1 += [L.reg(n, c[n]) for n in ("app/lib.so", "app/bin", "app/conf", ODD, "app/unused")]
    l2 = [L.dir_("fill2"), L.reg(FILLER2, rnd(FILLER2, MiB)), L.dir_("app"), L.reg("app/data", c["app/data"])]
    return [L.make_layer_tar(l1), L.make_layer_tar(l2)]


def get_url(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers.get("Content-Type"), r.read()


def expand(name, off, length, size):
    return off, (size if length < 0 else min(size, off + length))


class TraceMountTest(MountTestCase):
    mount_tools = ("containerd", "ctr-remote")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()  # skips without root, /dev/fuse, containerd, ctr-remote
        reason = CD.skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        tmp = cls.class_tmp
        cls.contents = contents()
        original = L.image_from_tars(trace_tars(cls.contents), "gzip", level=1)
        registry = RealRegistry(os.path.join(tmp, "registry"))
        cls.addClassCleanup(registry.stop)
        registry.start()
        Pusher(registry.url).push_image(REPO, original, "orig")
        cd = CD.Containerd(tmp)
        cls.addClassCleanup(cd.stop)
        cd.start()
        cd.convert("%s/%s:orig" % (registry.addr, REPO), "%s/%s:esgz" % (registry.addr, REPO), "estargz")
        cd.stop()
        accept = ", ".join([I.OCI_MANIFEST, I.DOCKER_MANIFEST])
        media_type, manifest = get_url("%s/v2/%s/manifests/esgz" % (registry.url, REPO), accept)
        m = json.loads(manifest)
        blobs = {}
        for d in [m["config"]] + m["layers"]:
            _, blobs[d["digest"]] = get_url("%s/v2/%s/blobs/%s" % (registry.url, REPO, d["digest"]))
        registry.stop()
        cls.layers = [(l["digest"], l["size"], CD.read_toc(blobs[l["digest"]], "estargz")) for l in m["layers"]]
        # Where each file's chunks are: (layer index, toc).
        cls.where = {}
        for i, (_, _, toc) in enumerate(cls.layers):
            for e in toc.entries:
                if e.get("type") == "reg":
                    cls.where[e["name"]] = i
        problems = [n for n in list(FILES) + FILLERS + [FILLER2] if n not in cls.where]
        if problems or len(cls.layers) != 2 or len(cls.layers[0][2].chunks("app/lib.so")) < 2:
            raise AssertionError("fixture problem: conversion lost %s or did not chunk app/lib.so: %r" % (
                problems, [len(t.entries) for _, _, t in cls.layers]))
        cls.fake = FakeRegistry()
        for d, data in blobs.items():
            cls.fake.add_blob(data, d)
        cls.fake.add_manifest(REPO, "esgz", media_type, manifest)
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.image = "%s/%s:esgz" % (cls.fake.addr, REPO)

    def setUp(self):
        super().setUp()
        self.fake.faults["hold_below"] = {}
        self.fake.hold_release.clear()
        # Whatever a test held is let go at its end (after its mounts are gone).
        self.addCleanup(self.fake.faults.__setitem__, "hold_below", {})
        self.addCleanup(self.fake.hold_release.set)

    # ------------------------------------------------------------ helpers

    def chunks_of(self, name, lo, hi):
        """[(layer digest, blob offset)] of the chunks holding bytes [lo, hi) of a file."""
        i = self.where[name]
        digest, _, toc = self.layers[i]
        cs = toc.chunks(name)
        out = []
        for k, (co, off) in enumerate(cs):
            end = cs[k + 1][0] if k + 1 < len(cs) else FILES.get(name, 1 << 62)
            if co < hi and lo < end:
                out.append((digest, off))
        return out

    def chunks_in(self, served):
        """[(layer digest, blob offset)] of the chunks the GETs served, in
        the order served. One GET may carry several chunks: adjacent ranges
        are coalesced, and a read's request brings neighbours."""
        starts = {d: sorted({e["offset"] for e in toc.entries if e.get("type") in ("reg", "chunk") and "offset" in e})
                  for d, _, toc in self.layers}
        out = []
        for s in served:
            for off in starts.get(s.digest, ()):
                if s.start <= off < s.start + s.length and (s.digest, off) not in out:
                    out.append((s.digest, off))
        return out

    def read_range(self, mp, name, off=0, length=-1):
        p = subprocess.run([sys.executable, "-c", _READER, os.path.join(mp, name), str(off), str(length)],
                           capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, "reading %s: %r" % (name, p.stderr))
        data = self.contents[name]
        want = data[off:] if length < 0 else data[off:off + length]
        self.assertEqual(p.stdout.decode().strip(), hashlib.sha256(want).hexdigest(), "content of %s" % name)

    def run_workload(self, mp):
        for name, off, length in WORKLOAD:
            self.read_range(mp, name, off, length)

    def stats(self, mp):
        res = self.ucrfs("stats", "--json", mp)
        self.assertSucceeded(res)
        return json.loads(res.stdout)

    def wait_stats(self, mp, pred, what, timeout=60):
        st = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.stats(mp)
            if pred(st):
                return st
            time.sleep(0.2)
        self.fail("%s: not within %ss; stats %r" % (what, timeout, st))

    def load_trace(self, path):
        with open(path, "rb") as f:
            return json.loads(f.read())

    def write_trace(self, name, reads, version=1):
        p = self.path(name)
        with open(p, "w") as f:
            json.dump({"version": version, "reads": reads}, f)
        return p

    def served_since(self, mark):
        with self.fake.lock:
            return list(self.fake.served[mark:])

    def assertWorkloadTrace(self, trace):
        """The trace names the workload's files in its order and covers
        what it read, block-aligned, and not much more."""
        self.assertEqual(trace.get("version"), 1, trace)
        reads = trace["reads"]
        paths = []
        for r in reads:
            if not paths or paths[-1] != r["path"]:
                paths.append(r["path"])
        escaped = [p.replace("%", "%25") for p in ORDER]
        self.assertEqual(paths, escaped, "files of the trace, in order: %r" % reads)
        for name, off, length in WORKLOAD:
            lo, hi = expand(name, off, length, FILES[name])
            mine = [r for r in reads if r["path"] == "/" + name.replace("%", "%25")]
            for r in mine:
                self.assertEqual(r["offset"] % (64 * KiB), 0, r)
                self.assertLessEqual(r["offset"] + r["length"], FILES[name], r)
                self.assertGreaterEqual(r["offset"], lo - 64 * KiB, "%s: read from %d: %r" % (name, lo, r))
                self.assertLessEqual(r["offset"] + r["length"], hi + MiB, "%s: read up to %d: %r" % (name, hi, r))
            covered = sorted((r["offset"], r["offset"] + r["length"]) for r in mine)
            pos = lo
            for a, b in covered:
                if a <= pos:
                    pos = max(pos, b)
            self.assertGreaterEqual(pos, hi, "%s: [%d, %d) read, the trace covers %r" % (name, lo, hi, covered))

    # ------------------------------------------------------------ record, then replay

    def test_record_then_replay(self):
        # --- record, with nothing fetched in the background
        trace_path = self.path("trace.json")
        m0 = self.fake.mark()
        _, mp = self.mount(self.image, mount_args=("--prefetch", "none", "--record", trace_path))
        time.sleep(1.0)
        wanted = [c for name, off, length in WORKLOAD for c in self.chunks_of(name, *expand(name, off, length, FILES[name]))]
        early = [c for c in self.chunks_in(self.served_since(m0)) if c in set(wanted)]
        self.assertEqual(early, [], "--prefetch none: the workload's chunks were fetched before any read")
        self.run_workload(mp)
        self.umount(mp)
        trace = self.load_trace(trace_path)
        self.assertWorkloadTrace(trace)

        # --- replay in a fresh store, the background fetch held at the fillers
        for i, (d, _, _) in enumerate(self.layers):
            self.fake.faults["hold_below"][d] = min(
                off for name in FILES if self.where[name] == i for _, off in self.chunks_of(name, 0, FILES[name]))
        traced = []  # the traced ranges' chunks, first need first
        range_of = {}  # chunk -> the first range that needs it
        for i, r in enumerate(trace["reads"]):
            name = r["path"][1:].replace("%25", "%")
            for c in self.chunks_of(name, r["offset"], r["offset"] + r["length"]):
                if c not in traced:
                    traced.append(c)
                    range_of[c] = i
        store = self.path("store-replay")
        mp2 = self.mountpoint("replay")
        m1 = self.fake.mark()
        held0 = len(self.fake.held)
        self.mount(self.image, mp=mp2, store=store, mount_args=("--prefetch", trace_path, "--fetch-timeout", "120"))
        st = self.wait_stats(mp2, lambda s: s.get("traceDone"), "trace replayed")
        self.assertEqual((st["traceRanges"], st["traceReads"], st["traceMissing"], st["traceFailed"]),
                         (len(trace["reads"]), len(trace["reads"]), 0, 0), st)
        self.assertGreater(st["traceBytes"], 0, st)
        served = self.served_since(m1)
        chunks_served = self.chunks_in(served)
        # Each layer's background fetch is under way, stuck on its first chunk.
        self.assertTrue(wait_for(lambda: len({d for d, _ in self.fake.held[held0:]}) == len(self.layers), 10),
                        "the background fetch is not waiting on the held filler chunks, so the test shows "
                        "nothing: held %r, served %r" % (self.fake.held[held0:], served))
        self.assertEqual(sorted(set(chunks_served)), sorted(traced),
                         "with the background fetch held, the replay must have fetched exactly the traced "
                         "chunks before any read")
        # The replay has four ranges in flight at once, started in trace
        # order: a chunk is never fetched after one of a range four or more
        # fetching ranges later (a range whose chunks came with an earlier
        # range's request, as its neighbours, fetches nothing and holds no
        # place).
        ranges = [range_of[c] for c in sorted(traced, key=chunks_served.index)]
        rank = {r: k for k, r in enumerate(sorted(set(ranges)))}
        ranks = [rank[r] for r in ranges]
        late = [(i, r) for i, r in enumerate(ranks) if r < max(ranks[:i] or [0]) - 3]
        self.assertEqual(late, [], "traced chunks fetched out of trace order (ranges in fetch order %r): %r"
                         % (ranges, served))

        # --- the workload now reads from the cache
        m2 = self.fake.mark()
        self.run_workload(mp2)
        self.assertEqual(self.served_since(m2), [], "the workload's reads after the replay went to the registry")

        # --- released, the layers carry on as `all`
        self.fake.hold_release.set()
        st = self.wait_stats(mp2, lambda s: s["prefetchRunning"] == 0, "background fetch finished")
        time.sleep(0.6)
        st = self.stats(mp2)
        self.assertGreater(st["prefetchedChunks"], len(FILLERS), st)
        self.assertEqual(st["fetchErrors"], 0, st)
        for d, size, toc in self.layers:
            total = sum(s.length for s in self.served_since(m1) if s.digest == d)
            self.assertGreaterEqual(total, toc.offset * 0.9, "layer %s: the background fetch did not carry on" % d)
            self.assertLessEqual(total, size * 1.1 + MiB, "layer %s fetched twice over" % d)
        self.read_range(mp2, "app/unused")
        self.umount(mp2, store=store)

    # ------------------------------------------------------------ when traces are written

    def test_trace_written_while_serving_and_on_sigterm(self):
        """Left alone until a read; then rewritten within a few seconds;
        written last when the server ends on SIGTERM."""
        trace_path = self.write_trace("live.json", [{"path": "/old", "offset": 0, "length": 1}])
        _, mp = self.mount(self.image, mount_args=("--prefetch", "none", "--record", trace_path))
        time.sleep(3)
        self.assertEqual(self.load_trace(trace_path)["reads"], [{"path": "/old", "offset": 0, "length": 1}],
                         "the trace file was replaced before anything was read")
        self.read_range(mp, "app/conf")

        def names():
            try:
                return [r["path"] for r in self.load_trace(trace_path)["reads"]]
            except (OSError, ValueError):
                return None
        self.assertTrue(wait_for(lambda: names() == ["/app/conf"], 6), "trace while serving: %r" % names())
        self.read_range(mp, "app/bin")
        pids = server_pids(mp)
        self.assertEqual(len(pids), 1, pids)
        os.kill(pids[0], signal.SIGTERM)
        self.assertTrue(wait_for(lambda: not server_pids(mp) and not is_mounted(mp), 15),
                        "the server did not end on SIGTERM")
        got = []
        for p in names():
            if not got or got[-1] != p:
                got.append(p)
        self.assertEqual(got, ["/app/conf", "/app/bin"])

    def test_nothing_read_writes_an_empty_trace(self):
        trace_path = self.path("empty.json")
        _, mp = self.mount(self.image, mount_args=("--prefetch", "none", "--record", trace_path))
        os.listdir(os.path.join(mp, "app"))  # lookups and listings are not reads
        self.umount(mp)
        self.assertEqual(self.load_trace(trace_path), {"version": 1, "reads": []})

    # ------------------------------------------------------------ partial and bad traces

    def test_missing_paths_are_skipped(self):
        trace_path = self.write_trace("partial.json", [
            {"path": "/app/nope", "offset": 0, "length": 10},
            {"path": "/app/conf", "offset": 0, "length": 5},
            {"path": "/app", "offset": 0, "length": 10},
            {"path": "/fill2/g0/under-a-file", "offset": 0, "length": 10},
        ])
        m = self.fake.mark()
        _, mp = self.mount(self.image, mount_args=("--prefetch", trace_path))
        st = self.wait_stats(mp, lambda s: s.get("traceDone"), "trace replayed")
        self.assertEqual((st["traceRanges"], st["traceReads"], st["traceBytes"], st["traceMissing"],
                          st["traceFailed"]), (4, 1, 5, 3, 0), st)
        d, off = self.chunks_of("app/conf", 0, 5)[0]
        self.assertIn((d, off), self.chunks_in(self.served_since(m)),
                        "app/conf's chunk was not fetched")
        res = self.ucrfs("stats", mp)
        self.assertSucceeded(res)
        self.assertIn("trace replay:      1 of 4 ranges read (5 bytes), 3 missing, 0 failed; done", res.stdout)
        self.umount(mp)

    def test_bad_trace_refused_before_anything(self):
        long_name = "/" + "n" * 256
        cases = [
            ("missing", None, r"--prefetch.*trace .*missing\.json: No such file"),
            ("notjson", "{\"version\": 1, ", r"trace .*notjson\.json: invalid JSON at byte"),
            ("version", json.dumps({"version": 2, "reads": []}), r"version 2 is not supported"),
            ("relative", json.dumps({"version": 1, "reads": [{"path": "app/conf", "offset": 0, "length": 1}]}),
             r"reads\[0\]\.path: relative path 'app/conf'"),
            ("dotdot", json.dumps({"version": 1, "reads": [
                {"path": "/app/conf", "offset": 0, "length": 1},
                {"path": "/app/../etc", "offset": 0, "length": 1}]}), r"reads\[1\]\.path: '\.\.' component"),
            ("negative", json.dumps({"version": 1, "reads": [{"path": "/a", "offset": -1, "length": 1}]}),
             r"reads\[0\]\.offset: expected a non-negative integer"),
            ("huge", json.dumps({"version": 1, "reads": [{"path": "/a", "offset": 1 << 60, "length": 1}]}),
             r"beyond 2\^53"),
            ("longname", json.dumps({"version": 1, "reads": [{"path": long_name, "offset": 0, "length": 1}]}),
             r"longer than 255"),
        ]
        for tag, body, pattern in cases:
            with self.subTest(tag):
                p = self.path(tag + ".json")
                if body is not None:
                    with open(p, "w") as f:
                        f.write(body)
                mp = self.mountpoint("mnt-" + tag)
                m = len(self.fake.requests_for())
                res, _ = self.mount(self.image, mp=mp, check=False, mount_args=("--prefetch", p))
                self.assertFailedOneLine(res, pattern)
                self.assertNothingMounted(mp)
                self.assertEqual(self.fake.requests_for()[m:], [], "the registry was asked before the trace "
                                 "was checked")
        mp = self.mountpoint("mnt-empty")
        res, _ = self.mount(self.image, mp=mp, check=False, mount_args=("--prefetch", ""))
        self.assertFailedOneLine(res, r"--prefetch: '' is not none, landmark or all")
        self.assertNothingMounted(mp)
        mp = self.mountpoint("mnt-record")
        m = len(self.fake.requests_for())
        res, _ = self.mount(self.image, mp=mp, check=False,
                            mount_args=("--record", os.path.join(self.tmp, "nodir", "t.json")))
        self.assertFailedOneLine(res, r"--record .*t\.json: directory .*nodir: No such file")
        self.assertNothingMounted(mp)
        self.assertEqual(self.fake.requests_for()[m:], [])


class NonUtf8TraceTest(MountTestCase):
    """Names that are not UTF-8, from a gzip image in an OCI layout (plain
    layers: the replay reads from the store; nothing lazy)."""

    def test_non_utf8_names_round_trip(self):
        names = [b"odd/caf\xe9", b"odd/\xff\xfe 100%", "odd/ünï".encode()]
        data = {n: rnd(n, 70000 + i) for i, n in enumerate(names)}
        tar = L.make_layer_tar([L.dir_("odd")] + [L.reg(n, data[n]) for n in names])
        layout = self.path("layout")
        I.write_oci_layout(layout, {"t": L.image_from_tars([tar], "gzip")})
        image = "oci:%s:t" % layout
        trace_path = self.path("odd.json")
        _, mp = self.mount(image, mount_args=("--record", trace_path))
        for n in reversed(names):
            with open(os.path.join(os.fsencode(mp), n), "rb") as f:
                self.assertEqual(f.read(), data[n])
        self.umount(mp)
        with open(trace_path, "rb") as f:
            raw = f.read()
        trace = json.loads(raw)
        paths = []
        for r in trace["reads"]:
            if not paths or paths[-1] != r["path"]:
                paths.append(r["path"])
        self.assertEqual(paths, ["/odd/ünï", "/odd/%FF%FE 100%25", "/odd/caf%E9"], raw)
        store = self.path("store-2")
        mp2 = self.mountpoint("replay")
        self.mount(image, mp=mp2, store=store, mount_args=("--prefetch", trace_path))
        deadline = time.monotonic() + 30
        st = {}
        while time.monotonic() < deadline and not st.get("traceDone"):
            time.sleep(0.2)
            res = self.ucrfs("stats", "--json", mp2, store=store)
            self.assertSucceeded(res)
            st = json.loads(res.stdout)
        self.assertEqual((st.get("traceDone"), st.get("traceReads"), st.get("traceMissing"), st.get("traceBytes")),
                         (True, 3, 0, sum(len(d) for d in data.values())), st)
        self.umount(mp2, store=store)


if __name__ == "__main__":
    unittest.main()
