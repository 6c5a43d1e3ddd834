"""The differential oracle for `ucrfs mount`: the tree ucrfs serves must equal
what `umoci unpack` (as root) makes of the same image.

Images are built here from hand-made layers (lib/fixtures.py, lib/layers.py):
every entry type, setuid/setgid/sticky, big uids/gids (octal, PAX, GNU
base-256), symlinks of all sorts, hardlink groups (also across layers and
shrunk by a later whiteout), devices and a fifo, xattrs (user.*, binary
values, security.capability), 255-byte and non-UTF-8 names, a directory of
5,000 entries, a 100 MB file, a PAX sparse file, nanosecond/negative/far
mtimes, and the layer rules: whiteouts of files and trees, opaque
directories with same-layer siblings before and after the marker,
delete-then-recreate, type changes, directory metadata changes, and the
Mesos provisioner images (Whiteout, Overwrite incl. the symlink escape).

Each image is served from an OCI layout (`oci:DIR:TAG`), a real registry
(docker-registry on loopback) and, uncompressed, a `docker-archive:`; for
gzip, zstd and uncompressed layers. lib/treecmp.py compares the trees.

Oracle notes (what umoci does and what follows for the comparison):
- umoci restores each parent directory's metadata after every entry it
  extracts into it (tar_extract.go: restoreMetadata(dir) in a defer), so a
  directory with its own tar entry keeps that entry's mtime. A directory
  WITHOUT an entry (implicit parent) would get the extraction time; the
  fixtures give every directory an entry, so no directory mtime is excluded
  except the root's when no layer has a `./` entry (umoci sets it to the
  epoch; nothing in the image defines it).
- umoci 0.4.7 cannot unpack zstd layers (isLayerType/needsGunzip know only
  tar and tar+gzip). The zstd image's layers are byte-identical tars to the
  uncompressed image's (same diff_ids, asserted), so its reference is
  umoci's unpack of the uncompressed image. Likewise docker-archive (plain
  tars of the same diff_ids).
- umoci (and GNU tar) cannot write paths longer than PATH_MAX, and umoci
  rejects old-GNU sparse members (type 'S'); those are in a separate image
  whose reference is a model of the tar headers read with Python's tarfile
  (lib/treecmp.tar_model), itself checked against umoci on a whiteout-free
  layer here.
- umoci skips security.selinux, system.nfs4_acl and trusted.overlay.opaque
  on unpack; the fixtures use none of them, so xattrs are compared whole.
- mtimes beyond 2262 are not in the fixtures: umoci goes through Go's
  time.UnixNano (int64 ns), which overflows there.
- Not compared at all: directory st_size (storage-specific), atime/ctime,
  st_blocks (umoci writes sparse holes as zeros), inode numbers (only the
  hardlink partition they induce is compared).
"""
import hashlib
import os
import stat
import unittest

from lib import fixtures as F
from lib import images as I
from lib import layers as L
from lib import treecmp as T
from lib.mounts import MountTestCase
from lib.registry import Pusher, RealRegistry
from lib.util import run

KINDS = ("gzip", "zstd", "tar")


def umoci_unpack(layout, tag, bundle):
    run(["umoci", "unpack", "--image", "%s:%s" % (layout, tag), bundle], timeout=300)
    return os.path.join(bundle, "rootfs")


def oracle_walk(root, what):
    nodes, errors = T.walk(root)
    if errors:
        raise AssertionError("walking %s (%s): %s" % (root, what, "; ".join(errors[:10])))
    return nodes


class OracleCase(MountTestCase):
    mount_tools = ("umoci",)

    @classmethod
    def fixture_problem(cls, what, problems):
        if problems:
            raise AssertionError("fixture/oracle problem: %s:\n  %s" % (what, "\n  ".join(problems[:40])))

    def assertSameTree(self, ref, mp, exclusions, label):
        got, errors = T.walk(mp)
        diffs = ["walk error: " + e for e in errors] + T.compare(ref, got, exclusions, limit=100)
        if diffs:
            self.fail("%s: the mount differs from the reference in %s%d place(s); first: %s\n  %s\n"
                      "(%s)" % (label, "at least " if len(diffs) > 100 else "", len(diffs), diffs[0],
                                "\n  ".join(diffs[:60]), "; ".join(exclusions.describe())))
        return got

    def assertFacts(self, root, facts, label):
        bad = T.check_facts(root, facts)
        self.assertEqual(bad, [], "%s: layer semantics" % label)


