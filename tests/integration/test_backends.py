"""`ucrfs mount --backend overlay|copy|bind` and `ucrfs umount` of what they
made, against `umoci unpack` of the same image (lib/treecmp), and Mesos'
provisioner_backend_tests.cpp cases:

- every backend's tree equals umoci's (FEATURES for copy; FEATURES without
  its cross-layer hardlink for overlay, which refuses that one with one line;
  FEATURES' base layer alone for bind);
- a two-layer merge where the upper layer wins and the rootfs is writable
  (overlay, copy) without the write reaching the image: a second rootfs of
  the same image does not see it and the unpacked layer is unchanged;
- 128 layers under a long store path on overlay (MESOS-6000: mount options
  are limited to one page);
- bind is read-only (EROFS) and refuses a multi-layer image;
- copy never writes through a symlink a lower layer left (Mesos overwrite,
  and escapes by absolute and by ../ symlinks): nothing appears outside;
- whiteouts: a file in the same layer as an opaque marker survives;
- umount with a file held open in the rootfs succeeds, and leaves nothing
  mounted at or below the directory, which is empty again;
- concurrent provisioners of one image into a fresh store all succeed and
  share one complete unpack of each layer.

Overlay differs from an unpacked tree in ways overlayfs defines; each is an
exclusion named in the report (see OverlayExclusions).
"""
import errno
import os
import stat

from lib import fixtures as F
from lib import images as I
from lib import layers as L
from lib import treecmp as T
from lib.mounts import MountTestCase, force_unmount, mountinfo
from lib.util import sha256_hex

from test_mount_oracle import oracle_walk, umoci_unpack

RUN_DIR = "/run/ucrfs/mounts"


def mounts_at_or_below(path):
    path = os.path.realpath(path)
    return [e for e in mountinfo() if e[0] == path or e[0].startswith(path + "/")]


class BackendCase(MountTestCase):
    mount_tools = ("umoci",)

    def provision(self, backend, image, mp=None, store=None, check=True):
        """`ucrfs mount --backend B IMAGE MP`; cleaned up whatever happens."""
        mp = mp or self.mountpoint("rootfs-%s-%d" % (backend, len(self._cleanups)))
        self.addCleanup(self.cleanup_rootfs, mp, store)
        res = self.ucrfs("mount", "--backend", backend, image, mp, store=store, timeout=600)
        if check:
            self.assertSucceeded(res)
            if backend in ("overlay", "bind"):
                e = [m for m in mountinfo() if m[0] == os.path.realpath(mp)]
                self.assertTrue(e, "%s is not a mount point\n%s" % (mp, res.describe()))
                self.assertEqual(e[-1][1], "overlay" if backend == "overlay" else "ext4",
                                 "fstype of %s" % mp)
            else:
                self.assertEqual(mounts_at_or_below(mp), [], "copy mounts nothing")
        return res, mp

    def record(self, mp):
        return os.path.join(RUN_DIR, sha256_hex(os.path.realpath(mp).encode()) + ".backend")

    def cleanup_rootfs(self, mp, store=None):
        if os.path.exists(self.record(mp)):
            self.ucrfs("umount", mp, store=store, timeout=60)
        for m in sorted(mounts_at_or_below(mp), key=lambda e: -len(e[0])):
            force_unmount(m[0])
        try:
            os.unlink(self.record(mp))
        except OSError:
            pass

    def destroy(self, mp, store=None):
        """`ucrfs umount MP`: succeeds, nothing mounted at or below MP, MP an
        empty directory, no record, no scratch."""
        scratch = os.path.join(store or self.store, "scratch",
                               sha256_hex(os.path.realpath(mp).encode()))
        res = self.ucrfs("umount", mp, store=store, timeout=120)
        self.assertSucceeded(res)
        self.assertEqual(mounts_at_or_below(mp), [], "still mounted after umount")
        self.assertTrue(os.path.isdir(mp), "%s vanished" % mp)
        self.assertEqual(os.listdir(mp), [], "%s is not empty after umount" % mp)
        self.assertFalse(os.path.exists(self.record(mp)), "record left")
        self.assertFalse(os.path.exists(scratch), "scratch dir left")

    def assertSameTree(self, ref, mp, exclusions, label):
        got, errors = T.walk(mp)
        diffs = ["walk error: " + e for e in errors] + T.compare(ref, got, exclusions, limit=100)
        if diffs:
            self.fail("%s: the rootfs differs from umoci's in %d place(s):\n  %s\n(%s)" % (
                label, len(diffs), "\n  ".join(diffs[:60]), "; ".join(exclusions.describe())))
        return got


