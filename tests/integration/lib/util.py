"""Processes, ports, temp dirs, store snapshots and the ucrfs test base class.

Everything that starts a process registers its cleanup before returning, so a
failing test never leaves a server behind; every wait is bounded.
"""
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data):
    return "sha256:" + sha256_hex(data)


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def which(tool):
    return shutil.which(tool)


def host_arch():
    """The host's architecture in OCI terms (what an un-flagged pull selects)."""
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def other_arch():
    return "arm64" if host_arch() != "arm64" else "amd64"


def run(cmd, timeout=60, check=True, input=None, env=None, cwd=None):
    """Runs a command, bounded; returns CompletedProcess with text output."""
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                             env=env, cwd=cwd, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("command timed out after %ss: %s" % (timeout, cmd)) from e
    if check and res.returncode != 0:
        raise AssertionError("command failed (exit %d): %s\nstdout: %s\nstderr: %s" % (
            res.returncode, cmd, res.stdout.decode(errors="replace"),
            res.stderr.decode(errors="replace")))
    return res


# ---------------------------------------------------------------- processes

_LIVE = set()


def _kill_all_at_exit():
    for p in list(_LIVE):
        stop_process(p)


atexit.register(_kill_all_at_exit)


def start_process(cmd, log_path, env=None, cwd=None):
    """Starts a long-running server in its own process group, output to log_path."""
    log = open(log_path, "ab")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=env, cwd=cwd, start_new_session=True)
    finally:
        log.close()
    _LIVE.add(p)
    return p


def stop_process(p, grace=5.0):
    """TERM the process group, then KILL; bounded waits only."""
    if p.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    _LIVE.discard(p)


def wait_http(url, proc=None, timeout=15.0, ssl_context=None, log_path=None):
    """Waits until url answers any HTTP status (401 counts); bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2, context=ssl_context):
                return
        except urllib.error.HTTPError:
            return
        except Exception as e:  # connection refused, not yet listening
            last = e
            time.sleep(0.05)
    log = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            log = f.read()[-4000:]
    state = "exited with %s" % proc.returncode if proc is not None and proc.poll() is not None \
        else "not answering"
    raise AssertionError("server at %s %s (last error: %s)\nlog:\n%s" % (url, state, last, log))


# ---------------------------------------------------------------- store

def store_snapshot(store):
    """{relative path: sha256 of content} of the store's regular files,
    without index/lock.mdb (LMDB's reader table changes on every open)."""
    snap = {}
    if not os.path.isdir(store):
        return snap
    for root, _dirs, files in os.walk(store):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, store)
            if rel == os.path.join("index", "lock.mdb") or not os.path.isfile(full) \
                    or os.path.islink(full):
                continue
            with open(full, "rb") as f:
                snap[rel] = sha256_hex(f.read())
    return snap


def staging_files(store):
    d = os.path.join(store, "staging")
    out = []
    if os.path.isdir(d):
        for root, dirs, files in os.walk(d):
            out += [os.path.relpath(os.path.join(root, n), d) for n in files + dirs]
    return out


# ---------------------------------------------------------------- test base

class UcrfsResult:
    def __init__(self, args, proc, elapsed):
        self.args = args
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode(errors="replace")
        self.stderr = proc.stderr.decode(errors="replace")
        self.elapsed = elapsed

    def describe(self):
        return "ucrfs %s\n  exit: %s (%.1fs)\n  stdout: %r\n  stderr: %r" % (
            " ".join(self.args), self.returncode, self.elapsed, self.stdout[-3000:],
            self.stderr[-3000:])


def ucrfs_bin():
    b = os.environ.get("UCRFS_BIN")
    if not b:
        for cand in ("build/tools/ucrfs", "build/ucrfs"):
            c = os.path.join(REPO_ROOT, cand)
            if os.path.exists(c):
                b = c
                break
    return b


