"""Lazy mounts of eStargz and zstd:chunked layers (issue 4).

The LAZY image (two gzip layers built here: files of many sizes incl. a
20 MiB one the converter splits into 4 MiB chunks, many small files,
symlinks, hardlinks, xattrs, special modes, big ids, devices, a fifo, long
and UTF-8 names, a whiteout of a file and of a tree and an opaque directory
across the two layers) is pushed to a docker-registry on loopback and
converted there by stargz-snapshotter's `ctr-remote image convert
--estargz --oci` and `--zstdchunked --oci`, driven by a private containerd
(lib/containerd.py has the command lines and what the converter writes).

Contract under test (`ucrfs mount IMAGE DIR` of such an image):
- the mounted tree equals `umoci unpack` of the ORIGINAL image (every field
  lib/treecmp compares, every file's content): the converter's additions
  (`.no.prefetch.landmark`, eStargz's `stargz.index.json` TOC entry) are
  not image content and must not show;
- the lazy layers' blobs are not downloaded: after the mount the store has
  no <store>/blobs/sha256/<layer> and the registry served only Range
  requests of about the footer + TOC; reading one small file fetches far
  less than the blob, one region of the big file about one chunk, the
  whole tree at most about the blob;
- a TOC whose digest is not the one the manifest annotates: mount refused,
  one line on stderr naming the TOC/digest, nothing mounted (for
  zstd:chunked both the manifest-checksum and the toc.digest annotation
  the converter writes are checked, each altered alone);
- a chunk corrupted on the wire: that read fails with EIO, other files read
  fine, and once the fault is gone the same read returns the right bytes
  (the bad chunk was not cached);
- registry gone after the mount: reading an uncached file fails with EIO in
  bounded time (< 60 s; with the connection refused the default retries
  take a few seconds), and works again once the registry is back on the
  same port;
- two mounts of one image from one store share the chunk cache: the second
  mount's reads fetch nothing.

Laziness is measured with lib/fakereg.FakeRegistry (which counts the blob
bytes it serves, per request), loaded with exactly what the converter
pushed to the docker-registry; the oracle test mounts from the
docker-registry itself.
"""
import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import unittest
import urllib.request

from lib import containerd as CD
from lib import images as I
from lib import layers as L
from lib import treecmp as T
from lib.fakereg import FakeRegistry
from lib.mounts import MountTestCase
from lib.registry import Pusher, RealRegistry
from lib.util import run, sha256_digest

MiB = 1 << 20
T0 = 1700000000
REPO = "lazy/img"
FORMATS = ("estargz", "zstdchunked")
TAG = {"estargz": "esgz", "zstdchunked": "zstdchunked"}
MANIFEST_ACCEPT = ", ".join([I.OCI_MANIFEST, I.DOCKER_MANIFEST])

# Files whose content the tests check by path (besides the oracle walk).
SIZES = (0, 1, 511, 512, 513, 4095, 4096, 4097, 65536, 65537)
MOTD = "etc/motd"            # small, first in layer 1
M1 = "data/m1"               # 1 MiB + 3: one chunk; the one corrupted on the wire
M5 = "data/m5"               # 5 MiB + 17: two chunks; read with the registry gone
BIG = "data/big20"           # 20 MiB + 123: six chunks
BIG_SIZE = 20 * MiB + 123
L2BIG = "l2/big3"            # 3 MiB + 5 in layer 2
SMALL_COUNT = 200

# Converter artefacts that are not image content.
NOT_CONTENT = (b".no.prefetch.landmark", b".prefetch.landmark", b"stargz.index.json")


def rnd(seed, n):
    return random.Random("lazy/%s" % seed).randbytes(n)


def contents():
    """{path: bytes} of the regular files the tests read by name (final tree)."""
    c = {MOTD: b"welcome to the lazy image\n", M1: rnd(M1, MiB + 3), M5: rnd(M5, 5 * MiB + 17),
         BIG: rnd(BIG, BIG_SIZE), L2BIG: rnd(L2BIG, 3 * MiB + 5),
         "hard/a": b"group of three\n", "hard/m": rnd("hard/m", 300000),
         "etc/hostname": b"lazy layer 2\n"}
    for n in SIZES:
        c["data/s%d" % n] = rnd(n, n)
    return c


