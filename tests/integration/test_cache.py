"""The image cache (issue 5): `ucrfs rmi`, `ucrfs gc`, mount records.

Two images A and B share a base layer and each add a layer of their own
(about 1 MiB of incompressible data each, so sizes are measurable), pushed
to a docker-registry on loopback.

Contract under test:
- rmi removes the image's record and what only it used (its own layer blob,
  its config and manifest), keeps what another image still uses (the shared
  base), and the other image still mounts and reads; an unknown image is a
  one-line error; an image a live mount serves is refused in one line,
  and removable once unmounted;
- gc removes every image no live mount uses, never what a live mount needs
  (its files keep reading right), and after the unmount collects it too,
  leaving no blob, chunk, decoded copy or layer index behind;
- gc --max-cache-size removes least recently used images first, only until
  the store fits;
- gc refuses (one line, exit 1, nothing removed) while another process
  holds the store the way a pull does;
- gc --save makes pulls collect by themselves when the store is over the
  size.
"""
import json
import os
import random
import subprocess

from lib import images as I
from lib import layers as L
from lib.mounts import MountTestCase
from lib.registry import Pusher, RealRegistry
from lib.util import which

MiB = 1 << 20


def rnd(seed, n):
    return random.Random(seed).randbytes(n)


class CacheTest(MountTestCase):
    mount_tools = ("docker-registry",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        base = L.make_layer_tar([L.dir_("etc"), L.reg("etc/base", b"shared base\n"), L.reg("base.bin", rnd("base", MiB))])
        la = L.make_layer_tar([L.reg("a.bin", rnd("a", MiB)), L.reg("etc/who", b"A\n")])
        lb = L.make_layer_tar([L.reg("b.bin", rnd("b", MiB)), L.reg("etc/who", b"B\n")])
        cls.A = L.image_from_tars([base, la], "gzip")
        cls.B = L.image_from_tars([base, lb], "gzip")
        # A layer that hardlinks to a file of the layer below: overlay
        # unpacks it for its chain (unpacked/chain/).
        lh = L.make_layer_tar([L.hard("etc/base-link", "etc/base")])
        cls.H = L.image_from_tars([base, lh], "gzip")
        cls.registry = RealRegistry(os.path.join(cls.class_tmp, "registry"))
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start()
        p = Pusher(cls.registry.url)
        p.push_image("cache/a", cls.A, "1")
        p.push_image("cache/b", cls.B, "1")
        p.push_image("cache/h", cls.H, "1")

    def ref(self, name):
        return "%s/cache/%s:1" % (self.registry.addr, name)

    def layer_digests(self, image):
        return [l["digest"] for l in json.loads(image.manifest.data)["layers"]]

    def blob_exists(self, digest):
        return os.path.exists(os.path.join(self.store, "blobs", "sha256", digest.split(":", 1)[1]))

    def images(self):
        res = self.ucrfs("images", "--json")
        self.assertSucceeded(res)
        return sorted(i["reference"] for i in json.loads(res.stdout))

    def pull(self, name):
        self.assertSucceeded(self.ucrfs("pull", self.ref(name)))

    def files(self, sub):
        d = os.path.join(self.store, sub)
        return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]

    def test_rmi(self):
        self.pull("a")
        self.pull("b")
        base, own_a = self.layer_digests(self.A)
        _, own_b = self.layer_digests(self.B)
        res = self.ucrfs("rmi", self.ref("a"))
        self.assertSucceeded(res)
        left = self.images()
        self.assertEqual(len(left), 1, left)
        self.assertIn("cache/b", left[0])
        self.assertFalse(self.blob_exists(own_a), "A's own layer survived rmi")
        self.assertFalse(self.blob_exists(self.A.manifest.digest), "A's manifest survived rmi")
        self.assertTrue(self.blob_exists(base), "rmi A removed the base B still uses")
        self.assertTrue(self.blob_exists(own_b))
        _, mp = self.mount(self.ref("b"))
        self.assertEqual(self.read_in_mount(mp, "etc/who"), b"B\n")
        self.assertEqual(self.read_in_mount(mp, "etc/base"), b"shared base\n")
        self.umount(mp)
        self.assertFailedOneLine(self.ucrfs("rmi", self.ref("a")), r"no image")

    def test_rmi_of_a_mounted_image_is_refused(self):
        _, mp = self.mount(self.ref("a"))
        self.assertFailedOneLine(self.ucrfs("rmi", self.ref("a")), r"in use.*" + os.path.basename(mp))
        self.assertEqual(self.read_in_mount(mp, "etc/who"), b"A\n")
        self.umount(mp)
        self.assertSucceeded(self.ucrfs("rmi", self.ref("a")))
        self.assertEqual(self.images(), [])

    def test_gc_keeps_what_a_live_mount_uses(self):
        _, mp = self.mount(self.ref("a"))
        self.pull("b")
        res = self.ucrfs("gc")
        self.assertSucceeded(res)
        self.assertEqual(len(self.images()), 1, res.stdout)
        self.assertIn("cache/a", self.images()[0])
        for d in self.layer_digests(self.A):
            self.assertTrue(self.blob_exists(d), "gc removed a layer of the mounted image")
        self.assertFalse(self.blob_exists(self.layer_digests(self.B)[1]), "gc kept B's own layer")
        with open(os.path.join(mp, "a.bin"), "rb") as f:
            self.assertEqual(f.read(), rnd("a", MiB), "the mount reads wrong after gc")
        self.umount(mp)
        self.assertSucceeded(self.ucrfs("gc"))
        self.assertEqual(self.images(), [])
        self.assertEqual(self.files("blobs"), [], "blobs left after gc of an empty store")
        self.assertEqual(self.files("decoded") + self.files("chunks"), [])
        # The emptied store still works.
        _, mp = self.mount(self.ref("b"))
        self.assertEqual(self.read_in_mount(mp, "etc/who"), b"B\n")
        self.umount(mp)

    def test_gc_max_size_removes_least_recently_used_first(self):
        self.pull("a")
        self.pull("b")
        _, mp = self.mount(self.ref("a"))  # A is now the more recently used
        self.umount(mp)
        # Room for one image (base + its own layer + manifest/config), not two.
        res = self.ucrfs("gc", "--max-cache-size", str(int(2.5 * MiB)))
        self.assertSucceeded(res)
        left = self.images()
        self.assertEqual(len(left), 1, res.stdout)
        self.assertIn("cache/a", left[0], "gc removed the more recently used image")

    def test_gc_keeps_the_layers_of_an_overlay_mount(self):
        mp = self.mountpoint("ovl")
        self.track_mount(mp)
        self.assertSucceeded(self.ucrfs("mount", "--backend", "overlay", self.ref("a"), mp))
        self.pull("b")
        self.assertSucceeded(self.ucrfs("gc"))
        left = self.images()
        self.assertEqual(len(left), 1, left)
        self.assertIn("cache/a", left[0])
        unpacked = os.path.join(self.store, "unpacked", "sha256")
        kept = sorted(os.listdir(unpacked))
        self.assertEqual(kept, sorted(d.split(":", 1)[1] for d in self.layer_digests(self.A)))
        with open(os.path.join(mp, "a.bin"), "rb") as f:
            self.assertEqual(f.read(), rnd("a", MiB))
        self.assertSucceeded(self.ucrfs("umount", mp))
        self.assertSucceeded(self.ucrfs("gc"))
        self.assertEqual(self.images(), [])
        self.assertEqual(os.listdir(unpacked), [], "unpacked layers left after gc")

    def test_gc_keeps_a_chain_unpack_while_mounted(self):
        mp = self.mountpoint("chain")
        self.track_mount(mp)
        self.assertSucceeded(self.ucrfs("mount", "--backend", "overlay", self.ref("h"), mp))
        chain = os.path.join(self.store, "unpacked", "chain")
        made = os.listdir(chain)
        self.assertEqual(len(made), 1, made)
        st1, st2 = os.stat(os.path.join(mp, "etc/base")), os.stat(os.path.join(mp, "etc/base-link"))
        self.assertEqual((st1.st_ino, st1.st_nlink), (st2.st_ino, 2), "the link and its target are one inode")
        self.pull("b")
        self.assertSucceeded(self.ucrfs("gc"))
        self.assertEqual(os.listdir(chain), made, "gc removed the chain unpack a live mount uses")
        with open(os.path.join(mp, "etc/base-link"), "rb") as f:
            self.assertEqual(f.read(), b"shared base\n")
        self.assertSucceeded(self.ucrfs("umount", mp))
        self.assertSucceeded(self.ucrfs("gc"))
        self.assertEqual(os.listdir(chain), [], "the chain unpack outlived its image")

    def test_gc_refuses_to_race_a_pull(self):
        if not which("flock"):
            self.skipTest("flock (util-linux) not installed")
        self.pull("a")
        # Hold the store's lock as a pull does, then gc.
        holder = subprocess.Popen(["flock", "-s", "-o", os.path.join(self.store, "lock"), "sleep", "30"])
        self.addCleanup(holder.kill)
        import time
        time.sleep(0.5)
        self.assertFailedOneLine(self.ucrfs("gc"), r"in use|busy")
        holder.kill()
        holder.wait()
        self.assertEqual(len(self.images()), 1, "gc removed something while refusing")
        self.assertSucceeded(self.ucrfs("gc"))
        self.assertEqual(self.images(), [])

    def test_recover_serves_a_mount_whose_server_died(self):
        import errno
        import signal
        import time
        from lib.mounts import server_pids, is_mounted, keeper_pids
        _, mp = self.mount(self.ref("a"))
        pids = server_pids(mp)
        self.assertEqual(len(pids), 1, pids)
        # Server and keeper both die: the connection ends (a server alone is
        # resumed without a remount: test_recover.py).
        keepers = keeper_pids(mp)
        self.assertEqual(len(keepers), 1, keepers)
        os.kill(keepers[0], signal.SIGKILL)
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.5)
        with self.assertRaises(OSError) as cm:
            with open(os.path.join(mp, "etc/who"), "rb") as f:
                f.read()
        self.assertEqual(cm.exception.errno, errno.ENOTCONN)
        res = self.ucrfs("recover")
        self.assertSucceeded(res)
        self.assertIn("restarted", res.stdout)
        self.assertEqual(self.read_in_mount(mp, "etc/who"), b"A\n")
        # The new server was started by `ucrfs recover` (its argv does not
        # name the mountpoint): its pid is in the store's mount record.
        recs = [json.load(open(os.path.join(self.store, "mounts", f))) for f in os.listdir(os.path.join(self.store, "mounts"))]
        self.assertEqual([r["mountpoint"] for r in recs], [os.path.realpath(mp)])
        new = [recs[0]["pid"]]
        self.assertNotEqual(new, pids)
        os.kill(new[0], 0)  # alive
        res = self.ucrfs("recover")
        self.assertIn("serving", res.stdout)
        # Server and mount both gone: recover only forgets the record.
        for k in keeper_pids(mp):
            os.kill(k, signal.SIGKILL)
        os.kill(new[0], signal.SIGKILL)
        time.sleep(0.5)
        subprocess.run(["umount", "-l", mp], check=True)
        self.assertFalse(is_mounted(mp))
        res = self.ucrfs("recover")
        self.assertSucceeded(res)
        self.assertIn("forgotten", res.stdout)
        self.assertEqual(os.listdir(os.path.join(self.store, "mounts")), [])
        self.assertSucceeded(self.ucrfs("rmi", self.ref("a")))  # nothing holds it any more

    def test_saved_limit_makes_pulls_collect(self):
        self.assertSucceeded(self.ucrfs("gc", "--save", "--max-cache-size", str(int(2.5 * MiB))))
        self.pull("a")
        self.pull("b")
        left = self.images()
        self.assertEqual(len(left), 1, "the store was not collected by the pull")
        self.assertIn("cache/b", left[0], "the pull removed the image it pulled")


if __name__ == "__main__":
    import unittest
    unittest.main()
