"""Unmodified gzip images mounted lazily through a ucrfs index (issue 4).

The image is test_lazy's (two gzip layers: a 20 MiB file, many small files,
links, xattrs, modes, devices, whiteouts, an opaque directory), pushed
unchanged to a docker-registry on loopback. `ucrfs index push` builds its
index (checkpoints every 256 KiB, so that the test image has many spans)
and pushes it to the same repository, tagged sha256-<manifest hex>.ucrfs.

Contract under test:
- `index push` prints the artifact digest and the tag; the registry holds an
  OCI manifest with the ucrfs artifactType, the image manifest as subject,
  one layer index per gzip layer naming its layer; pushing again gives the
  same digest; a source that is not a registry is refused in one line;
  without --span, checkpoints come about 256 KiB of tar apart (the default);
- a mount from that registry equals `umoci unpack` of the image, and the
  store holds no layer blob;
- through the counting registry: the mount itself fetches no layer bytes;
  a small file costs less than 1 MiB of its layer, 4 KiB inside the big file
  about one span; reading a 4 MiB range makes far fewer requests than the
  spans it covers (adjacent spans coalesced); reading everything costs about
  the blobs;
- no index in the repository: the layers are downloaded as before, and the
  tree is the same; an index blob corrupted on the wire is not used (the
  layer is downloaded, stderr says why);
- an index whose span digests lie: the mount serves (the index is well
  formed) but reads fail with EIO and nothing is cached;
- the checkpoints' windows are in one windows blob per layer (issue 4): the
  mount fetches none of them, a small read exactly the one window its
  inflation starts from; a window corrupted on the wire fails the read with
  EIO and is not cached; a version 1 index (windows inline) is not used and
  the layer is downloaded;
- --max-cache-size: the chunk cache stays within the limit while every byte
  still reads right.
"""
import errno
import hashlib
import json
import mmap
import os
import re
import shutil
import subprocess
import time
import unittest

import test_lazy as TL
from lib import images as I
from lib import layers as L
from lib import treecmp as T
from lib.fakereg import FakeRegistry
from lib.mounts import MountTestCase
from lib.registry import Pusher, RealRegistry
from lib.util import run, sha256_digest, which

MiB = TL.MiB
REPO = "idx/img"
PLAIN = "plain/img"
SPAN = 256 << 10
ARTIFACT_TYPE = "application/vnd.ucrfs.index.v1"
LAYER_INDEX = "application/vnd.ucrfs.layer-index.v1+zstd"
LAYER_WINDOWS = "application/vnd.ucrfs.layer-windows.v1"
LAYER_ANNOTATION = "io.ucrfs.layer.digest"


def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _str(b, i):
    n, i = _varint(b, i)
    return b[i:i + n], i + n


def parse_layer_index(raw):
    """The fields of a decompressed layer index (docs/lazy.md) these tests
    look at: version, windows blob, each checkpoint's decoded offset, each
    window's (length, offset, size, digest)."""
    assert raw[:8] == b"UCRFSLIX", raw[:8]
    i = 8
    out = {}
    out["version"], i = _varint(raw, i)
    _, i = _str(raw, i)      # layer digest
    _, i = _varint(raw, i)   # layer size
    _, i = _varint(raw, i)   # decoded size
    wblob, i = _str(raw, i)
    out["windows_blob"] = wblob.decode()
    out["windows_size"], i = _varint(raw, i)
    n, i = _varint(raw, i)
    for _ in range(n):
        _, i = _str(raw, i)
    n, i = _varint(raw, i)
    cps = []
    for _ in range(n):
        cp, i = _str(raw, i)
        cps.append(_varint(cp, 1)[0])  # version byte, then the decoded offset
    out["checkpoints"] = cps
    for _ in range(n):
        _, i = _str(raw, i)  # span digests
    windows = []
    for _ in range(n):
        length, i = _varint(raw, i)
        if length == 0:
            windows.append((0, 0, 0, None))
            continue
        off, i = _varint(raw, i)
        size, i = _varint(raw, i)
        d, i = _str(raw, i)
        windows.append((length, off, size, d.decode()))
    out["windows"] = windows
    assert i == len(raw), "trailing bytes in the layer index"
    return out


