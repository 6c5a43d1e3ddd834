"""`ucrfs run` and `ucrfs bundle`: real processes in real namespaces, from a
busybox-static image pushed to the test registry (Debian's docker-registry),
and Mesos' isolator tests as the list (reference/mesos-provisioner.md §6.8-6.10):

- runtime_isolator_tests: the default Cmd row (Cmd ["sh"], argv -c ...) and
  the default Entrypoint row (Entrypoint ["echo"], argv "hello world");
- linux_filesystem_isolator_tests: host directories invisible, pseudo devices
  usable, masked paths, MESOS_SANDBOX, host volumes rw and ro;
- volume_image_isolator_tests: an image volume with and without a container
  image, read-only image volumes;
- exit status 0, 3 and 137 (SIGKILL) passes through, SIGTERM is forwarded;
- the image's user from its /etc/passwd with supplementary groups;
- no mount, process or scratch left after a run; a SIGKILLed `ucrfs run`
  cleaned by `ucrfs recover`;
- `ucrfs bundle`: Debian's crun and runc run the bundle unchanged (the
  image's command, overrides, exit status, a writable rootfs whose writes do
  not reach the image), and `ucrfs umount DIR/rootfs` leaves nothing.
"""
import io
import os
import signal
import stat
import subprocess
import tarfile
import time
import unittest

from lib import images as I
from lib.mounts import MountTestCase, mountinfo, wait_for
from lib.registry import Pusher, RealRegistry
from lib.util import which

BUSYBOX = "/bin/busybox"
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = (b"root:x:0:\nadm:x:4:alice\nalice:x:1000:\nvideo:x:44:bob,alice\n"
         b"nogroup:x:65534:\n")


def busybox_layer_tar(extra=()):
    """A layer with busybox-static, every applet linked in /bin, /etc/passwd
    and /etc/group, /tmp; `extra`: more (name, bytes) files."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, typ=tarfile.DIRTYPE, mode=0o755, data=b"", link=""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = typ, mode, 1700000000, link
            ti.size = len(data) if typ == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
        for d in ("bin", "etc", "home", "root"):
            add(d)
        add("tmp", mode=0o1777)
        add("home/alice", mode=0o755)
        with open(BUSYBOX, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for a in applets:
            a = a.decode()
            if a != "busybox":
                add("bin/" + a, tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD)
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP)
        for name, data in extra:
            add(name, tarfile.REGTYPE, 0o644, data)
    return buf.getvalue()


def image(runtime, extra=()):
    layer = I.Layer.__new__(I.Layer)  # a Layer from a ready-made tar
    layer.tar = busybox_layer_tar(extra)
    layer.diff_id = I.sha256_digest(layer.tar)
    layer.kind = "gzip"
    layer.desc = I.Descriptor(I.OCI_LAYER_GZIP, I.compress(layer.tar, "gzip"))
    rt = {"Env": ["PATH=/bin", "IMAGE_ENV=from-image"]}
    rt.update(runtime)
    return I.Image([layer], runtime=rt)


def container_mounts():
    """mountinfo entries of this (host) namespace that a container could
    have left: anything under a work dir or named sandbox."""
    return [m for m in mountinfo() if "/work/" in m[0] or "sandbox" in m[0]]


class RunCase(MountTestCase):
    required_tools = ("docker-registry",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(BUSYBOX):
            raise unittest.SkipTest("busybox-static not installed")
        cls.reg = RealRegistry(cls.class_tmp)
        cls.reg.start()
        cls.addClassCleanup(cls.reg.stop)
        pusher = Pusher(cls.reg.url)
        cls.images = {
            "cmd": image({"Cmd": ["sh"]}),
            "entry": image({"Entrypoint": ["echo"]}),
            "user": image({"Cmd": ["id"], "User": "alice"}),
            "vol": image({"Cmd": ["sh"]}, extra=[("etc/volume-image", b"from the volume image\n")]),
            "bundle": image({"Cmd": ["sh", "-c", "echo hello from $IMAGE_ENV; exit 3"]}),
        }
        for tag, im in cls.images.items():
            pusher.push_image("test/run", im, tag)
        cls.shared_store = os.path.join(cls.class_tmp, "store")
        # The same tree as a plain directory, for `run --rootfs`.
        cls.rootfs = os.path.join(cls.class_tmp, "rootfs")
        with tarfile.open(fileobj=io.BytesIO(busybox_layer_tar()), mode="r") as tf:
            tf.extractall(cls.rootfs, numeric_owner=True)

    def ref(self, tag):
        return "%s/test/run:%s" % (self.reg.addr, tag)

    def run_ucrfs(self, *args, timeout=180, flags=()):
        return self.ucrfs(*args, store=self.shared_store, timeout=timeout,
                          flags=("--work-dir", self.work) + tuple(flags))

    def setUp(self):
        super().setUp()
        self.work = self.path("work")
        os.makedirs(self.work, exist_ok=True)
        self.addCleanup(self.no_leftovers)

    def no_leftovers(self):
        left = [m for m in mountinfo() if m[0].startswith(self.work)]
        self.assertEqual(left, [], "mounts left under the work dir")
        cdir = os.path.join(self.work, "isolator", "containers")
        self.assertEqual(os.listdir(cdir) if os.path.isdir(cdir) else [], [], "container records left")
        pdir = os.path.join(self.work, "provisioner", "containers")
        self.assertEqual(os.listdir(pdir) if os.path.isdir(pdir) else [], [], "provisioner containers left")

    def run_in(self, tag, *args, flags=(), timeout=180):
        return self.run_ucrfs("run", *flags, self.ref(tag), "--", *args, timeout=timeout)

    def run_sh(self, script, *flags, timeout=60):
        """`ucrfs run --rootfs ROOTFS FLAGS -- /bin/sh -c SCRIPT`."""
        return self.run_ucrfs("run", "--rootfs", self.rootfs, *flags, "--", "/bin/sh", "-c", script,
                              timeout=timeout)

    def pids_in_work(self):
        """Processes whose argv names the work dir (FUSE servers of its rootfses)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if self.work.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
        return out

    def assertExit(self, res, code):
        self.assertEqual(res.returncode, code, res.describe() if hasattr(res, "describe") else res.stderr)


