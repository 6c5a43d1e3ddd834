"""`ucrfs recover` resumes a mount whose server was killed, under the
processes using it (issue 5, part 3).

A FUSE mount's connection is held by the server and by a keeper process
(fusefs/keeper.h). Contract under test:
- SIGKILL of the server: the mount's requests wait (no ENOTCONN); a process
  chroot'ed into the mount, holding an open file there, blocks in a read
  and gets the right bytes once `ucrfs recover` ("resumed") started a
  server that adopted the connection; it then reads new files through its
  old root and open fd and lists directories, with no error;
- the records name the new server (run dir and store), the keeper is the
  same, `ucrfs stats` works, and `ucrfs umount` leaves no server, no
  keeper, no record and no keeper socket;
- a resumed mount can be resumed again;
- server and keeper both killed: the connection ends (ENOTCONN) and
  recover falls back to detaching and mounting again ("restarted").
"""
import errno
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

from lib import layers as L
from lib.mounts import MountTestCase, keeper_pids, record_pids, server_pids, wait_for
from lib.registry import Pusher, RealRegistry

MiB = 1 << 20
RUN_DIR = "/run/ucrfs/mounts"

# Runs chroot'ed in the mount, like a container whose root it is. Answers one
# JSON command per line with {"ok": ...} or {"errno": N}.
_WORKER = r"""
import hashlib, json, os, sys
os.chroot(sys.argv[1])
os.chdir("/")
fd = os.open("big.bin", os.O_RDONLY)
first = os.pread(fd, 4096, 0)
print(json.dumps({"ok": hashlib.sha256(first).hexdigest()}), flush=True)
for line in sys.stdin:
    c = json.loads(line)
    try:
        if c["op"] == "read":
            with open(c["path"], "rb") as f:
                out = hashlib.sha256(f.read()).hexdigest()
        elif c["op"] == "pread":
            out = hashlib.sha256(os.pread(fd, c["len"], c["off"])).hexdigest()
        elif c["op"] == "ls":
            out = sorted(os.listdir(c["path"]))
        r = {"ok": out}
    except OSError as e:
        r = {"errno": e.errno, "msg": str(e)}
    print(json.dumps(r), flush=True)
"""


def rnd(seed, n):
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