class FeaturesOracleTest(OracleCase):
    """The three-layer FEATURES image, from every source and compression."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.tars = F.features_tars(tmp)
        cls.images = {k: L.image_from_tars(cls.tars, k, level=1 if k == "gzip" else None)
                      for k in KINDS}
        diff_ids = {k: [l.diff_id for l in im.layers] for k, im in cls.images.items()}
        assert len({tuple(v) for v in diff_ids.values()}) == 1, diff_ids
        cls.layout = os.path.join(tmp, "layout")
        I.write_oci_layout(cls.layout, cls.images)

        # References: umoci of the gzip and of the uncompressed image. They
        # must agree with each other (same tars) and show the layer rules.
        cls.ref = {}
        for k in ("gzip", "tar"):
            root = umoci_unpack(cls.layout, k, os.path.join(tmp, "bundle-" + k))
            cls.ref[k] = oracle_walk(root, "umoci " + k)
            cls.fixture_problem("umoci %s tree" % k, T.check_facts(root, F.FEATURE_FACTS))
            cls.fixture_problem("umoci %s hardlinks" % k,
                                T.link_groups(cls.ref[k], F.FEATURE_LINK_GROUPS))
        cls.ref["zstd"] = cls.ref["tar"]  # see the module docstring
        cls.fixture_problem("umoci gzip vs tar", T.compare(cls.ref["gzip"], cls.ref["tar"]))
        exp = F.sparse_expected(tmp)["sparse/pax-holes"]
        got = cls.ref["tar"][b"sparse/pax-holes"].sha256
        cls.fixture_problem("umoci sparse file", [] if got == hashlib.sha256(exp).hexdigest()
                            else ["sparse/pax-holes content differs"])
        cls.fixture_problem("100M file", [] if cls.ref["tar"][F.BIG_PATH].sha256 ==
                            hashlib.sha256(F.big_data()).hexdigest() else ["content differs"])
        cls.exclusions = T.default_exclusions(root_has_entry=True)
        print("\n  oracle exclusions:\n    " + "\n    ".join(cls.exclusions.describe()), flush=True)

        cls.registry = RealRegistry(os.path.join(tmp, "registry"))
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start()
        pusher = Pusher(cls.registry.url)
        for k, im in cls.images.items():
            pusher.push_image("it/features", im, k)
        cls.archive = os.path.join(tmp, "features-docker.tar")
        I.write_docker_archive(cls.archive, cls.images["tar"], ["it/features:v1"])

    def check(self, image, ref_kind, label):
        _, mp = self.mount(image)
        got = self.assertSameTree(self.ref[ref_kind], mp, self.exclusions, label)
        self.assertFacts(mp, F.FEATURE_FACTS, label)
        self.assertEqual(T.link_groups(got, F.FEATURE_LINK_GROUPS), [], label + ": hardlinks")
        self.umount(mp)

    def test_oci_gzip(self):
        self.check("oci:%s:gzip" % self.layout, "gzip", "oci gzip")

    def test_oci_zstd(self):
        self.check("oci:%s:zstd" % self.layout, "zstd", "oci zstd")

    def test_oci_uncompressed(self):
        self.check("oci:%s:tar" % self.layout, "tar", "oci tar")

    def test_registry_gzip(self):
        self.check("%s/it/features:gzip" % self.registry.addr, "gzip", "registry gzip")

    def test_registry_zstd(self):
        self.check("%s/it/features:zstd" % self.registry.addr, "zstd", "registry zstd")

    def test_registry_uncompressed(self):
        self.check("%s/it/features:tar" % self.registry.addr, "tar", "registry tar")

    def test_docker_archive(self):
        self.check("docker-archive:" + self.archive, "tar", "docker-archive")


class MesosOracleTest(OracleCase):
    """Mesos' ROOT_INTERNET_CURL_DTYPE_Whiteout and _Overwrite images
    (provisioner_docker_tests.cpp), gzip layers from an OCI layout."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.layout = os.path.join(tmp, "layout")
        imgs = {"whiteout": L.image_from_tars(F.mesos_whiteout_tars(), "gzip"),
                "overwrite": L.image_from_tars(F.mesos_overwrite_tars(), "gzip")}
        I.write_oci_layout(cls.layout, imgs)
        cls.abc_existed = os.path.lexists("/abc")
        cls.ref = {}
        for tag, facts in (("whiteout", F.MESOS_WHITEOUT_FACTS),
                           ("overwrite", F.MESOS_OVERWRITE_FACTS)):
            root = umoci_unpack(cls.layout, tag, os.path.join(tmp, "bundle-" + tag))
            cls.ref[tag] = oracle_walk(root, "umoci " + tag)
            cls.fixture_problem("umoci %s tree" % tag, T.check_facts(root, facts))
        cls.exclusions = T.default_exclusions(root_has_entry=False)
        print("\n  oracle exclusions:\n    " + "\n    ".join(cls.exclusions.describe()), flush=True)

    def test_whiteout(self):
        _, mp = self.mount("oci:%s:whiteout" % self.layout)
        self.assertSameTree(self.ref["whiteout"], mp, self.exclusions, "mesos whiteout")
        self.assertFacts(mp, F.MESOS_WHITEOUT_FACTS, "mesos whiteout")
        self.umount(mp)

    def test_overwrite(self):
        _, mp = self.mount("oci:%s:overwrite" % self.layout)
        self.assertSameTree(self.ref["overwrite"], mp, self.exclusions, "mesos overwrite")
        self.assertFacts(mp, F.MESOS_OVERWRITE_FACTS, "mesos overwrite")
        # The old /xyz -> ../../../../../../../abc must not have been followed:
        # /xyz is an empty file in the image and nothing appeared on the host.
        st = os.lstat(os.path.join(mp, "xyz"))
        self.assertTrue(stat.S_ISREG(st.st_mode) and st.st_size == 0, "/xyz")
        if not self.abc_existed:
            self.assertFalse(os.path.lexists("/abc"), "/abc appeared on the host")
        self.umount(mp)


