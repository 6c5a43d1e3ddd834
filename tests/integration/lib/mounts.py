"""FUSE mounts in tests: mountinfo, the server processes behind a mountpoint,
and a test base class that mounts with `ucrfs mount` and always cleans up
(`ucrfs umount`, then `umount -l`, then SIGKILL to leftover servers).

Mount tests need root and /dev/fuse (and the oracle needs umoci): without
them the class is skipped with the reason, which run.py turns into exit 77.
"""
import os
import signal
import subprocess
import time
import unittest

from .util import UcrfsTestCase, which


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out = bytearray()
    i = 0
    b = field.encode("utf-8", "surrogateescape") if isinstance(field, str) else field
    while i < len(b):
        if b[i] == 0x5C and i + 3 < len(b) + 1 and b[i + 1:i + 4].isdigit():
            out.append(int(b[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return os.fsdecode(bytes(out))


def mountinfo():
    """[(mountpoint, fstype, source, options)] from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            parts = line.rstrip(b"\n").split(b" ")
            sep = parts.index(b"-")
            out.append((_unescape(parts[4]), parts[sep + 1].decode(), _unescape(parts[sep + 2]),
                        parts[5].decode()))
    return out


def mount_entry(mp):
    """The last (topmost) mountinfo entry for mp, or None."""
    mp = os.path.realpath(mp)
    found = None
    for e in mountinfo():
        if e[0] == mp:
            found = e
    return found


def is_mounted(mp):
    return mount_entry(mp) is not None


def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _state(pid):
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def server_pids(mp):
    """Live (not zombie) processes whose argv names the mountpoint (the
    ucrfs server is forked from `ucrfs mount ... MP` and keeps its argv)."""
    keys = {os.fsencode(mp), os.fsencode(os.path.realpath(mp))}
    me = os.getpid()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        argv = _cmdline(d)
        if any(a in keys for a in argv) and _state(d) not in (None, "Z", "X"):
            pids.append(int(d))
    return pids


def keeper_pids(mp):
    """Live keepers of the mount at mp: `ucrfs fuse-keeper --mountpoint=MP`,
    which the server starts to hold the mount's connection (fusefs/keeper.h).
    Their argv does not name MP as a word, so server_pids() leaves them out."""
    keys = {b"--mountpoint=" + os.fsencode(mp), b"--mountpoint=" + os.fsencode(os.path.realpath(mp))}
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        argv = _cmdline(d)
        if b"fuse-keeper" in argv and any(a in keys for a in argv) and _state(d) not in (None, "Z", "X"):
            pids.append(int(d))
    return pids


def record_pids(mp):
    """(server pid, keeper pid) from the mount's record in /run/ucrfs/mounts
    (mount_cmds.cc), or None when there is no record."""
    import hashlib
    rec = os.path.join("/run/ucrfs/mounts", hashlib.sha256(os.fsencode(os.path.realpath(mp))).hexdigest())
    try:
        with open(rec) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    return int(lines[0]), (int(lines[3]) if len(lines) > 3 and lines[3] else 0)


def wait_for(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def force_unmount(mp):
    """Lazy unmount, then SIGKILL whatever still serves mp; bounded."""
    for cmd in (["umount", "-l", mp], ["fusermount3", "-u", "-z", mp]):
        if not is_mounted(mp):
            break
        try:
            subprocess.run(cmd, capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            pass
    for pid in server_pids(mp) + keeper_pids(mp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not server_pids(mp) and not keeper_pids(mp), 5)


def fuse_skip_reason(tools=()):
    if os.geteuid() != 0:
        return "mount tests need root"
    if not os.path.exists("/dev/fuse"):
        return "mount tests need /dev/fuse"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return "cannot open /dev/fuse: %s" % e
    missing = [t for t in tools if not which(t)]
    if missing:
        return "%s not installed" % ", ".join(missing)
    return None


class MountTestCase(UcrfsTestCase):
    """UcrfsTestCase + mount helpers. Every mount made through `mount()` (or
    registered with `track_mount()`) is unmounted in cleanup, whatever the
    test did."""

    mount_tools = ()

    @classmethod
    def setUpClass(cls):
        reason = fuse_skip_reason(cls.mount_tools)
        if reason:
            raise unittest.SkipTest(reason)
        super().setUpClass()

    def mountpoint(self, name="mnt"):
        p = self.path(name)
        os.makedirs(p, exist_ok=True)
        return p

    def track_mount(self, mp, store=None):
        self.addCleanup(self.cleanup_mount, mp, store)

    def cleanup_mount(self, mp, store=None):
        if is_mounted(mp):
            try:
                self.ucrfs("umount", mp, store=store, timeout=30)
            except AssertionError:
                pass
        force_unmount(mp)

    def mount(self, image, mp=None, store=None, flags=(), timeout=300, check=True, mount_args=()):
        """`ucrfs [flags] mount [mount_args] IMAGE MP`; with check, asserts exit
        0 and a fuse.ucrfs mount at MP. Returns (result, mountpoint)."""
        mp = mp or self.mountpoint()
        self.track_mount(mp, store)
        res = self.ucrfs("mount", *mount_args, image, mp, store=store, flags=flags, timeout=timeout)
        if check:
            self.assertSucceeded(res)
            self.assertMounted(mp, res)
        return res, mp

    def umount(self, mp, store=None):
        pids = server_pids(mp)
        self.assertTrue(pids, "no server process found for %s while mounted (its argv should "
                              "name the mountpoint), so the no-leftover check would be vacuous" % mp)
        pids += keeper_pids(mp)
        res = self.ucrfs("umount", mp, store=store, timeout=60)
        self.assertSucceeded(res)
        self.assertNotMounted(mp)
        left = [p for p in pids if _state(p) not in (None, "Z", "X")] + server_pids(mp) + keeper_pids(mp)
        self.assertEqual(sorted(set(left)), [], "server or keeper processes left after `ucrfs umount %s`" % mp)
        return res

    def read_in_mount(self, mp, rel):
        """The content of MP/rel; an OSError becomes a failure naming the path."""
        p = os.path.join(mp, rel)
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError as e:
            self.fail("reading %s in the mount: %r" % (rel, e))

    def assertMounted(self, mp, res=None):
        e = mount_entry(mp)
        extra = ("\n" + res.describe()) if res is not None else ""
        self.assertIsNotNone(e, "%s is not a mount point%s" % (mp, extra))
        self.assertEqual(e[1], "fuse.ucrfs", "fstype of %s%s" % (mp, extra))
        self.assertIn("ro", e[3].split(","), "mount options of %s: %s" % (mp, e[3]))

    def assertNotMounted(self, mp):
        self.assertFalse(is_mounted(mp), "%s is still in /proc/self/mountinfo" % mp)

    def assertNothingMounted(self, mp):
        """Not a mount, still an empty directory, no server for it."""
        self.assertNotMounted(mp)
        self.assertTrue(os.path.isdir(mp), "%s vanished" % mp)
        self.assertEqual(os.listdir(mp), [], "%s is not empty" % mp)
        self.assertEqual(server_pids(mp), [], "a server process for %s is running" % mp)