class Worker:
    """A process chroot'ed into a mount, driven one command at a time."""

    def __init__(self, test, mp):
        self.t = test
        self.p = subprocess.Popen([sys.executable, "-c", _WORKER, mp], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        test.addCleanup(self.kill)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(30)

    def send(self, **cmd):
        self.p.stdin.write((json.dumps(cmd) + "\n").encode())
        self.p.stdin.flush()

    def answer(self, timeout):
        """The next answer, or None if none came within timeout seconds."""
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        line = self.p.stdout.readline()
        if not line:
            self.t.fail("the worker died: %r" % self.p.stderr.read()[-2000:])
        return json.loads(line)

    def ask(self, timeout=30, **cmd):
        self.send(**cmd)
        a = self.answer(timeout)
        self.t.assertIsNotNone(a, "no answer to %r within %ss" % (cmd, timeout))
        return a


class RecoverTest(MountTestCase):
    mount_tools = ("docker-registry",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.files = {"etc/who": b"R\n", "big.bin": rnd("big", 4 * MiB), "later/x": rnd("x", 300 * 1024),
                     "later/y": b"y\n"}
        cls.dir_names = ["f%02d" % i for i in range(20)]
        for n in cls.dir_names:
            cls.files["d/" + n] = n.encode()
        entries = [L.dir_("etc"), L.dir_("later"), L.dir_("d")] + [L.reg(k, v) for k, v in cls.files.items()]
        img = L.image_from_tars([L.make_layer_tar(entries)], "gzip")
        cls.registry = RealRegistry(os.path.join(cls.class_tmp, "registry"))
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start()
        Pusher(cls.registry.url).push_image("recover/img", img, "1")
        cls.image = "%s/recover/img:1" % cls.registry.addr

    def record_file(self, mp):
        return os.path.join(RUN_DIR, hashlib.sha256(os.fsencode(os.path.realpath(mp))).hexdigest())

    def store_records(self):
        d = os.path.join(self.store, "mounts")
        return [json.load(open(os.path.join(d, f))) for f in os.listdir(d)] if os.path.isdir(d) else []

    def kill_and_wait(self, pid):
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not alive(pid), 10), "pid %d survived SIGKILL" % pid)

    def recover(self, expect):
        res = self.ucrfs("recover", timeout=120)
        self.assertSucceeded(res)
        self.assertIn(expect, res.stdout, res.describe())
        return res

    def assertServes(self, w):
        """Reads and listings through the worker's old root and fd."""
        big = self.files["big.bin"]
        self.assertEqual(w.ask(op="pread", off=2 * MiB + 5, len=100000), {"ok": sha(big[2 * MiB + 5:2 * MiB + 100005])})
        self.assertEqual(w.ask(op="ls", path="d"), {"ok": self.dir_names})
        self.assertEqual(w.ask(op="ls", path="."), {"ok": ["big.bin", "d", "etc", "later"]})
        self.assertEqual(w.ask(op="read", path="d/f07"), {"ok": sha(b"f07")})
        self.assertEqual(w.ask(op="read", path="/etc/who"), {"ok": sha(b"R\n")})

    def assertGone(self, mp, pids):
        self.assertNotMounted(mp)
        self.assertTrue(wait_for(lambda: not any(alive(p) for p in pids), 10),
                        "processes left after umount: %r" % [p for p in pids if alive(p)])
        self.assertEqual(server_pids(mp) + keeper_pids(mp), [])
        for suffix in ("", ".keeper", ".stats", ".log", ".1.log"):
            self.assertFalse(os.path.exists(self.record_file(mp) + suffix),
                             "run record file %r left after umount" % suffix)
        self.assertEqual(self.store_records(), [], "store mount record left after umount")

    def test_killed_server_is_resumed_under_a_chrooted_process(self):
        _, mp = self.mount(self.image)
        server, keeper = record_pids(mp)
        self.assertEqual(server_pids(mp), [server])
        self.assertEqual(keeper_pids(mp), [keeper], "no keeper recorded for the mount")
        self.assertTrue(os.path.exists(self.record_file(mp) + ".keeper"))

        w = Worker(self, mp)
        self.assertEqual(w.answer(30), {"ok": sha(self.files["big.bin"][:4096])})
        self.kill_and_wait(server)
        self.assertTrue(alive(keeper), "the keeper died with the server")
        # No server: a read of a file never looked up waits (no ENOTCONN),
        # and completes once a server adopted the connection.
        w.send(op="read", path="later/x")
        self.assertIsNone(w.answer(1.5), "a read answered while no server runs")
        self.recover("resumed")
        self.assertEqual(w.answer(30), {"ok": sha(self.files["later/x"])}, "the waiting read after recover")
        self.assertServes(w)

        new, keeper2 = record_pids(mp)
        self.assertNotEqual(new, server)
        self.assertTrue(alive(new))
        self.assertEqual(keeper2, keeper, "the keeper changed")
        self.assertEqual([(r["mountpoint"], r["pid"]) for r in self.store_records()], [(os.path.realpath(mp), new)])
        self.assertIn("serving", self.recover("serving").stdout)
        stats = self.ucrfs("stats", "--json", mp)
        self.assertSucceeded(stats)
        self.assertIn("cacheHits", json.loads(stats.stdout))
        # The new server keeps the mount's stats file.
        self.assertTrue(wait_for(lambda: os.path.exists(self.record_file(mp) + ".stats"), 5))

        # A read through the fd opened before the first kill, while no server
        # runs, completes after a second resume.
        self.kill_and_wait(new)
        w.send(op="pread", off=3 * MiB + 17, len=200000)
        self.assertIsNone(w.answer(1.5), "a read answered while no server runs")
        self.recover("resumed")
        big = self.files["big.bin"]
        self.assertEqual(w.answer(30), {"ok": sha(big[3 * MiB + 17:3 * MiB + 200017])})
        self.assertEqual(w.ask(op="read", path="later/y"), {"ok": sha(b"y\n")})
        third, _ = record_pids(mp)

        w.kill()
        res = self.ucrfs("umount", mp, timeout=60)
        self.assertSucceeded(res)
        self.assertGone(mp, [server, new, third, keeper])

    def test_server_and_keeper_killed_falls_back_to_remount(self):
        _, mp = self.mount(self.image)
        server, keeper = record_pids(mp)
        self.kill_and_wait(keeper)
        self.kill_and_wait(server)
        with self.assertRaises(OSError) as cm:
            os.listdir(os.path.join(mp, "d"))
        # The connection ended: ENOTCONN, or ECONNABORTED for a request the
        # kernel had queued when the last /dev/fuse fd closed.
        self.assertIn(cm.exception.errno, (errno.ENOTCONN, errno.ECONNABORTED), cm.exception)
        self.recover("restarted")
        self.assertEqual(sorted(os.listdir(os.path.join(mp, "d"))), self.dir_names)
        self.assertEqual(self.read_in_mount(mp, "later/y"), b"y\n")
        new, keeper2 = record_pids(mp)
        self.assertTrue(alive(new) and alive(keeper2), (new, keeper2))
        self.assertEqual(keeper_pids(mp), [keeper2])
        res = self.ucrfs("umount", mp, timeout=60)
        self.assertSucceeded(res)
        self.assertGone(mp, [server, keeper, new, keeper2])


if __name__ == "__main__":
    import unittest
    unittest.main()