def lazy_tars():
    """The LAZY image's two uncompressed layer tars. Integer mtimes only
    (the TOC keeps seconds); every directory has its own entry; no `./`."""
    c = contents()
    l1 = [L.dir_("etc"), L.reg(MOTD, c[MOTD]), L.reg("etc/hostname", b"lazy layer 1\n"),
          L.dir_("data", mtime=T0 + 5)]
    for n in SIZES:
        l1.append(L.reg("data/s%d" % n, c["data/s%d" % n]))
    l1 += [L.reg(M1, c[M1]), L.reg(M5, c[M5], mode=0o600), L.reg(BIG, c[BIG], mode=0o755)]
    l1.append(L.dir_("small"))
    for i in range(SMALL_COUNT):
        l1.append(L.reg("small/f%03d" % i, rnd("small%d" % i, (i * 37) % 3000)))
    l1 += [
        L.dir_("links"),
        L.sym("links/rel", "../etc/hostname"), L.sym("links/abs", "/etc/hostname"),
        L.sym("links/dangling", "nowhere/at/all"), L.sym("links/dirlink", "../data"),
        L.sym("links/long", "t" * 300 + "/end"),
        L.dir_("hard"),
        L.reg("hard/a", c["hard/a"], mode=0o640, uid=7, gid=8),
        L.hard("hard/b", "hard/a"), L.hard("hard/c", "hard/a"),
        L.reg("hard/m", c["hard/m"]), L.hard("hard/m-link", "hard/m"),
        L.dir_("xattrs"),
        L.reg("xattrs/user", b"u", xattrs={"user.foo": "bar"}),
        L.reg("xattrs/bin", b"b", xattrs={"user.bin": b"\x00\xff\xfe\x80binary"}),
        L.dir_("xattrs/dir", xattrs={"user.dir": "1"}),
        L.dir_("modes"),
        L.reg("modes/setuid", b"suid\n", mode=0o4755),
        L.reg("modes/setgid", b"sgid\n", mode=0o2755),
        L.reg("modes/none", b"no bits\n", mode=0o000),
        L.dir_("modes/sticky", mode=0o1777),
        L.dir_("owners"),
        L.reg("owners/u70000", b"x", uid=70000, gid=70001),
        L.dir_("owners/d1000", mode=0o750, uid=1000, gid=1000),
        L.dir_("devs"),
        L.chr_("devs/null", 1, 3), L.blk("devs/sda", 8, 0, gid=6), L.fifo("devs/fifo"),
        L.dir_("names"),
        L.reg(b"names/" + b"L" * 255, b"255 bytes\n"),
        L.reg("names/ünïcødé-名前", b"utf-8\n"),
        L.dir_("wh"), L.reg("wh/file", b"to be whited out\n"), L.reg("wh/keep", b"stays\n"),
        L.dir_("wh/tree"), L.dir_("wh/tree/sub"), L.reg("wh/tree/sub/f", b"deep\n"),
        L.dir_("opq"), L.reg("opq/old", b"hidden by the opaque marker\n"),
        L.dir_("opq/olddir"), L.reg("opq/olddir/x", b"x\n"),
    ]
    t2 = T0 + 100
    l2 = [
        L.whiteout("wh/file"), L.whiteout("wh/tree"),
        L.dir_("opq", mode=0o775, mtime=t2), L.opaque("opq"),
        L.reg("opq/new", b"new in layer 2\n", mtime=t2),
        L.reg("etc/hostname", c["etc/hostname"], mode=0o600, mtime=t2),
        L.dir_("l2", mtime=t2), L.reg(L2BIG, c[L2BIG], mtime=t2),
    ]
    return [L.make_layer_tar(l1), L.make_layer_tar(l2)]


FACTS = [
    ("wh/file", "absent", None), ("wh/tree", "absent", None), ("wh/keep", "file", b"stays\n"),
    ("opq/old", "absent", None), ("opq/olddir", "absent", None),
    ("opq/new", "file", b"new in layer 2\n"),
    ("etc/hostname", "file", b"lazy layer 2\n"), ("links/rel", "follow-file", b"lazy layer 2\n"),
]
LINK_GROUPS = [{b"hard/a", b"hard/b", b"hard/c"}, {b"hard/m", b"hard/m-link"}]

_READER = r"""
import hashlib, os, sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    fd = os.open(path, os.O_RDONLY)
    try:
        h = hashlib.sha256()
        pos, left = off, n
        while left != 0:
            b = os.pread(fd, 1 << 20 if left < 0 else min(left, 1 << 20), pos)
            if not b:
                break
            h.update(b)
            pos += len(b)
            left -= len(b) if left > 0 else 0
        print("ok", h.hexdigest())
    finally:
        os.close(fd)
except OSError as e:
    print("errno", e.errno)
"""


