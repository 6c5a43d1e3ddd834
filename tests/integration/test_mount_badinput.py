"""`ucrfs mount` refuses images whose layers are malicious or broken: exit
!= 0, one line on stderr, nothing mounted (the mountpoint is an empty
directory, not a mount, with no server behind it); and the store is still
usable afterwards: it opens and serves another, good image."""
import gzip
import os
import unittest

from lib import images as I
from lib import layers as L
from lib.mounts import MountTestCase


def good_base():
    return L.make_layer_tar([L.dir_("etc"), L.reg("etc/os-release", b"ID=base\n"),
                             L.dir_("x"), L.reg("x/file", b"x\n")])


class BadInputTest(MountTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.good = I.simple_image("good", nlayers=2)

    def layout_with(self, layer_tar, kind="gzip", blob=None):
        """An OCI layout: tag "bad" = [good base, the given layer], tag
        "good" = an unrelated good image."""
        layout = os.path.join(self.tmp, "layout")
        bad = L.RawLayer(layer_tar, kind, blob=blob)
        base = L.RawLayer(good_base(), "gzip")
        im = I.Image([base, bad], runtime={"Cmd": ["/bin/sh"]}, arch=self.good.arch)
        I.write_oci_layout(layout, {"bad": im, "good": self.good})
        return layout

    def test_control_benign_second_layer_mounts(self):
        # The scaffolding itself is fine: with a harmless second layer the
        # "bad" image mounts, so the refusals below are about their layers.
        layout = self.layout_with(L.make_layer_tar([L.reg("x/ok", b"ok\n")]))
        _, mp = self.mount("oci:%s:bad" % layout)
        self.assertEqual(self.read_in_mount(mp, "x/ok"), b"ok\n")
        self.assertEqual(self.read_in_mount(mp, "x/file"), b"x\n")
        self.umount(mp)

    def refuse(self, bad_layer_tar, pattern=None, kind="gzip", blob=None):
        """An image of [good base, bad layer] must be refused; then the same
        store mounts a good image."""
        layout = self.layout_with(bad_layer_tar, kind, blob)
        mp = self.mountpoint("bad")
        self.track_mount(mp)
        res = self.ucrfs("mount", "oci:%s:bad" % layout, mp, timeout=120)
        line = self.assertFailedOneLine(res, pattern)
        self.assertNothingMounted(mp)
        # The store still opens and serves another image.
        _, gmp = self.mount("oci:%s:good" % layout, mp=self.mountpoint("good"))
        self.assertEqual(self.read_in_mount(gmp, "etc/os-release"), b"ID=ucrfs-test\n",
                         "the good image, after the bad one was refused (%s)" % line)
        self.umount(gmp)
        if os.environ.get("UCRFS_IT_TRACE"):
            print("\n  refused with: %s" % line, flush=True)
        return line

    def test_dotdot_entry(self):
        self.refuse(L.make_layer_tar([L.reg("../evil", b"evil\n")]), r"\.\./evil|\.\.")

    def test_dotdot_inside_path(self):
        self.refuse(L.make_layer_tar([L.dir_("a"), L.reg("a/../../evil", b"evil\n")]),
                    r"a/\.\./\.\./evil|\.\.")

    def test_absolute_path(self):
        self.refuse(L.make_layer_tar([L.reg("/etc/evil", b"evil\n")]), r"/etc/evil|absolute")

    def test_hardlink_to_missing_target(self):
        self.refuse(L.make_layer_tar([L.hard("x/link", "x/nonexistent")]), r"x/nonexistent")

    def test_hardlink_to_dotdot(self):
        self.refuse(L.make_layer_tar([L.hard("x/link", "../x")]), r"\.\./x|\.\.")

    def test_whiteout_of_dotdot(self):
        # `x/.wh..` would white out x/.. (the root).
        self.refuse(L.make_layer_tar([L.reg("x/.wh..", b"", mode=0o600)]), r"\.wh\.\.|whiteout")

    def test_truncated_gzip_layer(self):
        tar = L.make_layer_tar([L.dir_("t")] + [L.reg("t/f%03d" % i, os.urandom(2000))
                                               for i in range(100)])
        full = gzip.compress(tar, mtime=0)
        # The descriptor's digest and size are those of the truncated bytes:
        # only the content is bad (the diff_id is the full tar's).
        self.refuse(tar, r"truncat|unexpected end|end of (file|stream|data)|corrupt|gzip|deflate",
                    blob=full[:len(full) // 2])

    def test_absurd_size_in_header(self):
        # A ustar header claiming 8 GiB - 1 bytes (octal 77777777777) with a
        # correct checksum, followed by the end of the archive.
        hdr = L.raw_header(b"x/huge", b"77777777777\0")
        tar = hdr + b"\0" * 1024
        self.refuse(tar, r"x/huge|size|truncat")


if __name__ == "__main__":
    unittest.main()