class UcrfsTestCase(unittest.TestCase):
    """Base class: a temp dir per test, a store per test, the ucrfs runner and
    assertions that match the CLI contract."""

    maxDiff = 8000
    required_tools = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        missing = [t for t in cls.required_tools if not which(t)]
        if missing:
            raise unittest.SkipTest("%s not installed" % ", ".join(missing))
        b = ucrfs_bin()
        if not b or not os.access(b, os.X_OK):
            # Not a skip: without the binary nothing is tested, which is a failure.
            raise AssertionError("ucrfs binary not found (set UCRFS_BIN; tried %r)" % b)
        cls.bin = os.path.abspath(b)
        cls.class_tmp = tempfile.mkdtemp(prefix="ucrfs-it-%s-" % cls.__name__)
        cls.addClassCleanup(shutil.rmtree, cls.class_tmp, True)

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="t-", dir=self.class_tmp)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.store = os.path.join(self.tmp, "store")

    def path(self, *parts):
        p = os.path.join(self.tmp, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def ucrfs(self, *args, store=None, flags=(), timeout=120):
        """Runs `ucrfs --store S FLAGS... ARGS...`."""
        argv = ["--store", store or self.store] + list(flags) + list(args)
        t0 = time.monotonic()
        try:
            p = subprocess.run([self.bin] + argv, capture_output=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired:
            self.fail("ucrfs %s did not finish within %ss" % (" ".join(argv), timeout))
        res = UcrfsResult(argv, p, time.monotonic() - t0)
        if os.environ.get("UCRFS_IT_TRACE"):
            print("\n  TRACE " + res.describe().replace("\n", "\n  TRACE "), flush=True)
        return res

    def ucrfs_popen(self, *args, store=None, flags=()):
        """Starts ucrfs in the background (killed in cleanup if still running)."""
        argv = ["--store", store or self.store] + list(flags) + list(args)
        p = subprocess.Popen([self.bin] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        _LIVE.add(p)
        self.addCleanup(stop_process, p, 2.0)
        return p

    def wait_popen(self, p, timeout=120):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(p, 2.0)
            self.fail("ucrfs %s did not finish within %ss" % (p.args, timeout))
        _LIVE.discard(p)
        p.stdout, p.stderr = out, err
        return UcrfsResult(p.args[1:], p, 0.0)

    # -- assertions

    def assertSucceeded(self, res):
        if res.returncode != 0:
            self.fail("expected success\n" + res.describe())

    def assertPulled(self, res, digest=None):
        """Exit 0 and exactly one stdout line: the image manifest digest."""
        self.assertSucceeded(res)
        lines = res.stdout.splitlines()
        self.assertEqual(len(lines), 1, "pull must print one line\n" + res.describe())
        self.assertRegex(lines[0].strip(), DIGEST_RE, res.describe())
        if digest is not None:
            self.assertEqual(lines[0].strip(), digest, "printed digest\n" + res.describe())
        return lines[0].strip()

    def assertFailedOneLine(self, res, pattern=None, secrets=()):
        """Exit > 0 (not a crash), stderr exactly one non-empty line that
        matches pattern (case-insensitive), nothing on stdout, no secret."""
        if res.returncode == 0:
            self.fail("expected failure\n" + res.describe())
        self.assertGreater(res.returncode, 0, "killed by a signal?\n" + res.describe())
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, "stderr must be exactly one line\n" + res.describe())
        self.assertEqual(res.stdout.strip(), "", "no stdout on failure\n" + res.describe())
        if pattern:
            self.assertRegex(lines[0], re.compile(pattern, re.I), res.describe())
        self.assertNoSecrets(res, secrets)
        return lines[0]

    def assertNoSecrets(self, res, secrets):
        for s in secrets:
            if s and (s in res.stdout or s in res.stderr):
                self.fail("secret %r leaked in output\n%s" % (s, res.describe()))

    def inspect(self, image, flags=(), store=None):
        res = self.ucrfs("inspect", "--json", image, flags=flags, store=store)
        self.assertSucceeded(res)
        try:
            return json.loads(res.stdout)
        except ValueError:
            self.fail("inspect --json printed no JSON\n" + res.describe())

    def assertBlobsInStore(self, blobs, store=None):
        """Every {digest: bytes} is in <store>/blobs/sha256/<hex> with that content."""
        store = store or self.store
        for digest, data in blobs.items():
            p = os.path.join(store, "blobs", "sha256", digest.split(":", 1)[1])
            self.assertTrue(os.path.isfile(p), "blob %s missing from store" % digest)
            with open(p, "rb") as f:
                got = f.read()
            self.assertEqual(len(got), len(data), "blob %s size" % digest)
            self.assertTrue(got == data, "blob %s content differs" % digest)

    def assertStagingEmpty(self, store=None):
        left = staging_files(store or self.store)
        self.assertEqual(left, [], "staging/ not emptied")

    def assertStoreUnchanged(self, before, store=None):
        after = store_snapshot(store or self.store)
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(k for k in before if k in after and before[k] != after[k])
        self.assertEqual((added, removed, changed), ([], [], []),
                         "store changed (added, removed, changed)")

    def assertLayers(self, info, layers):
        """inspect's layers equal [(digest, mediaType, size)] in order."""
        got = [(l.get("digest"), l.get("mediaType"), l.get("size")) for l in info.get("layers", [])]
        self.assertEqual(got, [(d.digest, d.media_type, d.size) for d in layers], "layers")

    def assertRuntimeConfig(self, info, cfg):
        """inspect's config shows the runtime keys of the image config."""
        got = info.get("config") or {}
        for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User"):
            self.assertEqual(got.get(key), cfg.get(key), "config.%s" % key)


def write_docker_config(path, auths):
    """auths: {"host:port": (user, password)} -> config.json with base64 auth."""
    import base64
    data = {"auths": {h: {"auth": base64.b64encode(("%s:%s" % up).encode()).decode()}
                      for h, up in auths.items()}}
    with open(path, "w") as f:
        json.dump(data, f)
    return path