class BeyondUmociTest(OracleCase):
    """A path deeper than PATH_MAX and an old-GNU sparse file, against a
    model of the tar headers (what no extractor here can write)."""

    def test_reference_model_agrees_with_umoci(self):
        # Guards the model used below: on a whiteout-free layer with every
        # entry kind (the FEATURES base layer without the 100 MB file),
        # tar_model and umoci produce the same tree.
        tars = F.features_tars(self.tmp, with_big=False)[:1]
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"base": L.image_from_tars(tars, "tar")})
        root = umoci_unpack(layout, "base", os.path.join(self.tmp, "bundle"))
        diffs = T.compare(oracle_walk(root, "umoci"), T.tar_model(tars),
                          T.default_exclusions(root_has_entry=True), limit=40)
        self.assertEqual(diffs, [], "tar_model vs umoci")

    def test_deep_path_and_gnu_sparse(self):
        tars = F.beyond_umoci_tars(self.tmp)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"deep": L.image_from_tars(tars, "gzip")})
        model = T.tar_model(tars)
        deepest = F.deep_dirs()[-1]
        self.assertGreater(len(deepest), 4096)
        self.assertEqual(model[b"sparse/gnu-holes"].sha256, hashlib.sha256(
            F.sparse_expected(self.tmp)["sparse/gnu-holes"]).hexdigest(), "model of the sparse file")
        ex = T.default_exclusions(root_has_entry=False)
        _, mp = self.mount("oci:%s:deep" % layout)
        got = self.assertSameTree(model, mp, ex, "deep+gnu-sparse")
        self.assertIn(deepest + b"/bottom", got)
        self.umount(mp)


if __name__ == "__main__":
    unittest.main()