class LauncherTest(RunCase):
    """The launcher in an existing rootfs directory (`run --rootfs`)."""

    def test_exit_status_passes_through(self):
        self.assertExit(self.run_sh("exit 0"), 0)
        self.assertExit(self.run_sh("exit 3"), 3)
        self.assertExit(self.run_sh("kill -9 $$"), 137)

    def test_missing_executable_is_127_and_one_line(self):
        res = self.run_ucrfs("run", "--rootfs", self.rootfs, "--", "no-such-tool")
        self.assertExit(res, 127)
        self.assertRegex(res.stderr.strip(), r"^ucrfs: error: exec no-such-tool: .*not found")

    def test_unknown_user_is_one_line_before_anything_runs(self):
        res = self.run_sh("true", "--user", "mallory")
        self.assertEqual(res.returncode, 125, res.describe())
        self.assertEqual(len(res.stderr.strip().splitlines()), 1, res.describe())
        self.assertIn('"mallory"', res.stderr)

    def test_user_from_rootfs_passwd(self):
        res = self.run_sh("id", "--user", "alice")
        self.assertExit(res, 0)
        out = res.stdout.strip()
        self.assertTrue(out.startswith("uid=1000(alice) gid=1000(alice)"), out)
        self.assertIn("4(adm)", out)
        self.assertIn("44(video)", out)
        res = self.run_sh('id -u; id -g; id -G; echo $HOME; touch $MESOS_SANDBOX/f && stat -c %u $MESOS_SANDBOX/f',
                          "--user", "65534:44")
        self.assertExit(res, 0)
        self.assertEqual(res.stdout.split(), ["65534", "44", "44", "/nonexistent", "65534"])