def overlay_exclusions(tars, root_has_entry):
    """What overlayfs shows differently from an unpacked tree, by its design:
    - a merged directory's st_nlink is 1 (ovl_getattr);
    - a directory is the topmost layer's copy: where an upper layer has no
      entry for a directory it only implies (a parent of its entries), that
      layer's unpack made it 0755 root with the unpack time, and the lower
      layer's metadata cannot show through (mtime 0, like the merged tree's
      implicit directories);
    - a hardlink group shrunk by an upper layer keeps the lower inode's
      st_nlink (the upper layer cannot change a lower inode)."""
    ex = T.default_exclusions(root_has_entry)
    ex.add(lambda p, n: n.type == "dir", "nlink", "overlayfs reports st_nlink 1 for merged directories")
    implied = set()
    for tar in tars[1:]:
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            names = [os.fsencode(m.name).rstrip(b"/") for m in tf.getmembers()]
        have = {n[2:] if n.startswith(b"./") else n for n in names}
        for n in list(have):
            parts = n.split(b"/")
            for i in range(1, len(parts)):
                d = b"/".join(parts[:i])
                if d not in have:
                    implied.add(d)
    ex.add(lambda p, n, s=implied: n.type == "dir" and p in s, "mtime",
           "a directory an upper layer implies without an entry is that layer's 0755 root:root copy "
           "with mtime 0 (%d such)" % len(implied))
    ex.add(lambda p, n: p in (b"hard/g2a", b"hard/g2b"), "nlink",
           "a hardlink group shrunk by an upper layer keeps the lower inode's st_nlink")
    return ex