class IndexPushTest(MountTestCase):
    mount_tools = ("umoci", "docker-registry", "zstd")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.contents = TL.contents()
        cls.image_ = L.image_from_tars(TL.lazy_tars(), "gzip")
        layout = os.path.join(tmp, "layout")
        I.write_oci_layout(layout, {"orig": cls.image_})
        root = TL.umoci_unpack(layout, "orig", os.path.join(tmp, "bundle"))
        nodes, errors = T.walk(root)
        if errors:
            raise AssertionError("walking umoci's unpack: %s" % errors[:5])
        cls.ref = nodes
        cls.exclusions = T.default_exclusions(root_has_entry=False)

        cls.registry = RealRegistry(os.path.join(tmp, "registry"))
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start()
        pusher = Pusher(cls.registry.url)
        pusher.push_image(REPO, cls.image_, "orig")
        cls.manifest = cls.image_.manifest
        cls.layers = json.loads(cls.manifest.data)["layers"]
        cls.tag = "sha256-%s.ucrfs" % cls.manifest.digest.split(":", 1)[1]

        cls.push_store = os.path.join(tmp, "push-store")
        cls.push_res = cls.run_ucrfs(cls.push_store, "index", "push", "--span", str(SPAN),
                                     "%s/%s:orig" % (cls.registry.addr, REPO))
        if cls.push_res.returncode != 0:
            raise AssertionError("ucrfs index push failed:\n" + cls.push_res.stderr)

        # The artifact as the registry has it, for the counting registry.
        _, body = TL.get_url("%s/v2/%s/manifests/%s" % (cls.registry.url, REPO, cls.tag), I.OCI_MANIFEST)
        cls.artifact = body
        cls.artifact_json = json.loads(body)
        cls.artifact_blobs = {}
        for d in [cls.artifact_json["config"]] + cls.artifact_json["layers"]:
            _, cls.artifact_blobs[d["digest"]] = TL.get_url("%s/v2/%s/blobs/%s" % (
                cls.registry.url, REPO, d["digest"]))
        # Each layer's index as pushed, decoded, and its windows blob.
        cls.indexes = cls.decode_indexes(cls.artifact_json, cls.artifact_blobs, tmp)
        cls.fake = cls.new_fake()
        cls.addClassCleanup(cls.fake.stop)

    @staticmethod
    def decode_indexes(artifact_json, blobs, tmp):
        """{layer digest: its parsed layer index, with desc and raw}."""
        out = {}
        for d in artifact_json["layers"]:
            if d["mediaType"] == LAYER_INDEX:
                src = os.path.join(tmp, "index-%s.zst" % d["digest"][7:19])
                with open(src, "wb") as f:
                    f.write(blobs[d["digest"]])
                raw = run(["zstd", "-q", "-d", "-c", src]).stdout
                out[d["annotations"][LAYER_ANNOTATION]] = dict(parse_layer_index(raw), desc=d, raw=raw)
        return out

    @classmethod
    def run_ucrfs(cls, store, *args):
        p = subprocess.run([cls.bin, "--store", store, "--insecure-registry", cls.registry.addr] + list(args),
                           capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
        p.stdout, p.stderr = p.stdout.decode(), p.stderr.decode()
        return p

    @classmethod
    def new_fake(cls, artifact=None, blobs=None):
        """A counting registry with the image in REPO (with its index) and in
        PLAIN (without)."""
        reg = FakeRegistry()
        for repo in (REPO, PLAIN):
            reg.add_image(repo, cls.image_, "orig")
        artifact = artifact or cls.artifact
        for d, data in (blobs or cls.artifact_blobs).items():
            reg.add_blob(data, d)
        reg.add_manifest(REPO, cls.tag, I.OCI_MANIFEST, artifact)
        reg.add_manifest(REPO, sha256_digest(artifact), I.OCI_MANIFEST, artifact)
        reg.start()
        return reg

    # ------------------------------------------------------------ helpers

    def image(self, repo=REPO, reg=None):
        return "%s/%s:orig" % ((reg or self.fake).addr, repo)

    def mount(self, image, mp=None, store=None, mount_args=("--prefetch", "none"), **kw):
        return super().mount(image, mp=mp, store=store, mount_args=mount_args, **kw)

    def fake_with_layer_index(self, layer_index_digest, raw, name):
        """A fake registry serving the artifact with the layer index blob
        `layer_index_digest` replaced by `raw` (an uncompressed index),
        zstd-compressed as `index push` writes it."""
        with open(self.path(name + ".raw"), "wb") as f:
            f.write(raw)
        run(["zstd", "-q", "-f", self.path(name + ".raw"), "-o", self.path(name + ".zst")])
        with open(self.path(name + ".zst"), "rb") as f:
            blob = f.read()
        art = json.loads(self.artifact)
        for l in art["layers"]:
            if l["digest"] == layer_index_digest:
                l["digest"], l["size"] = sha256_digest(blob), len(blob)
        blobs = dict(self.artifact_blobs)
        blobs[sha256_digest(blob)] = blob
        reg = self.new_fake(json.dumps(art).encode(), blobs)
        self.addCleanup(reg.stop)
        return reg

    def blob_in_store(self, digest, store=None):
        return os.path.exists(os.path.join(store or self.store, "blobs", "sha256", digest.split(":", 1)[1]))

    def assertReads(self, mp, rel, offset=0, length=-1, label=""):
        want = self.contents[rel]
        want = want[offset:] if length < 0 else want[offset:offset + length]
        got, took = TL.LazyMountTest.bounded_read(self, os.path.join(mp, rel), offset, length)
        self.assertEqual(got, ("ok", hashlib.sha256(want).hexdigest()),
                         "%sreading %s [%d, +%d) (%.1fs)" % (label, rel, offset, length, took))

    def assertSameTree(self, mp, label):
        got, errors = T.walk(mp)
        diffs = ["walk error: " + e for e in errors] + T.compare(self.ref, got, self.exclusions, limit=60)
        self.assertEqual(diffs, [], "%s: the mount differs from umoci's unpack" % label)

    def chunk_files(self, store=None):
        d = os.path.join(store or self.store, "chunks")
        return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]

    # ------------------------------------------------------------ push

    def test_push_prints_digest_and_tag(self):
        out = self.push_res.stdout.split()
        self.assertEqual(len(out), 2, self.push_res.stdout)
        self.assertEqual(out[1], self.tag)
        self.assertEqual(out[0], sha256_digest(self.artifact))
        a = self.artifact_json
        self.assertEqual(a.get("artifactType"), ARTIFACT_TYPE)
        self.assertEqual(a["subject"]["digest"], self.manifest.digest)
        indexed = {l["annotations"][LAYER_ANNOTATION] for l in a["layers"] if l["mediaType"] == LAYER_INDEX}
        self.assertEqual(indexed, {l["digest"] for l in self.layers})
        # Each layer's windows blob: listed beside its index, the blob the
        # index names, holding each window's bytes under its digest.
        windows = {l["annotations"][LAYER_ANNOTATION]: l for l in a["layers"] if l["mediaType"] == LAYER_WINDOWS}
        self.assertEqual(set(windows), indexed)
        for layer, idx in self.indexes.items():
            self.assertEqual(idx["version"], 2)
            self.assertEqual((windows[layer]["digest"], windows[layer]["size"]),
                             (idx["windows_blob"], idx["windows_size"]))
            blob = self.artifact_blobs[idx["windows_blob"]]
            with_window = [w for w in idx["windows"] if w[0] > 0]
            self.assertGreater(len(with_window), 1)
            self.assertEqual(sum(w[2] for w in with_window), len(blob), "the windows blob is only the windows")
            for length, off, size, digest in with_window:
                self.assertLessEqual(length, 32768)
                self.assertEqual(sha256_digest(blob[off:off + size]), digest)
            # The windows were most of the index: what a mount fetches now
            # is a fraction of it.
            self.assertLess(idx["desc"]["size"] * 2, len(blob), layer)
        again = self.run_ucrfs(self.push_store, "index", "push", "--span", str(SPAN),
                               "%s/%s:orig" % (self.registry.addr, REPO))
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.stdout, self.push_res.stdout, "pushing again changed the index")

    def test_push_without_span_puts_checkpoints_256k_apart(self):
        """The default span (docs/cli.md), in a repository of its own so that
        the other tests keep their index."""
        repo = REPO + "-default"
        Pusher(self.registry.url).push_image(repo, self.image_, "orig")
        res = self.run_ucrfs(self.path("push-default"), "index", "push", "%s/%s:orig" % (self.registry.addr, repo))
        self.assertEqual(res.returncode, 0, res.stderr)
        _, body = TL.get_url("%s/v2/%s/manifests/%s" % (self.registry.url, repo, self.tag), I.OCI_MANIFEST)
        art = json.loads(body)
        blobs = {d["digest"]: TL.get_url("%s/v2/%s/blobs/%s" % (self.registry.url, repo, d["digest"]))[1]
                 for d in art["layers"] if d["mediaType"] == LAYER_INDEX}
        tmp = self.path("default-indexes")
        os.makedirs(tmp)
        gaps = []
        for idx in self.decode_indexes(art, blobs, tmp).values():
            cps = idx["checkpoints"]
            gaps += [b - a for a, b in zip(cps, cps[1:])]
        self.assertGreater(len(gaps), 8, "too few checkpoints to tell the span: %r" % gaps)
        median = sorted(gaps)[len(gaps) // 2]
        self.assertTrue(256 << 10 <= median < 512 << 10, "checkpoints %d bytes apart (median of %d)" % (
            median, len(gaps)))

    def test_push_refuses_what_is_not_a_registry(self):
        layout = self.path("layout")
        I.write_oci_layout(layout, {"t": self.image_})
        res = self.ucrfs("index", "push", "oci:%s:t" % layout)
        self.assertFailedOneLine(res, r"registry")
        res = self.ucrfs("index", "push", "--span", "1K", "%s/%s:orig" % (self.fake.addr, REPO))
        self.assertFailedOneLine(res, r"span")

    # ------------------------------------------------------------ mount

    def test_oracle_from_docker_registry(self):
        _, mp = self.mount("%s/%s:orig" % (self.registry.addr, REPO), flags=("--insecure-registry", self.registry.addr))
        self.assertSameTree(mp, "indexed gzip from docker-registry")
        self.assertEqual(T.check_facts(mp, TL.FACTS), [])
        for l in self.layers:
            self.assertFalse(self.blob_in_store(l["digest"]), "layer %s was downloaded" % l["digest"])
        self.umount(mp)

    def test_reads_fetch_only_their_spans(self):
        d1, size1 = self.layers[0]["digest"], self.layers[0]["size"]
        m0 = self.fake.mark()
        _, mp = self.mount(self.image())
        for l in self.layers:
            self.assertEqual(self.fake.served_bytes(l["digest"], m0), 0,
                             "the mount fetched bytes of layer %s before any read" % l["digest"])
            wblob = self.indexes[l["digest"]]["windows_blob"]
            self.assertEqual(self.fake.served_for(wblob, m0), [], "the mount fetched windows of %s" % l["digest"])
        m1 = self.fake.mark()
        self.assertReads(mp, TL.MOTD)
        self.assertLess(self.fake.served_bytes(d1, m1), min(MiB, size1 // 10))
        m2 = self.fake.mark()
        self.assertReads(mp, TL.BIG, 13 * MiB + 5, 4096)
        # The 256 KiB decoded chunk around the read, from the checkpoint
        # before it: at most two spans. A span holds SPAN decoded bytes up to
        # the next deflate block boundary, and this data is incompressible.
        self.assertLessEqual(self.fake.served_bytes(d1, m2), 3 * SPAN,
                             TL.LazyMountTest.served_summary(self, d1, m2))
        # ... and exactly one window: the one of the checkpoint before that
        # chunk, by itself.
        idx = self.indexes[d1]
        served = self.fake.served_for(idx["windows_blob"], m2)
        windows = {(w[1], w[2]) for w in idx["windows"] if w[0] > 0}
        self.assertEqual(len(served), 1, served)
        self.assertIn((served[0].start, served[0].length), windows, served)
        self.assertSameTree(mp, "indexed gzip from the counting registry")
        for l in self.layers:
            total = self.fake.served_bytes(l["digest"], m0)
            self.assertLessEqual(total, l["size"] * 1.1 + MiB, "reading everything fetched %d bytes of "
                                 "layer %s's %d" % (total, l["digest"], l["size"]))
            idx = self.indexes[l["digest"]]
            total = self.fake.served_bytes(idx["windows_blob"], m0)
            self.assertLessEqual(total, idx["windows_size"], "a window of %s was fetched twice" % l["digest"])
        time.sleep(1.2)  # the server rewrites its stats at most every 500 ms
        st = json.loads(self.ucrfs("stats", "--json", mp).stdout)
        self.assertGreater(st["requests"], 0, st)
        self.assertGreater(st["mountBytes"], 0, st)  # the index
        self.umount(mp)

    def test_adjacent_spans_are_fetched_together(self):
        """A 4 MiB read (O_DIRECT: no kernel read-ahead beyond it; the
        kernel passes it on in reads of at most 1 MiB, 4+ spans each) makes
        about one request per 1 MiB read, not one per span."""
        d1 = self.layers[0]["digest"]
        _, mp = self.mount(self.image())
        m = self.fake.mark()
        buf = mmap.mmap(-1, 4 * MiB)  # page-aligned, as O_DIRECT wants
        fd = os.open(os.path.join(mp, TL.BIG), os.O_RDONLY | os.O_DIRECT)
        try:
            n = os.preadv(fd, [buf], 2 * MiB)
        finally:
            os.close(fd)
        self.assertEqual(n, 4 * MiB)
        self.assertTrue(buf[:] == self.contents[TL.BIG][2 * MiB:6 * MiB], "wrong bytes")
        served = self.fake.served_for(d1, m)
        spans = (4 * MiB) // SPAN
        self.assertLessEqual(len(served), spans // 3, "a 4 MiB read over %d spans took %d requests: %r" % (
            spans, len(served), served))
        self.umount(mp)

    def test_without_an_index_layers_are_downloaded(self):
        _, mp = self.mount(self.image(PLAIN))
        for l in self.layers:
            self.assertTrue(self.blob_in_store(l["digest"]), "no index, yet layer %s was not downloaded" % l["digest"])
        self.assertSameTree(mp, "plain gzip without an index")
        self.umount(mp)

    def test_corrupt_index_blob_is_not_used(self):
        reg = self.new_fake()
        self.addCleanup(reg.stop)
        bad = [l["digest"] for l in self.artifact_json["layers"] if l["mediaType"] == LAYER_INDEX][0]
        reg.faults["corrupt_blob"].add(bad)
        res, mp = self.mount(self.image(reg=reg))
        self.assertRegex(res.stderr, re.compile(r"ucrfs index.*(digest|mismatch)", re.I), res.stderr)
        downloaded = [l["digest"] for l in self.layers if self.blob_in_store(l["digest"])]
        self.assertEqual(len(downloaded), 1, "exactly the layer whose index was corrupt is downloaded: %s" % downloaded)
        self.assertSameTree(mp, "with one layer index corrupt")
        self.umount(mp)

    def test_lying_span_digests_fail_reads(self):
        # The first layer's index with every span digest replaced.
        desc = [l for l in self.artifact_json["layers"] if l["mediaType"] == LAYER_INDEX
                and l["annotations"][LAYER_ANNOTATION] == self.layers[0]["digest"]][0]
        src = self.path("index.zst")
        with open(src, "wb") as f:
            f.write(self.artifact_blobs[desc["digest"]])
        raw = run(["zstd", "-q", "-d", "-c", src]).stdout
        marks = [m.start() for m in re.finditer(rb"sha256:[0-9a-f]{64}", raw)]
        self.assertGreater(len(marks), 3)
        lie = b"sha256:" + hashlib.sha256(b"lie").hexdigest().encode()
        out = bytearray(raw)
        # The first two are the layer's own digest and its windows blob's;
        # then the spans' (and the windows', which lie too: the read fails on
        # its span before it needs one).
        for pos in marks[2:]:
            out[pos:pos + len(lie)] = lie
        reg = self.fake_with_layer_index(desc["digest"], out, "lying")
        _, mp = self.mount(self.image(reg=reg))
        self.assertFalse(self.blob_in_store(self.layers[0]["digest"]))
        got, _ = TL.LazyMountTest.bounded_read(self, os.path.join(mp, TL.MOTD))
        self.assertEqual(got, ("errno", errno.EIO))
        self.assertEqual(self.chunk_files(), [], "a span that failed its digest was cached")
        self.assertReads(mp, TL.L2BIG, label="layer 2's index is honest: ")
        self.umount(mp)

    def test_corrupt_window_fails_reads(self):
        """Every window of the first layer served with a byte flipped: a read
        that must start inflating mid-layer fails with EIO, and no window is
        cached; reads that need no window (the layer's start) and the other
        layer are unaffected."""
        d1 = self.layers[0]["digest"]
        idx = self.indexes[d1]
        reg = self.new_fake()
        self.addCleanup(reg.stop)
        reg.faults["corrupt_at"][idx["windows_blob"]] = {w[1] + w[2] // 2 for w in idx["windows"] if w[0] > 0}
        _, mp = self.mount(self.image(reg=reg))
        got, _ = TL.LazyMountTest.bounded_read(self, os.path.join(mp, TL.BIG), 13 * MiB + 5, 4096)
        self.assertEqual(got, ("errno", errno.EIO))
        self.assertGreater(len(reg.served_for(idx["windows_blob"])), 0, "no window was asked for")
        digests = {w[3].split(":", 1)[1] for w in idx["windows"] if w[0] > 0}
        cached = {os.path.basename(f) for f in self.chunk_files()}
        self.assertEqual(cached & digests, set(), "a window that failed its digest was cached")
        self.assertReads(mp, TL.L2BIG, label="layer 2's windows are intact: ")
        self.umount(mp)

    def test_version_1_index_is_not_used(self):
        """The first layer's index as version 1 had it (the version field is
        what is checked first): that layer is downloaded, with a warning
        saying why, and the tree is still right."""
        d1 = self.layers[0]["digest"]
        idx = self.indexes[d1]
        raw = bytearray(idx["raw"])
        self.assertEqual(raw[8], 2)
        raw[8] = 1
        reg = self.fake_with_layer_index(idx["desc"]["digest"], raw, "v1")
        res, mp = self.mount(self.image(reg=reg))
        self.assertRegex(res.stderr, r"version 1", res.stderr)
        self.assertTrue(self.blob_in_store(d1), "the layer with a version 1 index was not downloaded")
        self.assertFalse(self.blob_in_store(self.layers[1]["digest"]))
        self.assertSameTree(mp, "with a version 1 index for one layer")
        self.umount(mp)

    def test_pushed_trace_is_replayed(self):
        """A trace pushed with the index is replayed by mounts that name no
        --prefetch of their own, and not by those that do."""
        repo = "traced/img"
        Pusher(self.registry.url).push_image(repo, self.image_, "orig")
        trace = self.path("trace.json")
        with open(trace, "w") as f:
            json.dump({"version": 1, "reads": [{"path": "/" + TL.M5, "offset": 0, "length": 5 * MiB + 17}]}, f)
        image = "%s/%s:orig" % (self.registry.addr, repo)
        flags = ("--insecure-registry", self.registry.addr)
        res = self.ucrfs("index", "push", "--span", str(SPAN), "--trace", trace, image, store=self.path("push"),
                         flags=flags)
        self.assertSucceeded(res)
        _, mp = self.mount(image, flags=flags, mount_args=())
        deadline = time.time() + 60
        st = {}
        while time.time() < deadline and not st.get("traceDone"):
            time.sleep(0.3)
            st = json.loads(self.ucrfs("stats", "--json", mp).stdout)
        self.assertTrue(st.get("traceDone"), st)
        self.assertEqual((st["traceRanges"], st["traceReads"], st["traceMissing"]), (1, 1, 0), st)
        self.assertGreaterEqual(st["traceBytes"], 5 * MiB, st)
        self.umount(mp)
        _, mp = self.mount(image, store=self.path("store2"), flags=flags, mount_args=("--prefetch", "none"))
        time.sleep(1.2)
        st = json.loads(self.ucrfs("stats", "--json", mp, store=self.path("store2")).stdout)
        self.assertNotIn("traceRanges", st, "--prefetch none replayed the pushed trace")
        self.umount(mp, store=self.path("store2"))
        bad = self.path("bad-trace.json")
        with open(bad, "w") as f:
            f.write('{"version": 1, "reads": [{"path": "relative", "offset": 0, "length": 1}]}')
        res = self.ucrfs("index", "push", "--trace", bad, image, store=self.path("push"), flags=flags)
        self.assertFailedOneLine(res, r"trace")

    def test_cache_limit(self):
        limit = MiB
        _, mp = self.mount(self.image(), mount_args=("--prefetch", "all", "--max-cache-size", "1M"))
        self.assertReads(mp, TL.BIG)
        self.assertReads(mp, TL.M5)
        sizes = [os.path.getsize(f) for f in self.chunk_files()]
        self.assertLessEqual(sum(sizes), limit + max(sizes), "chunk cache over its limit: %d bytes in %d files" % (
            sum(sizes), len(sizes)))
        time.sleep(1.2)
        st = json.loads(self.ucrfs("stats", "--json", mp).stdout)
        self.assertGreater(st["evictions"], 0, st)
        self.umount(mp)


if __name__ == "__main__":
    unittest.main()
