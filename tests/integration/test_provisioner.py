"""The provisioner (`ucrfs provision`, `destroy`, `containers`, `recover
--live`), Mesos' provisioner_docker_tests / provisioner_backend_tests cases:

- the layout under the work dir is Mesos':
  provisioner/containers/<id>/backends/<backend>/rootfses/<uuid>;
- the fuse backend is writable through an overlay over the FUSE mount: a
  two-layer merge where the upper layer wins, writes land in the rootfs'
  scratch directory and never in the image (a second rootfs does not see
  them);
- several rootfses per container (fuse, overlay, copy), all listed, all
  gone after destroy: nothing mounted below the container's directory, no
  FUSE server left, the directory removed;
- destroy succeeds while a process holds a file open in the rootfs;
- N concurrent provisions of one image (separate processes) fetch every blob
  once, counted at the registry;
- recover --live: containers not named are destroyed; a live container
  whose FUSE server was killed serves again at the same rootfs, its writes
  kept;
- bad input: an unsafe container id, a missing image, an unknown backend.
"""
import json
import os
import signal
import subprocess
import threading
import time

from lib import images as I
from lib import layers as L
from lib.fakereg import FakeRegistry
from lib.mounts import MountTestCase, force_unmount, mountinfo, wait_for

from test_backends import two_layer_tars


def mounts_below(path):
    path = os.path.realpath(path)
    return [e for e in mountinfo() if e[0] == path or e[0].startswith(path + "/")]