class FeaturesBackendsTest(BackendCase):
    """The FEATURES image (every entry kind and layer rule) on each backend,
    against umoci, sharing one store."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.shared = os.path.join(tmp, "store")
        cls.tars = F.features_tars(tmp)
        cls.tars_nohl = F.features_tars(tmp, cross_layer_hardlink=False)
        cls.layout = os.path.join(tmp, "layout")
        cls.images = {
            "full": L.image_from_tars(cls.tars, "gzip", level=1),
            "nohl": L.image_from_tars(cls.tars_nohl, "gzip", level=1),
            "base": L.image_from_tars(cls.tars[:1], "tar"),
        }
        I.write_oci_layout(cls.layout, cls.images)
        cls.ref = {}
        for tag in ("full", "nohl", "base"):
            root = umoci_unpack(cls.layout, tag, os.path.join(tmp, "bundle-" + tag))
            cls.ref[tag] = oracle_walk(root, "umoci " + tag)

    def test_copy_equals_umoci(self):
        _, mp = self.provision("copy", "oci:%s:full" % self.layout, store=self.shared)
        got = self.assertSameTree(self.ref["full"], mp, T.default_exclusions(True), "copy")
        self.assertEqual(T.check_facts(mp, F.FEATURE_FACTS), [], "copy: layer semantics")
        self.assertEqual(T.link_groups(got, F.FEATURE_LINK_GROUPS), [], "copy: hardlinks")
        self.destroy(mp, store=self.shared)

    def test_overlay_equals_umoci(self):
        _, mp = self.provision("overlay", "oci:%s:nohl" % self.layout, store=self.shared)
        ex = overlay_exclusions(self.tars_nohl, True)
        print("\n  overlay exclusions:\n    " + "\n    ".join(ex.describe()), flush=True)
        got = self.assertSameTree(self.ref["nohl"], mp, ex, "overlay")
        self.assertEqual(T.check_facts(mp, F.FEATURE_FACTS), [], "overlay: layer semantics")
        groups = [g for g in F.FEATURE_LINK_GROUPS if b"hard/tolower" not in g and b"hard/g2a" not in g]
        self.assertEqual(T.link_groups(got, groups), [], "overlay: hardlinks")
        # Each layer was unpacked into the store, nothing half written left.
        unpacked = os.path.join(self.shared, "unpacked", "sha256")
        for layer in self.images["nohl"].layers:
            self.assertTrue(os.path.isdir(os.path.join(unpacked, layer.desc.hex)), layer.desc.digest)
        self.assertEqual([n for n in os.listdir(unpacked) if n.startswith(".")], [], "temporary dirs left")
        self.destroy(mp, store=self.shared)

    def test_overlay_with_cross_layer_hardlink_equals_umoci(self):
        """FEATURES in full: a layer hardlinks to a file of the layer below
        (hard/tolower). That layer is unpacked for its chain of layers, with
        the target copied in beside the link; the tree equals umoci's,
        hardlink groups included."""
        _, mp = self.provision("overlay", "oci:%s:full" % self.layout, store=self.shared)
        ex = overlay_exclusions(self.tars, True)
        got = self.assertSameTree(self.ref["full"], mp, ex, "overlay, cross-layer hardlink")
        self.assertEqual(T.check_facts(mp, F.FEATURE_FACTS), [], "overlay: layer semantics")
        groups = [g for g in F.FEATURE_LINK_GROUPS if b"hard/g2a" not in g]
        self.assertEqual(T.link_groups(got, groups), [], "overlay: hardlinks, across layers too")
        chain = os.path.join(self.shared, "unpacked", "chain")
        self.assertEqual(len([n for n in os.listdir(chain) if not n.startswith(".")]), 1,
                         "the linking layer is unpacked once for its chain: %r" % os.listdir(chain))
        self.destroy(mp, store=self.shared)
        # Another rootfs reuses the chain's unpack.
        _, mp2 = self.provision("overlay", "oci:%s:full" % self.layout, store=self.shared)
        self.assertEqual(len([n for n in os.listdir(chain) if not n.startswith(".")]), 1)
        self.destroy(mp2, store=self.shared)

    def test_bind_equals_umoci(self):
        _, mp = self.provision("bind", "oci:%s:base" % self.layout, store=self.shared)
        self.assertSameTree(self.ref["base"], mp, T.default_exclusions(True), "bind")
        self.destroy(mp, store=self.shared)


def two_layer_tars():
    """Mesos' OverlayFSBackend layers: {dir1/1, file=test1}, {dir2/2, file=test2}."""
    return [L.make_layer_tar([L.dir_("dir1"), L.reg("dir1/1", b"1"), L.reg("file", b"test1")]),
            L.make_layer_tar([L.dir_("dir2"), L.reg("dir2/2", b"2"), L.reg("file", b"test2")])]