class FilesystemTest(RunCase):
    def test_host_directories_invisible(self):
        res = self.run_sh("[ ! -d '%s' ] && [ ! -e '%s' ]" % (self.tmp, self.bin))
        self.assertExit(res, 0)

    def test_pseudo_devices(self):
        script = ("for d in zero random urandom full; do dd if=/dev/$d of=/dev/null bs=1k count=1 "
                  "2>/dev/null || exit 1; done; "
                  "echo x > /dev/full && exit 2; "
                  "[ -L /dev/fd ] && [ -L /dev/stdin ] && [ -L /dev/ptmx ] && [ -c /dev/tty ] || exit 3; "
                  "[ -c /dev/pts/ptmx ] || exit 4; "
                  "echo shm > /dev/shm/x && [ \"$(cat /dev/shm/x)\" = shm ] || exit 5; "
                  "grep -q ' /sys sysfs ro,' /proc/mounts || exit 6; "
                  "[ \"$(cat /proc/1/cmdline | tr '\\0' ' ')\" != '' ] || exit 7")
        res = self.run_sh(script)
        self.assertExit(res, 0)

    def test_masked_paths(self):
        script = ("[ -c /proc/keys ] || exit 1; [ -z \"$(cat /proc/keys)\" ] || exit 2; "
                  "[ ! -e /proc/scsi/scsi ] || exit 3; mkdir /proc/scsi/foo 2>/dev/null && exit 4; "
                  "echo x > /proc/keys; [ -z \"$(cat /proc/keys)\" ] || exit 5; "
                  "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && exit 6; "
                  "[ -z \"$(ls /sys/firmware)\" ] || exit 7; exit 0")
        res = self.run_sh(script)
        self.assertExit(res, 0)

    def test_mesos_sandbox(self):
        sb = self.path("mysandbox")
        os.makedirs(sb)
        res = self.run_sh('[ "$MESOS_SANDBOX" = /mnt/mesos/sandbox ] && [ -d "$MESOS_SANDBOX" ] && '
                          '[ "$(pwd)" = "$MESOS_SANDBOX" ] && echo abc > file', "--sandbox", sb)
        self.assertExit(res, 0)
        with open(os.path.join(sb, "file")) as f:
            self.assertEqual(f.read(), "abc\n")
        res = self.run_ucrfs("run", "--rootfs", self.rootfs, "--", "/bin/sh", "-c",
                             '[ "$MESOS_SANDBOX" = /sb ] && [ "$(pwd)" = /sb ]', flags=("--sandbox-directory", "/sb"))
        self.assertExit(res, 0)

    def test_host_volume_rw_and_ro(self):
        vol = self.path("vol")
        os.makedirs(vol)
        res = self.run_sh("echo abc > volume/file && [ \"$(cat /ro/file)\" = abc ] && "
                          "! echo x > /ro/other 2>/dev/null", "--volume", vol + ":volume", "--volume", vol + ":/ro:ro")
        self.assertExit(res, 0)
        with open(os.path.join(vol, "file")) as f:
            self.assertEqual(f.read(), "abc\n")
        self.assertFalse(os.path.exists(os.path.join(vol, "other")))

    def test_tmpfs_mount(self):
        res = self.run_sh("grep -q ' /scratch tmpfs ' /proc/mounts && echo x > /scratch/y",
                          "--mount", "type=tmpfs,dst=/scratch")
        self.assertExit(res, 0)

class RuntimeRowsTest(RunCase):
    def test_default_cmd_row(self):
        # Cmd ["sh"] + argv ["-c", "echo 'hello world'"] -> sh -c ...
        res = self.run_in("cmd", "-c", "echo 'hello world'; echo $IMAGE_ENV")
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "hello world\nfrom-image\n")

    def test_default_entrypoint_row(self):
        res = self.run_in("entry", "hello world")
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "hello world\n")

    def test_shell_env_and_ignore_runtime(self):
        res = self.run_ucrfs("run", "--env", "IMAGE_ENV=flag", "--shell", "echo $IMAGE_ENV; pwd",
                             self.ref("cmd"))
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "flag\n/mnt/mesos/sandbox\n")
        res = self.run_ucrfs("run", "--docker-ignore-runtime", self.ref("cmd"), "--", "/bin/sh", "-c",
                             'test -z "$IMAGE_ENV"')
        self.assertExit(res, 0)

    def test_user_from_image_passwd(self):
        res = self.run_ucrfs("run", self.ref("user"))
        self.assertExit(res, 0)
        out = res.stdout.strip()
        self.assertTrue(out.startswith("uid=1000(alice) gid=1000(alice)"), out)
        self.assertIn("4(adm)", out)
        self.assertIn("44(video)", out)
        res = self.run_ucrfs("run", "--user", "65534:44", self.ref("cmd"), "--", "-c",
                             'id -u; id -g; id -G; echo $HOME; touch $MESOS_SANDBOX/f && stat -c %u $MESOS_SANDBOX/f')
        self.assertExit(res, 0)
        self.assertEqual(res.stdout.split(), ["65534", "44", "44", "/nonexistent", "65534"])

    def test_rootfs_writable_but_image_unchanged(self):
        self.assertExit(self.run_in("cmd", "-c", "echo changed > /etc/passwd"), 0)
        self.assertExit(self.run_in("cmd", "-c", "grep -q alice /etc/passwd"), 0)


