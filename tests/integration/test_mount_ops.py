"""`ucrfs mount` under load and through its lifecycle: concurrent preads of
the 100 MB file, concurrent tree walks matching the umoci oracle, umount
leaving no mount and no server, --foreground, two mounts of one image from
one store, `images --json`, and a mount served from the store with the
registry gone.

The FEATURES image (lib/fixtures.py) is built, unpacked by umoci and mounted
once per class (setUpClass); the lifecycle tests make their own mounts."""
import errno
import json
import os
import random
import stat
import subprocess
import threading
import time
import unittest

from lib import fixtures as F
from lib import images as I
from lib import layers as L
from lib import treecmp as T
from lib.mounts import MountTestCase, force_unmount, is_mounted, server_pids, wait_for
from lib.registry import Pusher, RealRegistry
from lib.util import _LIVE, run


def run_threads(n, fn):
    """Runs fn(i) in n threads; returns the exceptions raised (bounded join)."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append("thread %d: %r" % (i, e))

    ts = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 240
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in ts if t.is_alive()]
    if alive:
        errors.append("%d thread(s) still running after 240s (hung read or walk?)" % len(alive))
    return errors


def stat_walk(top):
    """find + stat: {relative bytes path: (mode, uid, gid, size, mtime_ns, nlink)} via
    os.walk (bytes) and lstat, the way `find -printf` would see it."""
    out = {}
    top = os.fsencode(top)
    for d, dirs, files in os.walk(top, onerror=lambda e: out.setdefault(b"<error>", repr(e))):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, size,
                                            st.st_mtime_ns, st.st_nlink)
    return out


def diff_stats(ref, got):
    """None, or one line: counts and the first differing path with both values."""
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    wrong = sorted(p for p in set(got) & set(ref) if got[p] != ref[p])
    if not (missing or extra or wrong):
        return None
    p = (missing or extra or wrong)[0]

    def fmt(t):
        if t is None:
            return "None"
        if isinstance(t, str):
            return t
        return "(mode=0o%o uid=%d gid=%d size=%s mtime_ns=%d nlink=%d)" % t

    return "%d missing, %d extra, %d differing; first %s: reference=%s walk=%s" % (
        len(missing), len(extra), len(wrong), T.show(p), fmt(ref.get(p)), fmt(got.get(p)))


def ref_stat_map(nodes):
    return {p: (n.mode, n.uid, n.gid, None if n.type == "dir" else n.size, n.mtime_ns, n.nlink)
            for p, n in nodes.items() if p != b"."}


class MountOpsTest(MountTestCase):
    mount_tools = ("umoci",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp = cls.class_tmp
        cls.tars = F.features_tars(tmp)
        cls.image = L.image_from_tars(cls.tars, "gzip", level=1)
        cls.layout = os.path.join(tmp, "layout")
        I.write_oci_layout(cls.layout, {"v1": cls.image})
        cls.ref_image = "oci:%s:v1" % cls.layout
        run(["umoci", "unpack", "--image", cls.ref_image[4:], os.path.join(tmp, "bundle")],
            timeout=300)
        nodes, errors = T.walk(os.path.join(tmp, "bundle", "rootfs"), hash_content=False)
        assert not errors, errors
        cls.ref_stats = ref_stat_map(nodes)
        cls.big = F.big_data()

        # One store and one mount shared by the read/walk tests.
        cls.shared_store = os.path.join(tmp, "shared-store")
        cls.shared_mp = os.path.join(tmp, "shared-mnt")
        os.makedirs(cls.shared_mp)
        cls.addClassCleanup(cls._class_unmount)
        res = subprocess.run([cls.bin, "--store", cls.shared_store, "mount", cls.ref_image,
                              cls.shared_mp], capture_output=True, timeout=300,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        if res.returncode != 0 or not is_mounted(cls.shared_mp):
            raise AssertionError("shared mount failed (exit %d): %s" % (
                res.returncode, res.stderr.decode(errors="replace")[-2000:]))

    @classmethod
    def _class_unmount(cls):
        if is_mounted(cls.shared_mp):
            subprocess.run([cls.bin, "umount", cls.shared_mp], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        force_unmount(cls.shared_mp)

    # ------------------------------------------------------------ load

    def _preads(self, nthreads=8, per_thread=150):
        path = os.path.join(self.shared_mp, os.fsdecode(F.BIG_PATH))
        size = len(self.big)
        shared_fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, shared_fd)
        self.assertEqual(os.fstat(shared_fd).st_size, size)

        def reader(i):
            rnd = random.Random(1000 + i)
            fd = shared_fd if i % 2 == 0 else os.open(path, os.O_RDONLY)
            try:
                for k in range(per_thread):
                    r = rnd.random()
                    if r < 0.1:      # straddling or past the end
                        off = size - rnd.randrange(0, 70000)
                        ln = rnd.randrange(1, 140000)
                    elif r < 0.3:    # small reads anywhere
                        off, ln = rnd.randrange(0, size), rnd.randrange(1, 300)
                    else:            # up to 1 MiB
                        off, ln = rnd.randrange(0, size), rnd.randrange(1, 1 << 20)
                    got = os.pread(fd, ln, off)
                    want = self.big[off:off + ln]
                    if got != want:
                        first = next((j for j in range(min(len(got), len(want)))
                                      if got[j] != want[j]), min(len(got), len(want)))
                        raise AssertionError(
                            "pread(off=%d, len=%d): got %d bytes, want %d; first difference at "
                            "file offset %d" % (off, ln, len(got), len(want), off + first))
            finally:
                if fd != shared_fd:
                    os.close(fd)

        return run_threads(nthreads, reader)

    def _walks(self, nthreads=4):
        results = [None] * nthreads

        def walker(i):
            results[i] = stat_walk(self.shared_mp)

        errors = run_threads(nthreads, walker)
        for i, got in enumerate(results):
            if got is None:
                continue
            d = diff_stats(self.ref_stats, got)
            if d:
                errors.append("walker %d: %s" % (i, d))
        return errors

    def test_parallel_preads(self):
        errors = self._preads()
        self.assertEqual(errors, [], "8 threads of pread on the 100 MB file")

    def test_parallel_walks_match_oracle(self):
        errors = self._walks()
        self.assertEqual(errors, [], "4 threads of os.walk + lstat vs the umoci tree")

    def test_reads_and_walks_together(self):
        errors = []
        t = threading.Thread(target=lambda: errors.extend(self._walks(2)), daemon=True)
        t.start()
        errors += self._preads(4, 60)
        t.join(240)
        self.assertFalse(t.is_alive(), "walkers hung")
        self.assertEqual(errors, [], "preads and walks at the same time")

    def test_read_only(self):
        for fn in (lambda: open(os.path.join(self.shared_mp, "newfile"), "wb"),
                   lambda: os.open(os.path.join(self.shared_mp, "etc/hostname"), os.O_WRONLY),
                   lambda: os.mkdir(os.path.join(self.shared_mp, "newdir")),
                   lambda: os.unlink(os.path.join(self.shared_mp, "etc/empty")),
                   lambda: os.chmod(os.path.join(self.shared_mp, "etc/empty"), 0o777),
                   lambda: os.setxattr(os.path.join(self.shared_mp, "etc/empty"), "user.x", b"1")):
            with self.assertRaises(OSError) as cm:
                fn()
            self.assertIn(cm.exception.errno, (errno.EROFS, errno.EPERM, errno.EACCES,
                                               errno.ENOTSUP), str(cm.exception))
        self.assertEqual(self.read_in_mount(self.shared_mp, "etc/hostname"), b"ucrfs layer 2\n")

    # ------------------------------------------------------------ lifecycle

    def test_umount_leaves_no_mount_and_no_server(self):
        store = os.path.join(self.tmp, "store")
        _, mp = self.mount(self.ref_image, store=store)
        pids = server_pids(mp)
        self.assertTrue(pids, "no process names %s in its argv" % mp)
        self.assertEqual(self.read_in_mount(mp, "etc/hostname"), b"ucrfs layer 2\n")
        self.umount(mp, store=store)
        self.assertEqual(os.listdir(mp), [], "mountpoint not empty after umount")
        self.assertTrue(wait_for(lambda: all(not os.path.exists("/proc/%d" % p) or
                                             _zombie(p) for p in pids), 5), pids)
        # Unmounting what is not mounted is an error, not a hang.
        res = self.ucrfs("umount", mp, store=store, timeout=30)
        self.assertFailedOneLine(res)

    def test_foreground(self):
        store = os.path.join(self.tmp, "store")
        mp = self.mountpoint()
        self.track_mount(mp, store)
        p = self.ucrfs_popen("mount", "--foreground", self.ref_image, mp, store=store)
        ok = wait_for(lambda: is_mounted(mp) or p.poll() is not None, 300, 0.1)
        if not ok or not is_mounted(mp):
            out, err = p.communicate(timeout=10) if p.poll() is not None else (b"", b"")
            self.fail("--foreground: no mount at %s (exit %s): %r" % (mp, p.poll(), err[-2000:]))
        self.assertMounted(mp)
        self.assertIsNone(p.poll(), "--foreground returned while mounted")
        self.assertIn(p.pid, server_pids(mp))
        self.assertEqual(self.read_in_mount(mp, "etc/hostname"), b"ucrfs layer 2\n")
        # Reap the server as soon as it exits, as a shell or supervisor would
        # (until reaped it is a zombie, which kill(pid, 0) still finds).
        waiter = threading.Thread(target=lambda: _wait_quietly(p, 60), daemon=True)
        waiter.start()
        self.umount(mp, store=store)
        waiter.join(15)
        if p.poll() is None:
            self.fail("--foreground process still running 15s after umount")
        _LIVE.discard(p)
        self.assertEqual(p.returncode, 0, "--foreground exit status: %r" % p.stderr.read()[-2000:])

    def test_two_mounts_one_store(self):
        store = os.path.join(self.tmp, "store")
        _, mp1 = self.mount(self.ref_image, mp=self.mountpoint("m1"), store=store)
        _, mp2 = self.mount(self.ref_image, mp=self.mountpoint("m2"), store=store)
        for mp in (mp1, mp2):
            with open(os.path.join(mp, os.fsdecode(F.BIG_PATH)), "rb") as f:
                f.seek(50 << 20)
                self.assertEqual(f.read(4096), self.big[50 << 20:(50 << 20) + 4096])
        self.umount(mp1, store=store)
        # The other mount is unaffected.
        self.assertMounted(mp2)
        self.assertIsNone(diff_stats(self.ref_stats, stat_walk(mp2)),
                          "second mount after the first went away")
        self.umount(mp2, store=store)

    def test_images_json_lists_the_image(self):
        store = os.path.join(self.tmp, "store")
        _, mp = self.mount(self.ref_image, store=store)
        res = self.ucrfs("images", "--json", store=store)
        self.assertSucceeded(res)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            self.fail("images --json printed no JSON\n" + res.describe())
        self.assertIsInstance(data, list, res.describe())
        mine = [e for e in data if e.get("digest") == self.image.manifest.digest]
        self.assertEqual(len(mine), 1, "the mounted image, once\n" + res.describe())
        e = mine[0]
        self.assertTrue(isinstance(e.get("reference"), str) and e["reference"], res.describe())
        self.assertIn(self.layout, e["reference"], res.describe())
        layers = e.get("layers")
        self.assertEqual(len(layers) if isinstance(layers, list) else layers, 3, res.describe())
        # Plain listing works too and names the image.
        res = self.ucrfs("images", store=store)
        self.assertSucceeded(res)
        self.assertTrue(self.layout in res.stdout or self.image.manifest.digest[7:19] in res.stdout,
                        "plain `images` names the image (reference or digest)\n" + res.describe())
        self.umount(mp, store=store)

    def test_mount_from_store_without_network(self):
        reg = RealRegistry(os.path.join(self.tmp, "registry"))
        self.addCleanup(reg.stop)
        reg.start()
        small = I.simple_image("offline", nlayers=2)
        Pusher(reg.url).push_image("it/offline", small, "v1")
        ref = "%s/it/offline:v1" % reg.addr
        store = os.path.join(self.tmp, "store")
        _, mp = self.mount(ref, store=store)
        self.umount(mp, store=store)
        reg.stop()
        # Proof the registry is gone: an image not in the store cannot be had.
        res = self.ucrfs("mount", "%s/it/never:v1" % reg.addr, self.mountpoint("never"),
                         store=store, timeout=120)
        self.assertFailedOneLine(res)
        self.assertNothingMounted(self.mountpoint("never"))
        # The pulled one mounts from the store alone.
        _, mp = self.mount(ref, store=store, timeout=60)
        self.assertEqual(self.read_in_mount(mp, "etc/os-release"), b"ID=ucrfs-test\n")
        self.assertTrue(self.read_in_mount(mp, "layer1/offline-%s.txt" % small.arch).startswith(
            b"content of layer 1 of offline"))
        self.umount(mp, store=store)


def _wait_quietly(p, timeout):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


if __name__ == "__main__":
    unittest.main()
