"""The startup benchmark's servers: Debian's docker-registry (filesystem
storage, access log kept so every byte it serves can be counted), optionally
run inside a network namespace reached through a veth pair shaped with
`tc tbf` in both directions. Standard library only."""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

# Combined log format, as docker-registry's access log writes it:
# HOST - - [DATE] "METHOD PATH PROTO" STATUS BYTES "REFERER" "AGENT"
ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sh(cmd, check=True, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p


def stop_group(proc, grace=5.0):
    """TERM then KILL the process group of a process this script started."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class Registry:
    """docker-registry serve, storage in `storage`, logs in `logdir`.
    host/port: where it listens; netns: run it inside that namespace."""

    def __init__(self, storage, logdir, host="127.0.0.1", port=None, netns=None):
        self.storage, self.logdir, self.host, self.netns = storage, logdir, host, netns
        self.port = port or free_port(host)
        self.proc = None
        self.access_log = os.path.join(logdir, f"registry-{self.host}-{self.port}.access.log")
        self.error_log = os.path.join(logdir, f"registry-{self.host}-{self.port}.log")

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def start(self, timeout=30):
        os.makedirs(self.storage, exist_ok=True)
        cfg = os.path.join(self.logdir, f"registry-{self.host}-{self.port}.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
                    f"http:\n  addr: {self.addr}\n  secret: ucrfs-bench-startup\n")
        cmd = ["docker-registry", "serve", cfg]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        with open(self.access_log, "ab") as out, open(self.error_log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.1)
        with open(self.error_log, errors="replace") as f:
            log = f.read()[-2000:]
        self.stop()
        raise RuntimeError(f"docker-registry on {self.addr} did not come up:\n{log}")

    def stop(self):
        stop_group(self.proc)
        self.proc = None

    def mark(self):
        """A point in the access log; served_since(mark) counts what came after."""
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def served_since(self, mark, settle=0.3):
        """(bytes, requests, blob GETs) the registry served since mark: the
        body bytes of every response, as its access log records them (a
        response is logged when it completes, or is cut off)."""
        time.sleep(settle)
        total = requests = blob_gets = 0
        with open(self.access_log, "rb") as f:
            f.seek(mark)
            for line in f.read().decode(errors="replace").splitlines():
                m = ACCESS_RE.match(line)
                if not m:
                    continue
                method, path, _status, size = m.groups()
                requests += 1
                if size != "-":
                    total += int(size)
                if method == "GET" and "/blobs/" in path:
                    blob_gets += 1
        return total, requests, blob_gets


class ShapedLink:
    """A network namespace and a veth pair into it, both ends shaped with
    `tc qdisc ... tbf rate RATE burst 32kbit latency 50ms`. Everything has
    names unique to this process and is removed by down(), which is safe to
    call more than once and after a partial up()."""

    def __init__(self, rate="100mbit"):
        tag = os.getpid() % 100000
        self.rate = rate
        self.netns = f"ucrfs-bench-{tag}"
        self.host_if = f"ucbh{tag}"    # IFNAMSIZ: at most 15 characters
        self.ns_if = f"ucbn{tag}"
        self.host_ip = self.ns_ip = None
        self.made_ns = self.made_link = False

    def _subnet(self):
        used = sh(["ip", "-o", "-4", "addr"]).stdout
        for i in range(os.getpid() % 200, os.getpid() % 200 + 250):
            net = f"10.213.{i % 250}."
            if net not in used:
                return net
        raise RuntimeError("no free 10.213.x.0/30 subnet")

    def up(self):
        net = self._subnet()
        self.host_ip, self.ns_ip = net + "1", net + "2"
        tbf = ["tbf", "rate", self.rate, "burst", "32kbit", "latency", "50ms"]
        sh(["ip", "netns", "add", self.netns])
        self.made_ns = True
        sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        self.made_link = True
        sh(["ip", "link", "set", self.ns_if, "netns", self.netns])
        sh(["ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if])
        sh(["ip", "link", "set", self.host_if, "up"])
        inns = ["ip", "netns", "exec", self.netns]
        sh(inns + ["ip", "addr", "add", self.ns_ip + "/30", "dev", self.ns_if])
        sh(inns + ["ip", "link", "set", self.ns_if, "up"])
        sh(inns + ["ip", "link", "set", "lo", "up"])
        sh(["tc", "qdisc", "add", "dev", self.host_if, "root"] + tbf)
        sh(inns + ["tc", "qdisc", "add", "dev", self.ns_if, "root"] + tbf)
        return self

    def down(self):
        errors = []
        if self.made_link:
            p = sh(["ip", "link", "del", self.host_if], check=False)  # takes its peer with it
            if p.returncode == 0 or "Cannot find device" in p.stderr:
                self.made_link = False
            else:
                errors.append(p.stderr.strip())
        if self.made_ns:
            p = sh(["ip", "netns", "del", self.netns], check=False)
            if p.returncode == 0 or "No such file" in p.stderr:
                self.made_ns = False
            else:
                errors.append(p.stderr.strip())
        if errors:
            raise RuntimeError("removing the shaped link: " + "; ".join(errors))