class ImageVolumeTest(RunCase):
    def test_image_volume_with_container_image(self):
        res = self.run_ucrfs("run", "--mount", "type=image,src=%s,dst=rootfs" % self.ref("vol"),
                             self.ref("cmd"), "--", "-c",
                             "[ ! -d '%s' ] && [ -d rootfs/bin ] && cat rootfs/etc/volume-image && "
                             "[ ! -e /etc/volume-image ]" % self.tmp)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "from the volume image\n")

    def test_read_only_image_volume(self):
        res = self.run_ucrfs("run", "--mount", "type=image,src=%s,dst=rootfs,readonly" % self.ref("vol"),
                             self.ref("cmd"), "--", "-c", "echo abc > rootfs/file")
        self.assertNotEqual(res.returncode, 0, res.describe())
        self.assertIn("Read-only", res.stderr)


    def test_image_volume_without_container_image(self):
        """Mesos' VolumeImageIsolatorTest without a container image: the
        process runs on the host's filesystem (in its own mount and PID
        namespaces), the image is mounted under the sandbox (a relative
        target) and at an existing host path; neither mount is seen by the
        host, and an executor can chroot into the volume, as the seed's
        recipe does."""
        host_dir = self.path("host-target")
        os.makedirs(host_dir)
        res = self.run_ucrfs(
            "run", "--no-image",
            "--mount", "type=image,src=%s,dst=rootfs" % self.ref("vol"),
            "--mount", "type=image,src=%s,dst=%s,readonly" % (self.ref("vol"), host_dir),
            "--", BUSYBOX, "sh", "-c",
            'cd "$MESOS_SANDBOX" && [ "$(pwd)" = "$MESOS_SANDBOX" ] && cat rootfs/etc/volume-image && '
            'cat %s/etc/volume-image && [ -e %s ] && '
            '! touch %s/x 2>/dev/null && echo pid=$$ && '
            'chroot rootfs /bin/sh -c "cat /etc/volume-image"' % (host_dir, BUSYBOX, host_dir))
        self.assertExit(res, 0)
        # pid 2: the command, forked by the namespace's init (pid 1).
        self.assertEqual(res.stdout, "from the volume image\n" * 2 + "pid=2\n" + "from the volume image\n")
        self.assertEqual(os.listdir(host_dir), [], "the volume was mounted in the container's namespace only")

    def test_no_image_refuses_a_missing_absolute_target(self):
        res = self.run_ucrfs("run", "--no-image", "--mount",
                             "type=image,src=%s,dst=/nonexistent/ucrfs/target" % self.ref("vol"),
                             "--", BUSYBOX, "true")
        self.assertExit(res, 125)
        self.assertIn("/nonexistent/ucrfs/target does not exist", res.stderr)