def ucrfs_processes_naming(path):
    """pids of ucrfs processes whose argv names something under path."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X"):
            continue
        if any(a.startswith(os.fsencode(path)) for a in argv) and any(b"ucrfs" in a for a in argv[:1]):
            out.append(int(pid))
    return out


def recorded_servers(path):
    """pids of the FUSE servers whose run record (/run/ucrfs/mounts/<hash>:
    pid, mountpoint, image) names a mountpoint under path, and alive."""
    out = []
    run = "/run/ucrfs/mounts"
    for n in os.listdir(run) if os.path.isdir(run) else []:
        if "." in n:
            continue
        try:
            with open(os.path.join(run, n)) as f:
                lines = f.read().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            continue
        if len(lines) > 1 and lines[1].startswith(path + "/") and alive(pid):
            out.append(pid)
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class ProvisionerCase(MountTestCase):
    def setUp(self):
        super().setUp()
        self.work = os.path.join(self.tmp, "work")
        self.addCleanup(self.cleanup_work)

    def cleanup_work(self):
        cdir = os.path.join(self.work, "provisioner", "containers")
        if os.path.isdir(cdir):
            for c in os.listdir(cdir):
                self.ucrfs("destroy", c, flags=self.flags(), timeout=60)
        for m in sorted(mounts_below(self.work), key=lambda e: -len(e[0])):
            force_unmount(m[0])
        for pid in ucrfs_processes_naming(self.work):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def flags(self, *more):
        return ["--work-dir", self.work] + list(more)

    def provision(self, cid, image, *args, check=True, flags=()):
        res = self.ucrfs("provision", "--json", *args, cid, image, flags=self.flags(*flags), timeout=300)
        if not check:
            return res
        self.assertSucceeded(res)
        return json.loads(res.stdout)

    def containers_dir(self, cid=None):
        d = os.path.join(self.work, "provisioner", "containers")
        return os.path.join(d, cid) if cid else d

    def assertDestroyed(self, cid):
        cdir = self.containers_dir(cid)
        servers = recorded_servers(cdir) + ucrfs_processes_naming(cdir)
        res = self.ucrfs("destroy", cid, flags=self.flags(), timeout=120)
        self.assertSucceeded(res)
        self.assertEqual(mounts_below(cdir), [], "mounts left below %s" % cdir)
        self.assertFalse(os.path.exists(cdir), "%s left after destroy" % cdir)
        wait_for(lambda: not any(alive(p) for p in servers), 10)
        self.assertEqual([p for p in servers if alive(p)], [], "FUSE servers left for %s" % cid)


class ProvisionerTest(ProvisionerCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.layout = os.path.join(cls.class_tmp, "layout")
        I.write_oci_layout(cls.layout, {"two": L.image_from_tars(two_layer_tars(), "gzip", level=1)})
        cls.image = "oci:%s:two" % cls.layout

    def test_fuse_rootfs_is_writable_merge_in_mesos_layout(self):
        a = self.provision("c1", self.image)
        root = a["rootfs"]
        self.assertEqual(a["backend"], "fuse")
        self.assertTrue(a["writable"])
        self.assertEqual(os.path.dirname(root),
                         os.path.join(self.containers_dir("c1"), "backends", "fuse", "rootfses"))
        self.assertEqual(os.path.basename(root), a["id"])
        self.assertRegex(a["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        types = {e[0]: e[1] for e in mounts_below(self.containers_dir("c1"))}
        self.assertEqual(types.get(root), "overlay", "the rootfs is an overlay: %r" % types)
        self.assertIn("fuse.ucrfs", types.values(), "over a FUSE mount: %r" % types)
        # Upper layer wins; both layers' directories are there.
        with open(os.path.join(root, "file")) as f:
            self.assertEqual(f.read(), "test2")
        self.assertTrue(os.path.isfile(os.path.join(root, "dir1", "1")))
        self.assertTrue(os.path.isfile(os.path.join(root, "dir2", "2")))
        self.assertEqual(a["config"]["kind"], "docker")
        # Writable; the writes go to scratch, not to the image.
        with open(os.path.join(root, "file"), "w") as f:
            f.write("changed")
        os.unlink(os.path.join(root, "dir1", "1"))
        with open(os.path.join(root, "new"), "w") as f:
            f.write("new")
        upper = os.path.join(self.containers_dir("c1"), "backends", "fuse", "scratch", a["id"], "upper")
        self.assertTrue(os.path.isfile(os.path.join(upper, "new")), "writes land in the scratch upper dir")
        b = self.provision("c2", self.image)
        with open(os.path.join(b["rootfs"], "file")) as f:
            self.assertEqual(f.read(), "test2", "a second rootfs sees the image, not c1's write")
        self.assertFalse(os.path.exists(os.path.join(b["rootfs"], "new")))
        self.assertTrue(os.path.exists(os.path.join(b["rootfs"], "dir1", "1")))
        self.assertDestroyed("c1")
        self.assertDestroyed("c2")

    def test_read_only_fuse_rootfs(self):
        a = self.provision("ro", self.image, "--read-only")
        self.assertFalse(a["writable"])
        types = {e[0]: e[1] for e in mounts_below(self.containers_dir("ro"))}
        self.assertEqual(types, {a["rootfs"]: "fuse.ucrfs"})
        with self.assertRaises(OSError):
            open(os.path.join(a["rootfs"], "new"), "w")
        self.assertDestroyed("ro")

    def test_several_rootfses_per_container_then_destroy(self):
        made = [self.provision("multi", self.image, "--backend", b) for b in ("fuse", "overlay", "copy")]
        self.assertEqual(len({m["rootfs"] for m in made}), 3)
        for m in made:
            with open(os.path.join(m["rootfs"], "file")) as f:
                self.assertEqual(f.read(), "test2", m["backend"])
        res = self.ucrfs("containers", "--json", flags=self.flags())
        self.assertSucceeded(res)
        listed = json.loads(res.stdout)
        self.assertEqual([c["container"] for c in listed], ["multi"])
        self.assertEqual(sorted(r["rootfs"] for r in listed[0]["rootfses"]), sorted(m["rootfs"] for m in made))
        self.assertDestroyed("multi")
        res = self.ucrfs("destroy", "multi", flags=self.flags())
        self.assertSucceeded(res)  # an unknown container is not an error

    def test_destroy_with_an_open_file(self):
        a = self.provision("busy", self.image)
        held = open(os.path.join(a["rootfs"], "dir2", "2"))
        cwd = subprocess.Popen(["sleep", "60"], cwd=a["rootfs"])
        try:
            self.assertDestroyed("busy")
        finally:
            held.close()
            cwd.kill()
            cwd.wait()

    def test_recover_live_keeps_and_restores_destroys_the_rest(self):
        live = self.provision("live", self.image)
        self.provision("gone", self.image, "--backend", "copy")
        root = live["rootfs"]
        with open(os.path.join(root, "kept"), "w") as f:
            f.write("kept")
        servers = recorded_servers(self.containers_dir("live"))
        self.assertEqual(len(servers), 1, "one FUSE server for the live rootfs: %r" % servers)
        os.kill(servers[0], signal.SIGKILL)
        wait_for(lambda: not ucrfs_processes_naming(self.containers_dir("live")), 10)
        res = self.ucrfs("recover", "--live", "live", flags=self.flags(), timeout=120)
        self.assertSucceeded(res)
        self.assertFalse(os.path.exists(self.containers_dir("gone")), "a container not live is destroyed")
        with open(os.path.join(root, "file")) as f:
            self.assertEqual(f.read(), "test2", "the live rootfs serves the image again")
        with open(os.path.join(root, "kept")) as f:
            self.assertEqual(f.read(), "kept", "its writes survive")
        self.assertEqual(len(recorded_servers(self.containers_dir("live"))), 1, "one server serves it again")
        self.assertDestroyed("live")

    def test_bad_input(self):
        res = self.ucrfs("provision", "../escape", self.image, flags=self.flags())
        self.assertFailedOneLine(res, r"container id '\.\./escape'")
        self.assertFalse(os.path.exists(os.path.join(self.work, "provisioner", "escape")))
        res = self.ucrfs("provision", "c", "oci:%s:nosuchtag" % self.layout, flags=self.flags())
        self.assertFailedOneLine(res, r"nosuchtag")
        self.assertEqual(os.listdir(self.containers_dir()), [], "nothing left of a failed provision")
        res = self.ucrfs("provision", "--backend", "zfs", "c", self.image, flags=self.flags())
        self.assertFailedOneLine(res, r"zfs")


class ConcurrentProvisionTest(ProvisionerCase):
    """Mesos' ProvisionerDockerTest.ROOT_INTERNET_CURL_ConcurrentProvision...:
    one image, several containers at once, fetched once."""

    def test_concurrent_provisions_fetch_once(self):
        reg = FakeRegistry()
        reg.start()
        self.addCleanup(reg.stop)
        im = I.simple_image("concurrent", nlayers=2)
        reg.add_image("conc/img", im, "v1")
        ref = "%s/conc/img:v1" % reg.addr
        first_layer = im.layers[0].desc.digest
        reg.faults["hold_below"][first_layer] = 1 << 40  # every GET of it waits
        procs = [self.ucrfs_popen("provision", "c%d" % i, ref, flags=self.flags()) for i in range(4)]
        # All four are running and one of them is fetching (held) the layer.
        self.assertTrue(wait_for(lambda: reg.held, 60), "no layer GET arrived")
        time.sleep(1.5)
        self.assertEqual(all(p.poll() is None for p in procs), True, "a provision ended early")
        held = list(reg.held)
        reg.hold_release.set()
        results = [self.wait_popen(p, 300) for p in procs]
        for r in results:
            self.assertSucceeded(r)
        self.assertEqual(len(held), 1, "while one provision fetched the layer, others fetched it too: %r" % held)
        for d in im.blobs():
            gets = reg.requests_for(reg.blob_path("conc/img", d), method="GET")
            self.assertEqual(len(gets), 1, "blob %s fetched %d times by 4 provisions" % (d, len(gets)))
        for i in range(4):
            root = results[i].stdout.strip()
            self.assertTrue(os.path.isdir(root), root)
            self.assertEqual(mounts_below(root)[0][1], "overlay")
        for i in range(4):
            self.assertDestroyed("c%d" % i)