def get_url(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers.get("Content-Type"), r.read()


def umoci_unpack(layout, tag, bundle):
    run(["umoci", "unpack", "--image", "%s:%s" % (layout, tag), bundle], timeout=300)
    return os.path.join(bundle, "rootfs")


def write_raw_layout(directory, tag, manifest_media_type, manifest, blobs):
    """An OCI layout holding one manifest (bytes) and its blobs ({digest: bytes})."""
    def put(digest, data):
        p = os.path.join(directory, "blobs", "sha256", digest.split(":", 1)[1])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    for d, data in blobs.items():
        put(d, data)
    put(sha256_digest(manifest), manifest)
    index = {"schemaVersion": 2, "mediaType": I.OCI_INDEX, "manifests": [{
        "mediaType": manifest_media_type, "digest": sha256_digest(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)


class Converted:
    """One converted image as pushed: manifest bytes/JSON, its blobs, the
    TOC of each layer."""

    def __init__(self, mode, media_type, manifest, blobs):
        self.mode = mode
        self.media_type = media_type
        self.manifest = manifest
        self.json = json.loads(manifest)
        self.blobs = blobs
        self.layers = self.json["layers"]
        self.tocs = [CD.read_toc(blobs[l["digest"]], mode) for l in self.layers]

    def layer(self, i):
        return self.layers[i]["digest"], self.layers[i]["size"], self.tocs[i]

    def altered(self, annotation):
        """The manifest with layer 0's `annotation` replaced by a wrong digest."""
        m = json.loads(self.manifest)
        ann = m["layers"][0]["annotations"]
        assert annotation in ann, (annotation, ann)
        ann[annotation] = sha256_digest(b"not the TOC of this layer")
        return json.dumps(m, indent=3).encode()


class LazyMountTest(MountTestCase):
    mount_tools = ("containerd", "ctr-remote")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()  # skips without root, /dev/fuse, containerd, ctr-remote
        reason = CD.skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        tmp = cls.class_tmp
        t0 = time.monotonic()
        cls.contents = contents()
        tars = lazy_tars()
        cls.original = L.image_from_tars(tars, "gzip", level=1)

        # The oracle: umoci's unpack of the original image.
        layout = os.path.join(tmp, "layout")
        I.write_oci_layout(layout, {"orig": cls.original})
        root = umoci_unpack(layout, "orig", os.path.join(tmp, "bundle-orig"))
        cls.ref = cls.walk_ok(root, "umoci orig")
        cls.fixture_problem("umoci tree", T.check_facts(root, FACTS))
        cls.fixture_problem("umoci hardlinks", T.link_groups(cls.ref, LINK_GROUPS))
        for p, data in cls.contents.items():
            n = cls.ref.get(p.encode())
            cls.fixture_problem("umoci content of " + p, [] if n is not None and
                                n.sha256 == hashlib.sha256(data).hexdigest() else ["differs"])
        cls.exclusions = T.default_exclusions(root_has_entry=False)

        # The real registry: original, then both conversions pushed beside it.
        cls.registry = RealRegistry(os.path.join(tmp, "registry"))
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start()
        Pusher(cls.registry.url).push_image(REPO, cls.original, "orig")
        cd = CD.Containerd(tmp)
        cls.addClassCleanup(cd.stop)
        cd.start()
        src = "%s/%s:orig" % (cls.registry.addr, REPO)
        for mode in FORMATS:
            cd.convert(src, "%s/%s:%s" % (cls.registry.addr, REPO, TAG[mode]), mode)
        cd.stop()

        cls.conv = {}
        for mode in FORMATS:
            mt, body = get_url("%s/v2/%s/manifests/%s" % (cls.registry.url, REPO, TAG[mode]),
                               MANIFEST_ACCEPT)
            m = json.loads(body)
            blobs = {}
            for d in [m["config"]] + m["layers"]:
                _, blobs[d["digest"]] = get_url("%s/v2/%s/blobs/%s" % (
                    cls.registry.url, REPO, d["digest"]))
            cls.conv[mode] = c = Converted(mode, mt, body, blobs)
            cls.check_conversion(c)

        # Guard: the converter kept everything the oracle compares (umoci can
        # unpack eStargz, a valid tar+gzip; not zstd).
        c = cls.conv["estargz"]
        elayout = os.path.join(tmp, "layout-esgz")
        write_raw_layout(elayout, "esgz", c.media_type, c.manifest, c.blobs)
        eroot = umoci_unpack(elayout, "esgz", os.path.join(tmp, "bundle-esgz"))
        got = {p: n for p, n in cls.walk_ok(eroot, "umoci esgz").items() if p not in NOT_CONTENT}
        cls.fixture_problem("umoci of the eStargz image vs of the original",
                            T.compare(cls.ref, got, cls.exclusions, limit=40))

        # The counting registry, serving exactly what was pushed.
        cls.fake = cls.new_fake_registry()
        cls.addClassCleanup(cls.fake.stop)
        print("\n  lazy fixture ready in %.1fs: %s" % (time.monotonic() - t0, "; ".join(
            "%s layers %s" % (m, [(l["size"], len(c.tocs[i].entries))
                                  for i, l in enumerate(c.layers)])
            for m, c in cls.conv.items())), flush=True)

    @classmethod
    def new_fake_registry(cls):
        reg = FakeRegistry()
        for mode, c in cls.conv.items():
            for d, data in c.blobs.items():
                reg.add_blob(data, d)
            reg.add_manifest(REPO, TAG[mode], c.media_type, c.manifest)
            reg.add_manifest(REPO, sha256_digest(c.manifest), c.media_type, c.manifest)
        reg.start()
        return reg

    @classmethod
    def fixture_problem(cls, what, problems):
        if problems:
            raise AssertionError("fixture problem: %s:\n  %s" % (what, "\n  ".join(problems[:40])))

    @classmethod
    def walk_ok(cls, root, what):
        nodes, errors = T.walk(root)
        if errors:
            raise AssertionError("walking %s (%s): %s" % (root, what, "; ".join(errors[:10])))
        return nodes

    @classmethod
    def check_conversion(cls, c):
        """What the converter must have produced for the tests to mean anything."""
        problems = []
        want_mt = I.OCI_LAYER_GZIP if c.mode == "estargz" else I.OCI_LAYER_ZSTD
        for l, toc in zip(c.layers, c.tocs):
            ann = l.get("annotations") or {}
            if l["mediaType"] != want_mt:
                problems.append("layer %s media type %s" % (l["digest"], l["mediaType"]))
            if ann.get(CD.ESTARGZ_TOC_DIGEST) != sha256_digest(toc.json):
                problems.append("layer %s: toc.digest %s is not the TOC's" % (
                    l["digest"], ann.get(CD.ESTARGZ_TOC_DIGEST)))
            if c.mode == "zstdchunked":
                if ann.get(CD.ZSTDCHUNKED_CHECKSUM) != sha256_digest(toc.compressed):
                    problems.append("layer %s: manifest-checksum is not the TOC's" % l["digest"])
                if not (ann.get(CD.ZSTDCHUNKED_POSITION) or "").startswith("%d:%d:" % (
                        toc.offset, toc.length)):
                    problems.append("layer %s: manifest-position %s" % (
                        l["digest"], ann.get(CD.ZSTDCHUNKED_POSITION)))
        chunks = c.tocs[0].chunks(BIG)
        if len(chunks) < 4:
            problems.append("%s: %s has %d chunk(s) in the TOC, expected >= 4" % (
                c.mode, BIG, len(chunks)))
        if not c.tocs[1].chunks(L2BIG):
            problems.append("%s: %s not in layer 2's TOC" % (c.mode, L2BIG))
        cls.fixture_problem("%s conversion" % c.mode, problems)

    # ------------------------------------------------------------ helpers

    def setUp(self):
        super().setUp()
        self.fake.faults["corrupt_at"] = {}
        self.addCleanup(self.fake.faults.__setitem__, "corrupt_at", {})

    def mount(self, image, mp=None, store=None, mount_args=("--prefetch", "none"), **kw):
        """These tests measure on-demand fetching: no background prefetch
        unless a test asks for it."""
        return super().mount(image, mp=mp, store=store, mount_args=mount_args, **kw)

    def stats(self, mp):
        res = self.ucrfs("stats", "--json", mp)
        self.assertSucceeded(res)
        return json.loads(res.stdout)

    def image(self, mode, reg=None, tag=None):
        return "%s/%s:%s" % ((reg or self.fake).addr, REPO, tag or TAG[mode])

    def blob_path(self, digest, store=None):
        return os.path.join(store or self.store, "blobs", "sha256", digest.split(":", 1)[1])

    def bounded_read(self, path, offset=0, length=-1, timeout=90):
        """Reads path in a child process (killed after timeout): ("ok", sha256
        hex) / ("errno", n) / ("timeout", None), and the seconds it took."""
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-c", _READER, path, str(offset), str(length)],
                               capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ("timeout", None), time.monotonic() - t0
        out = p.stdout.decode().split()
        if len(out) != 2:
            self.fail("reader failed: %r %r" % (p.stdout, p.stderr))
        kind, val = out
        return (kind, int(val) if kind == "errno" else val), time.monotonic() - t0

    def assertReads(self, mp, rel, offset=0, length=-1, label=""):
        want = self.contents[rel]
        want = want[offset:] if length < 0 else want[offset:offset + length]
        got, took = self.bounded_read(os.path.join(mp, rel), offset, length)
        self.assertEqual(got, ("ok", hashlib.sha256(want).hexdigest()),
                         "%sreading %s [%d, +%d) (%.1fs)" % (label, rel, offset, length, took))

    def assertSameTree(self, mp, label):
        got, errors = T.walk(mp)
        diffs = ["walk error: " + e for e in errors] + T.compare(self.ref, got, self.exclusions,
                                                                 limit=100)
        if diffs:
            self.fail("%s: the mount differs from umoci's unpack of the original image in "
                      "%s%d place(s); first: %s\n  %s\n(%s)" % (
                          label, "at least " if len(diffs) > 100 else "", len(diffs), diffs[0],
                          "\n  ".join(diffs[:60]), "; ".join(self.exclusions.describe())))
        return got

    def served_summary(self, digest, since):
        s = self.fake.served_for(digest, since)
        return "%d GET(s), %d bytes: %s" % (len(s), sum(x.length for x in s), s[:12])

    @staticmethod
    def toc_allowance(size, toc):
        """What fetching footer + TOC may cost: twice the tail from the TOC
        on, with at least 1 MiB tolerated for a speculative tail read, but
        never a quarter of the blob."""
        tail = size - toc.offset
        return min(max(2 * tail + 64 * 1024, MiB), size // 4)

    def assertOnlyTocFetched(self, mode, since, label):
        for i in range(len(self.conv[mode].layers)):
            digest, size, toc = self.conv[mode].layer(i)
            self.assertFalse(os.path.exists(self.blob_path(digest)),
                             "%s: layer %d's blob %s (%d bytes) was downloaded into the store" % (
                                 label, i, digest, size))
            served = self.fake.served_for(digest, since)
            whole = [s for s in served if not s.ranged]
            self.assertEqual(whole, [], "%s: layer %d's blob fetched without Range: %s" % (
                label, i, self.served_summary(digest, since)))
            limit = self.toc_allowance(size, toc)
            self.assertLessEqual(sum(s.length for s in served), limit,
                                 "%s: layer %d (blob %d bytes, TOC+footer %d bytes): more than "
                                 "%d bytes fetched: %s" % (label, i, size, size - toc.offset,
                                                           limit, self.served_summary(digest, since)))

    # ------------------------------------------------------------ oracle

    def check_oracle(self, mode):
        image = "%s/%s:%s" % (self.registry.addr, REPO, TAG[mode])
        _, mp = self.mount(image)
        got = self.assertSameTree(mp, "%s from docker-registry" % mode)
        self.assertEqual(T.check_facts(mp, FACTS), [], "%s: layer semantics" % mode)
        self.assertEqual(T.link_groups(got, LINK_GROUPS), [], "%s: hardlinks" % mode)
        self.umount(mp)

    def test_oracle_estargz(self):
        self.check_oracle("estargz")

    def test_oracle_zstdchunked(self):
        self.check_oracle("zstdchunked")

    # ------------------------------------------------------------ laziness

    def check_lazy(self, mode):
        c = self.conv[mode]
        d1, size1, toc1 = c.layer(0)
        m0 = self.fake.mark()
        _, mp = self.mount(self.image(mode))
        self.assertOnlyTocFetched(mode, m0, "%s after mount, before any read" % mode)

        m1 = self.fake.mark()
        self.assertReads(mp, MOTD)
        small = self.fake.served_bytes(d1, m1)
        self.assertLess(small, min(MiB, size1 // 10),
                        "%s: reading %s (%d bytes) fetched too much of the %d-byte blob: %s" % (
                            mode, MOTD, len(self.contents[MOTD]), size1,
                            self.served_summary(d1, m1)))

        # One region in the middle of the big file: about its chunk.
        m2 = self.fake.mark()
        off = 13 * MiB + 5
        self.assertReads(mp, BIG, off, 4096)
        chunks = toc1.chunks(BIG)
        idx = max(i for i, (co, _) in enumerate(chunks) if co <= off)
        start, end = toc1.encoded_range(BIG, idx)
        region = self.fake.served_bytes(d1, m2)
        self.assertLessEqual(region, (end - start) + MiB,
                             "%s: reading 4 KiB at %d of %s fetched more than its chunk "
                             "(%d encoded bytes) + 1 MiB: %s" % (mode, off, BIG, end - start,
                                                                 self.served_summary(d1, m2)))

        # Everything: the tree is right and cost about the blobs.
        self.assertSameTree(mp, "%s lazily from the counting registry" % mode)
        for i in range(len(c.layers)):
            d, size, _ = c.layer(i)
            total = self.fake.served_bytes(d, m0)
            self.assertLessEqual(total, size * 1.1 + MiB,
                                 "%s: reading the whole tree fetched %d bytes of layer %d's "
                                 "%d-byte blob" % (mode, total, i, size))
        self.umount(mp)

    def test_concurrent_readers_one_request_per_chunk(self):
        """8 threads reading the same uncached region wait for one fetch."""
        import threading
        c = self.conv["estargz"]
        d1, _, toc1 = c.layer(0)
        _, mp = self.mount(self.image("estargz"))
        off = 9 * MiB + 17
        chunks = toc1.chunks(BIG)
        idx = max(i for i, (co, _) in enumerate(chunks) if co <= off)
        start, end = toc1.encoded_range(BIG, idx)
        # Different pages of one chunk, so the kernel sends separate reads
        # (one page would be serialized by the page lock and prove nothing).
        offsets = [off + i * 65536 for i in range(8)]
        if idx + 1 < len(chunks):
            self.assertLess(offsets[-1] + 4096, chunks[idx + 1][0], "the offsets must stay in one chunk")
        m = self.fake.mark()
        results, barrier = {}, threading.Barrier(8)

        def reader(o):
            barrier.wait()
            fd = os.open(os.path.join(mp, BIG), os.O_RDONLY)
            try:
                results[o] = os.pread(fd, 4096, o)
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(o,)) for o in offsets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(len(results), 8)
        for o in offsets:
            self.assertEqual(results[o], self.contents[BIG][o:o + 4096], "a concurrent reader got wrong bytes at %d" % o)
        served = self.fake.served_for(d1, m)
        covering = [r for r in served if r.start <= start < r.start + r.length]
        self.assertEqual(len(covering), 1, "the chunk at %d was fetched %d times by 8 concurrent readers: %r" % (
            start, len(covering), served))
        self.umount(mp)

    def test_two_stores_fetch_independently(self):
        """Mounts of one image in two stores each fetch what they read; one
        store's cache never serves the other."""
        c = self.conv["estargz"]
        d1, _, _ = c.layer(0)
        stores = [self.path("store-a"), self.path("store-b")]
        mps = []
        for i, store in enumerate(stores):
            _, mp = self.mount(self.image("estargz"), mp=self.mountpoint("m%d" % i), store=store)
            mps.append((mp, store))
        for mp, store in mps:
            m = self.fake.mark()
            self.assertReads(mp, MOTD)
            self.assertGreater(self.fake.served_bytes(d1, m), 0, "a read in %s fetched nothing" % store)
        for mp, store in reversed(mps):
            self.umount(mp, store=store)

    def check_read_ahead(self, mode):
        """With --read-ahead 512K, once a read has fetched, what follows it in
        the layer comes in a request of its own: the directory's next small
        files then read without the registry. Without it (the default) the
        last of them still needs a request."""
        d1 = self.conv[mode].layer(0)[0]
        names = ["small/f%03d" % i for i in range(1, SMALL_COUNT)]  # f000 is empty: nothing to fetch
        want = {n: rnd("small%d" % int(n[-3:]), (int(n[-3:]) * 37) % 3000) for n in names}
        for ra in (None, "512K"):
            label = "%s, --read-ahead %s" % (mode, ra or "default")
            store = self.path("store-ra-%s" % (ra or "default"))
            args = ("--prefetch", "none") + (("--read-ahead", ra) if ra else ())
            _, mp = self.mount(self.image(mode), mp=self.mountpoint("ra-%s" % (ra or "default")), store=store,
                               mount_args=args)
            with open(os.path.join(mp, names[0]), "rb") as f:
                self.assertEqual(f.read(), want[names[0]], label)
            # The read-ahead runs after the read returned: wait until the
            # registry has served nothing more for a second.
            served, settled = -1, time.time() + 30
            while time.time() < settled:
                now = self.fake.served_bytes(d1, 0)
                if now == served:
                    break
                served = now
                time.sleep(1.0)
            m = self.fake.mark()
            with open(os.path.join(mp, names[-1]), "rb") as f:
                self.assertEqual(f.read(), want[names[-1]], label)
            later = self.fake.served_bytes(d1, m)
            st = self.stats(mp)  # written at most every 500 ms: the wait above let it catch up
            if ra is None:
                self.assertGreater(later, 0, "%s: %s read without a request after %s" % (label, names[-1], names[0]))
                self.assertEqual(st["readAheadChunks"], 0, st)
            else:
                self.assertEqual(later, 0, "%s: %s needed a request after %s: %s" % (
                    label, names[-1], names[0], self.served_summary(d1, m)))
                self.assertGreater(st["readAheadChunks"], 0, st)
                for n in names:  # every one of them arrived intact
                    with open(os.path.join(mp, n), "rb") as f:
                        self.assertEqual(f.read(), want[n], "%s: %s" % (label, n))
                self.assertEqual(self.fake.served_bytes(d1, m), 0, "%s: %s" % (label, self.served_summary(d1, m)))
            self.umount(mp, store=store)

    def test_read_ahead_estargz(self):
        self.check_read_ahead("estargz")

    def test_read_ahead_zstdchunked(self):
        self.check_read_ahead("zstdchunked")

    def test_lazy_estargz(self):
        self.check_lazy("estargz")

    def test_lazy_zstdchunked(self):
        self.check_lazy("zstdchunked")

    # ------------------------------------------------------------ TOC digest

    def test_toc_digest_mismatch_refused(self):
        cases = [("estargz", CD.ESTARGZ_TOC_DIGEST, "bad-esgz-tocdigest"),
                 ("zstdchunked", CD.ZSTDCHUNKED_CHECKSUM, "bad-zc-checksum"),
                 ("zstdchunked", CD.ESTARGZ_TOC_DIGEST, "bad-zc-tocdigest")]
        for mode, annotation, tag in cases:
            c = self.conv[mode]
            self.fake.add_manifest(REPO, tag, c.media_type, c.altered(annotation))
            with self.subTest(mode=mode, annotation=annotation):
                # A store of its own: what one case indexed must not help another.
                store = os.path.join(self.tmp, "store-" + tag)
                mp = self.mountpoint("mnt-" + tag)
                res, _ = self.mount(self.image(mode, tag=tag), mp=mp, store=store, check=False)
                self.assertFailedOneLine(res, r"toc|digest")
                self.assertNothingMounted(mp)

    # ------------------------------------------------------------ corruption

    def check_corrupt_chunk(self, mode):
        c = self.conv[mode]
        d1, _, toc1 = c.layer(0)
        _, mp = self.mount(self.image(mode))
        start, end = toc1.encoded_range(M1)
        pos = start + (end - start) // 2
        self.fake.faults["corrupt_at"] = {d1: {pos}}  # after the TOC was fetched
        m = self.fake.mark()
        got, took = self.bounded_read(os.path.join(mp, M1))
        hit = [s for s in self.fake.served_for(d1, m) if s.start <= pos < s.start + s.length]
        self.assertEqual(got, ("errno", errno.EIO),
                         "%s: reading %s whose chunk [%d, %d) came with byte %d flipped (%.1fs; "
                         "served the flipped byte %d time(s))" % (mode, M1, start, end, pos, took,
                                                                  len(hit)))
        self.assertTrue(hit, "%s: the EIO did not come from the corrupted range" % mode)
        # Files far from the corrupted chunk in the blob (not its neighbours).
        for rel in (MOTD, "hard/m", L2BIG):
            self.assertReads(mp, rel, label="%s, with %s's chunk corrupt: " % (mode, M1))
        self.assertReads(mp, BIG, 17 * MiB, 8192, label="%s, with %s's chunk corrupt: " % (mode, M1))
        self.fake.faults["corrupt_at"] = {}
        self.assertReads(mp, M1, label="%s, fault removed (was the bad chunk cached?): " % mode)
        self.umount(mp)

    def test_corrupt_chunk_estargz(self):
        self.check_corrupt_chunk("estargz")

    def test_corrupt_chunk_zstdchunked(self):
        self.check_corrupt_chunk("zstdchunked")

    # ------------------------------------------------------------ registry gone

    def check_registry_gone(self, mode):
        reg = self.new_fake_registry()
        self.addCleanup(reg.stop)
        _, mp = self.mount(self.image(mode, reg=reg))
        self.assertReads(mp, MOTD, label="%s, registry up: " % mode)
        port = reg.port
        reg.stop()
        got, took = self.bounded_read(os.path.join(mp, M5), timeout=90)
        self.assertEqual(got, ("errno", errno.EIO),
                         "%s: reading uncached %s with the registry gone (%.1fs)" % (mode, M5, took))
        self.assertLess(took, 60, "%s: EIO only after %.1fs" % (mode, took))
        print("\n  %s: registry gone -> EIO after %.1fs" % (mode, took), end=" ", flush=True)
        # The server, in the background, says why in the log `stats` names.
        log = self.stats(mp).get("logFile")
        self.assertTrue(log and os.path.isfile(log), "%s: no server log named by stats" % mode)
        with open(log, errors="replace") as f:
            text = f.read()
        self.assertRegex(text, r"\d{4}-\d\d-\d\d [0-9:.]+ W \[\d+\] layer sha256:[0-9a-f]{64}: .+",
                         "%s: the server's log does not name the failed fetch:\n%s" % (mode, text[-2000:]))
        reg.start(port=port)
        self.assertReads(mp, M5, label="%s, registry back on port %d: " % (mode, port))
        self.umount(mp)

    def test_registry_gone_estargz(self):
        self.check_registry_gone("estargz")

    def test_registry_gone_zstdchunked(self):
        self.check_registry_gone("zstdchunked")

    # ------------------------------------------------------------ shared cache

    def check_shared_cache(self, mode):
        c = self.conv[mode]
        _, mp1 = self.mount(self.image(mode), mp=self.mountpoint("first"))
        self.assertSameTree(mp1, "%s first mount" % mode)
        chunks_dir = os.path.join(self.store, "chunks")
        cached = [f for _, _, fs in os.walk(chunks_dir) for f in fs]
        self.assertTrue(cached, "%s: nothing cached under %s after reading every file" % (
            mode, chunks_dir))
        _, mp2 = self.mount(self.image(mode), mp=self.mountpoint("second"))
        m = self.fake.mark()
        self.assertSameTree(mp2, "%s second mount" % mode)
        for i in range(len(c.layers)):
            d, _, _ = c.layer(i)
            self.assertEqual(self.fake.served_bytes(d, m), 0,
                             "%s: the second mount's reads fetched from layer %d's blob: %s" % (
                                 mode, i, self.served_summary(d, m)))
        self.umount(mp2)
        self.umount(mp1)

    # ------------------------------------------------------------ prefetch, stats

    def check_background_prefetch(self, mode):
        """--prefetch all fetches every chunk after the mount, without reads;
        then the registry can go away and every file still reads."""
        reg = self.new_fake_registry()
        self.addCleanup(reg.stop)
        c = self.conv[mode]
        _, mp = self.mount(self.image(mode, reg=reg), mount_args=("--prefetch", "all"))
        total = sum(c.layer(i)[1] for i in range(len(c.layers)))
        deadline = time.time() + 60
        time.sleep(0.6)  # the first stats file is written when the mount starts serving
        st = self.stats(mp)
        while time.time() < deadline and st["prefetchRunning"] > 0:
            time.sleep(0.2)
            st = self.stats(mp)
        time.sleep(0.6)  # let the last counters reach the stats file
        st = self.stats(mp)
        self.assertEqual(st["prefetchRunning"], 0, "%s: prefetch still running after 60 s: %r" % (mode, st))
        self.assertGreaterEqual(st["bytesFetched"], 0.9 * total,
                                "%s: background prefetch fetched %d of %d bytes: %r" % (
                                    mode, st["bytesFetched"], total, st))
        self.assertGreater(st["prefetchedChunks"], 0, st)
        self.assertEqual(st["fetchErrors"], 0, st)
        reg.stop()
        self.assertSameTree(mp, "%s after background prefetch, registry gone" % mode)
        self.umount(mp)

    def test_background_prefetch_estargz(self):
        self.check_background_prefetch("estargz")

    def test_background_prefetch_zstdchunked(self):
        self.check_background_prefetch("zstdchunked")

    def test_stats_count_on_demand_reads(self):
        _, mp = self.mount(self.image("estargz"))
        before = self.stats(mp)
        self.assertEqual(before["chunksFetched"], 0, before)
        self.assertReads(mp, MOTD)
        time.sleep(1.2)  # the server rewrites its stats at most every 500 ms
        after = self.stats(mp)
        self.assertGreaterEqual(after["chunksFetched"], 1, after)
        self.assertGreaterEqual(after["requests"], 1, after)
        self.assertGreater(after["bytesFetched"], 0, after)
        self.assertGreaterEqual(after["cacheMisses"], 1, after)
        # What the mount learnt of its link: a neighbour budget within its
        # bounds, and a delay and a rate together or neither (too few requests).
        self.assertTrue(64 << 10 <= after["neighbourBytes"] <= 1 << 20, after)
        self.assertEqual(after["linkDelayMs"] is None, after["linkMbit"] is None, after)
        if after["linkMbit"] is not None:
            self.assertGreater(after["linkMbit"], 0, after)
            self.assertGreaterEqual(after["linkDelayMs"], 0, after)
        self.assertReads(mp, MOTD)  # served by the page cache or the chunk cache, never the network
        time.sleep(1.2)
        again = self.stats(mp)
        self.assertEqual(again["requests"], after["requests"], again)
        res = self.ucrfs("stats", mp)
        self.assertSucceeded(res)
        self.assertIn("bytes fetched", res.stdout)
        self.assertRegex(res.stdout, r"link: +(not measured yet|[0-9.]+ ms \+ [0-9.]+ Mbit/s);")
        self.umount(mp)

    def test_shared_cache_estargz(self):
        self.check_shared_cache("estargz")

    def test_shared_cache_zstdchunked(self):
        self.check_shared_cache("zstdchunked")


if __name__ == "__main__":
    unittest.main()