class LifecycleTest(RunCase):
    def test_sigterm_is_forwarded(self):
        p = subprocess.Popen([self.bin, "--store", self.shared_store, "--work-dir", self.work, "run",
                              "--rootfs", self.rootfs, "--", "/bin/sh", "-c",
                              "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        line = p.stdout.readline()
        self.assertEqual(line, b"ready\n", p.stderr.read1() if p.poll() is not None else "")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 7, err)
        self.assertEqual(out, b"got TERM\n")

    def test_nothing_left_after_run(self):
        before = set(mountinfo())
        res = self.run_sh("sleep 0.2 & echo started")
        self.assertExit(res, 0)
        after = set(mountinfo())
        self.assertEqual(sorted(after - before), [], "mounts added by the run")
        self.assertEqual([p for p in self.pids_in_work()], [], "processes left")

    def test_sigkilled_run_is_cleaned_by_recover(self):
        marker = self.path("marker")
        p = subprocess.Popen([self.bin, "--store", self.shared_store, "--work-dir", self.work, "run",
                              self.ref("cmd"), "--", "-c", "echo ready; sleep 1000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.assertEqual(p.stdout.readline(), b"ready\n")
        recs = os.listdir(os.path.join(self.work, "isolator", "containers"))
        self.assertEqual(len(recs), 1)
        import json
        with open(os.path.join(self.work, "isolator", "containers", recs[0], "container.json")) as f:
            init = json.load(f)["init_pid"]
        self.assertTrue(os.path.exists("/proc/%d" % init))
        rootfs_mounts = [m for m in mountinfo() if m[0].startswith(self.work)]
        self.assertNotEqual(rootfs_mounts, [], "the rootfs is not mounted under the work dir?")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        # The orphans still run, their rootfs still mounted.
        self.assertTrue(os.path.exists("/proc/%d" % init), "init died with ucrfs run: nothing to recover")
        res = self.run_ucrfs("recover")
        self.assertSucceeded(res)
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d/cmdline" % init) or
                                 open("/proc/%d/cmdline" % init, "rb").read() == b"", 10),
                        "the orphaned container still runs")
        del marker
        # no_leftovers (cleanup) checks mounts, records and provisioner dirs.


if __name__ == "__main__":
    unittest.main()


class BundleTest(RunCase):
    """`ucrfs bundle IMAGE DIR` run by Debian's OCI runtimes."""

    RUNTIMES = ("crun", "runc")

    def setUp(self):
        super().setUp()
        missing = [r for r in self.RUNTIMES if not which(r)]
        if missing:
            self.skipTest("%s not installed (apt-get install -y %s): the bundle is not run"
                          % (", ".join(missing), " ".join(missing)))

    def bundle(self, tag, *flags, args=None, name="bundle"):
        """`ucrfs bundle FLAGS IMAGE DIR [-- ARGS]`; returns DIR."""
        d = self.path(name)
        self.addCleanup(self.end_bundle, d)
        res = self.run_ucrfs("bundle", *flags, self.ref(tag), d, *(["--"] + list(args) if args is not None else []))
        self.assertExit(res, 0)
        return d

    def end_bundle(self, d):
        rootfs = os.path.join(d, "rootfs")
        if os.path.exists(os.path.join(d, "config.json")) or any(m[0] == rootfs for m in mountinfo()):
            self.run_ucrfs("umount", rootfs, timeout=60)
        while any(m[0] == rootfs for m in mountinfo()):
            subprocess.run(["umount", "-l", rootfs], capture_output=True)

    def oci(self, runtime, d, timeout=120):
        cid = "ucrfs-test-%d-%s" % (os.getpid(), runtime)
        self.addCleanup(subprocess.run, [runtime, "delete", "-f", cid], capture_output=True)
        run = lambda *pre: subprocess.run([*pre, runtime, "run", "--bundle", d, cid], capture_output=True,
                                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        p = run()
        if "cgroups in hybrid mode not supported" in p.stderr:
            # The host's cgroups, not the bundle: crun refuses a hybrid layout
            # whose cgroup2 has controllers. In a mount namespace of its own
            # without /sys/fs/cgroup/unified it sees cgroup v1 (the host's
            # mounts stay as they are).
            p = run("unshare", "-m", "--propagation", "private", "sh", "-c",
                    'umount -l /sys/fs/cgroup/unified && exec "$@"', "sh")
        subprocess.run([runtime, "delete", "-f", cid], capture_output=True)
        return p

    def config(self, d):
        import json
        with open(os.path.join(d, "config.json")) as f:
            return json.load(f)

    def test_runtimes_run_the_image_command_and_overrides(self):
        d = self.bundle("bundle")
        for rt in self.RUNTIMES:
            p = self.oci(rt, d)
            self.assertEqual((p.returncode, p.stdout), (3, "hello from from-image\n"), "%s: %s" % (rt, p.stderr))
        # Overrides: --env over the image's Env, --shell, --user.
        d2 = self.bundle("bundle", "--env", "IMAGE_ENV=flag", "--user", "alice", "--shell",
                         'echo $IMAGE_ENV; id -u; id -G; pwd; [ "$MESOS_SANDBOX" = /mnt/mesos/sandbox ] && '
                         'touch $MESOS_SANDBOX/f && hostname', name="over")
        for rt in self.RUNTIMES:
            p = self.oci(rt, d2)
            self.assertEqual(p.returncode, 0, "%s: %s" % (rt, p.stderr))
            self.assertEqual(p.stdout.split("\n")[:4], ["flag", "1000", "1000 4 44", "/mnt/mesos/sandbox"],
                             rt)
            self.assertTrue(p.stdout.split("\n")[4].startswith("bundle-"), p.stdout)
        self.assertEqual(os.stat(os.path.join(d2, "sandbox", "f")).st_uid, 1000)
        # Arguments after -- replace Cmd[1..]; --docker-ignore-runtime drops Env.
        d3 = self.bundle("bundle", "--docker-ignore-runtime", name="args",
                         args=["/bin/sh", "-c", 'echo "args [$IMAGE_ENV]"; exit 3'])
        self.assertEqual(self.config(d3)["process"]["args"], ["/bin/sh", "-c", 'echo "args [$IMAGE_ENV]"; exit 3'])
        for rt in self.RUNTIMES:
            p = self.oci(rt, d3)
            self.assertEqual((p.returncode, p.stdout), (3, "args []\n"), "%s: %s" % (rt, p.stderr))

    def test_rootfs_writable_but_image_unchanged(self):
        d = self.bundle("cmd", args=["-c", "echo changed >> /etc/passwd; grep -c changed /etc/passwd"])
        self.assertEqual(self.config(d)["root"], {"path": "rootfs", "readonly": False})
        p = self.oci("crun", d)
        self.assertEqual((p.returncode, p.stdout), (0, "1\n"), p.stderr)
        # The write is the bundle's (runc sees it) ...
        p = self.oci("runc", d)
        self.assertEqual(p.stdout, "2\n", p.stderr)
        self.assertExit(self.run_ucrfs("umount", os.path.join(d, "rootfs")), 0)
        # ... not the image's.
        d = self.bundle("cmd", args=["-c", "tail -n 1 /etc/passwd"], name="again")
        p = self.oci("crun", d)
        self.assertEqual(p.stdout, "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", p.stderr)

    def test_read_only_bundle(self):
        d = self.bundle("cmd", "--read-only", args=["-c", "echo x > /etc/new"])
        self.assertEqual(self.config(d)["root"], {"path": "rootfs", "readonly": True})
        p = self.oci("crun", d)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("Read-only", p.stderr)

    def test_umount_leaves_nothing_and_refuses_a_second_bundle(self):
        before = set(mountinfo())
        d = self.bundle("cmd", args=["-c", "exit 0"])
        rootfs = os.path.join(d, "rootfs")
        self.assertTrue(any(m[0] == rootfs for m in mountinfo()))
        servers = self.pids_in_work()
        self.assertTrue(servers, "no FUSE server found for the bundle (the check below would be vacuous)")
        res = self.run_ucrfs("bundle", self.ref("cmd"), d)
        self.assertEqual(res.returncode, 1, res.describe())
        self.assertEqual(len(res.stderr.strip().splitlines()), 1, res.describe())
        self.assertIn("already holds a bundle", res.stderr)
        self.assertExit(self.oci("runc", d), 0)
        self.assertExit(self.run_ucrfs("umount", rootfs), 0)
        self.assertEqual(sorted(set(mountinfo()) - before), [], "mounts left by the bundle")
        self.assertTrue(wait_for(lambda: not self.pids_in_work(), 10), "FUSE server left")
        self.assertFalse(os.path.exists(os.path.join(d, "config.json")))
        self.assertFalse(os.path.exists(rootfs))
        # The directory is free for a new bundle.
        self.bundle("cmd", args=["-c", "exit 0"])