class MesosBackendsTest(BackendCase):
    """provisioner_backend_tests.cpp and the Mesos docker images, per backend."""

    def layout(self, images):
        d = self.path("layout")
        I.write_oci_layout(d, images)
        return d

    def test_two_layer_merge_writable(self):
        tars = two_layer_tars()
        im = L.image_from_tars(tars, "gzip")
        lay = self.layout({"two": im})
        for backend in ("overlay", "copy"):
            with self.subTest(backend=backend):
                _, a = self.provision(backend, "oci:%s:two" % lay)
                _, b = self.provision(backend, "oci:%s:two" % lay)
                for mp in (a, b):
                    self.assertEqual(T.check_facts(mp, [("dir1/1", "file", b"1"), ("dir2/2", "file", b"2"),
                                                        ("file", "file", b"test2")]), [])
                with open(os.path.join(a, "file"), "wb") as f:
                    f.write(b"test3")
                os.mkdir(os.path.join(a, "newdir"))
                with open(os.path.join(a, "file"), "rb") as f:
                    self.assertEqual(f.read(), b"test3")
                with open(os.path.join(b, "file"), "rb") as f:
                    self.assertEqual(f.read(), b"test2", "the write reached another rootfs")
                self.assertFalse(os.path.exists(os.path.join(b, "newdir")))
                if backend == "overlay":
                    top = os.path.join(self.store, "unpacked", "sha256", im.layers[1].desc.hex, "file")
                    with open(top, "rb") as f:
                        self.assertEqual(f.read(), b"test2", "the write reached the unpacked layer")
                self.destroy(a)
                self.destroy(b)

    def test_overlay_128_layers_long_store_path(self):
        # MESOS-6000: 128 lowerdirs of ~300 bytes each are ~38 KiB of mount
        # options, far over the one page mount(2) takes.
        store = os.path.join(self.tmp, "s" * 120, "t" * 100, "store")
        layers = [L.make_layer_tar([L.dir_("lower_%.59d" % i), L.reg("lower_%.59d/f" % i, b"%d" % i)])
                  for i in range(128)]
        lay = self.layout({"many": L.image_from_tars(layers, "tar")})
        self.assertGreater(128 * len(os.path.join(store, "unpacked", "sha256", "0" * 64)), 4096)
        _, mp = self.provision("overlay", "oci:%s:many" % lay, store=store)
        names = sorted(os.listdir(mp))
        self.assertEqual(names, ["lower_%.59d" % i for i in range(128)])
        for i in (0, 64, 127):
            with open(os.path.join(mp, "lower_%.59d/f" % i), "rb") as f:
                self.assertEqual(f.read(), b"%d" % i)
        self.destroy(mp, store=store)

    def test_bind_read_only_and_single_layer(self):
        lay = self.layout({"one": L.image_from_tars([L.make_layer_tar([L.dir_("tmp", mode=0o1777)])], "gzip"),
                           "two": L.image_from_tars(two_layer_tars(), "gzip")})
        _, mp = self.provision("bind", "oci:%s:one" % lay)
        self.assertTrue(os.path.isdir(os.path.join(mp, "tmp")))
        self.assertEqual(os.stat(os.path.join(mp, "tmp")).st_mode & 0o7777, 0o1777)
        with self.assertRaises(OSError) as cm:
            open(os.path.join(mp, "tmp", "x"), "wb")
        self.assertEqual(cm.exception.errno, errno.EROFS)
        self.destroy(mp)
        res, mp2 = self.provision("bind", "oci:%s:two" % lay, check=False)
        self.assertFailedOneLine(res, r"bind backend takes single-layer images only.* has 2 layers")
        self.assertEqual(mounts_at_or_below(mp2), [])
        self.assertFalse(os.path.exists(self.record(mp2)))

    def test_symlink_escape_guard(self):
        outside = self.path("outside")
        os.makedirs(outside)
        with open(os.path.join(outside, "keep"), "wb") as f:
            f.write(b"host")
        up = "../" * 40 + outside.lstrip("/")
        l1 = [L.sym("etc", outside), L.sym("up", up), L.sym("keep", outside + "/keep"),
              L.dir_("d"), L.sym("d/link", up)]
        l2 = [L.reg("etc/passwd", b"root:x:0:0\n"), L.reg("up/evil", b"x"), L.reg("keep", b"mine"),
              L.opaque("d/link"), L.reg("d/link/deeper", b"y"), L.whiteout("etc/keep"),
              L.whiteout("up/keep")]
        mesos_abc = os.path.lexists("/abc")
        lay = self.layout({"escape": L.image_from_tars([L.make_layer_tar(l1), L.make_layer_tar(l2)], "gzip"),
                           "overwrite": L.image_from_tars(F.mesos_overwrite_tars(), "gzip")})
        # umoci follows such symlinks scoped to the rootfs (etc/passwd lands
        # in <rootfs>/<outside>/passwd); ucrfs, like Mesos, replaces a
        # non-directory in the way by a directory. The reference for the
        # escape image is therefore ucrfs' own merged tree (the FUSE mount).
        _, fmp = self.mount("oci:%s:escape" % lay)
        ref = oracle_walk(fmp, "fuse escape")
        self.umount(fmp)
        facts = [("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\n"), ("up", "dir", None),
                 ("up/evil", "file", b"x"), ("keep", "file", b"mine"), ("d/link", "dir", None),
                 ("d/link/deeper", "file", b"y")]
        ref_ow = oracle_walk(umoci_unpack(lay, "overwrite", self.path("bundle-ow")), "umoci overwrite")
        for backend in ("copy", "overlay"):
            with self.subTest(backend=backend):
                _, mp = self.provision(backend, "oci:%s:escape" % lay)
                self.assertEqual(sorted(os.listdir(outside)), ["keep"], "something appeared outside")
                with open(os.path.join(outside, "keep"), "rb") as f:
                    self.assertEqual(f.read(), b"host")
                self.assertEqual(T.check_facts(mp, facts), [], backend + " escape")
                if backend == "copy":
                    # (overlay: the whiteouts under etc/ and up/, which hide
                    # nothing, are listed by readdir of those unmerged
                    # directories; docs/backends.md)
                    self.assertSameTree(ref, mp, T.default_exclusions(False), backend + " escape")
                self.destroy(mp)
                _, mp = self.provision(backend, "oci:%s:overwrite" % lay)
                ex = (T.default_exclusions(False) if backend == "copy"
                      else overlay_exclusions(F.mesos_overwrite_tars(), False))
                self.assertSameTree(ref_ow, mp, ex, backend + " overwrite")
                self.assertEqual(T.check_facts(mp, F.MESOS_OVERWRITE_FACTS), [])
                if not mesos_abc:
                    self.assertFalse(os.path.lexists("/abc"), "/abc appeared on the host")
                self.destroy(mp)
        self.assertEqual(sorted(os.listdir(outside)), ["keep"], "something appeared outside")

    def test_whiteout_same_layer_survives(self):
        lay = self.layout({"wh": L.image_from_tars(F.mesos_whiteout_tars(), "gzip")})
        ref = oracle_walk(umoci_unpack(lay, "wh", self.path("bundle")), "umoci whiteout")
        for backend in ("copy", "overlay"):
            with self.subTest(backend=backend):
                _, mp = self.provision(backend, "oci:%s:wh" % lay)
                self.assertEqual(T.check_facts(mp, F.MESOS_WHITEOUT_FACTS), [])
                ex = (T.default_exclusions(False) if backend == "copy"
                      else overlay_exclusions(F.mesos_whiteout_tars(), False))
                self.assertSameTree(ref, mp, ex, backend + " whiteout")
                self.destroy(mp)

    def test_umount_with_open_file(self):
        lay = self.layout({"one": L.image_from_tars([L.make_layer_tar([L.reg("f", b"held")])], "gzip"),
                           "two": L.image_from_tars(two_layer_tars(), "gzip")})
        for backend, tag in (("overlay", "two"), ("copy", "two"), ("bind", "one")):
            with self.subTest(backend=backend):
                _, mp = self.provision(backend, "oci:%s:%s" % (lay, tag))
                name = "f" if tag == "one" else "file"
                fd = os.open(os.path.join(mp, name), os.O_RDONLY)
                try:
                    self.destroy(mp)
                    self.assertEqual(os.pread(fd, 4, 0), b"held" if tag == "one" else b"test")
                finally:
                    os.close(fd)

    def test_concurrent_overlay_provisioners(self):
        # Two rootfs of one image made at once into a fresh store: both
        # unpack the layers, one rename wins, both mount complete layers.
        im = L.image_from_tars(two_layer_tars(), "gzip")
        lay = self.layout({"two": im})
        mps = [self.mountpoint("c%d" % i) for i in range(4)]
        for mp in mps:
            self.addCleanup(self.cleanup_rootfs, mp)
        procs = [self.ucrfs_popen("mount", "--backend", "overlay", "oci:%s:two" % lay, mp) for mp in mps]
        for p in procs:
            self.assertSucceeded(self.wait_popen(p, timeout=300))
        for mp in mps:
            self.assertEqual(T.check_facts(mp, [("dir1/1", "file", b"1"), ("file", "file", b"test2")]), [])
        unpacked = os.path.join(self.store, "unpacked", "sha256")
        self.assertEqual(sorted(os.listdir(unpacked)), sorted(l.desc.hex for l in im.layers))
        for mp in mps:
            self.destroy(mp)

    def test_bad_backend_and_non_empty_dir(self):
        lay = self.layout({"two": L.image_from_tars(two_layer_tars(), "gzip")})
        mp = self.mountpoint("x")
        res = self.ucrfs("mount", "--backend", "aufs", "oci:%s:two" % lay, mp)
        self.assertFailedOneLine(res, r"backend 'aufs' is not fuse, overlay, copy or bind")
        with open(os.path.join(mp, "mine"), "wb") as f:
            f.write(b"user data")
        res, _ = self.provision("copy", "oci:%s:two" % lay, mp=mp, check=False)
        self.assertFailedOneLine(res, r"rootfs .* is not empty")
        self.assertEqual(os.listdir(mp), ["mine"], "a refused mount touched the directory")
