"""A private containerd for converting test images to lazy formats with
stargz-snapshotter's `ctr-remote`, and readers for what the converters write.

    cd = Containerd(workdir).start()          # register cd.stop as a cleanup
    cd.convert("127.0.0.1:5000/it/x:orig", "127.0.0.1:5000/it/x:esgz", "estargz")

`convert` = fetch (content only: nothing is unpacked, so no snapshot is
mounted), `ctr-remote image convert --estargz|--zstdchunked --oci`, then
`ctr-remote image push`, all with --plain-http (the registry is a
docker-registry on 127.0.0.1 started by lib/registry.py). The command lines,
which work with Debian 12's containerd 1.6.20 and stargz-snapshotter 0.12.0:

    containerd --config <tmp>/config.toml
    ctr-remote -a <tmp>/containerd.sock -n ucrfs-test content fetch --plain-http SRC
    ctr-remote -a <tmp>/containerd.sock -n ucrfs-test image convert --estargz --oci SRC DST
    ctr-remote -a <tmp>/containerd.sock -n ucrfs-test image convert --zstdchunked --oci SRC DST
    ctr-remote -a <tmp>/containerd.sock -n ucrfs-test image push --plain-http DST

What the converter writes (ctr-remote 0.12.0; see estargz_toc/zstdchunked_toc):
- eStargz: media type ...layer.v1.tar+gzip; annotations
  containerd.io/snapshot/stargz/toc.digest (sha256 of the TOC JSON) and
  io.containers.estargz.uncompressed-size. The TOC is a tar entry named
  stargz.index.json in the blob (gzip member at the offset in the 51-byte
  footer); the layer also gets a `.no.prefetch.landmark` regular file (no
  optimisation record given). Default chunk size 4 MiB.
- zstd:chunked: media type ...layer.v1.tar+zstd; annotations
  io.containers.zstd-chunked.manifest-checksum (sha256 of the zstd-compressed
  TOC), io.containers.zstd-chunked.manifest-position
  (offset:compressedLen:rawLen:1, offset of the zstd frame inside a skippable
  frame), AND containerd.io/snapshot/stargz/toc.digest (sha256 of the
  uncompressed TOC JSON) and io.containers.estargz.uncompressed-size. Footer:
  a skippable frame (50 2A 4D 18, length 40) holding offset, compressed
  length, raw length, type 1, "GnUlInUx" as little-endian u64s/bytes.
"""
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time

from .mounts import mountinfo
from .util import run, start_process, stop_process, which

NAMESPACE = "ucrfs-test"

ESTARGZ_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
ESTARGZ_UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
ZSTDCHUNKED_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
ZSTDCHUNKED_POSITION = "io.containers.zstd-chunked.manifest-position"

MODES = {"estargz": "--estargz", "zstdchunked": "--zstdchunked"}

# Plugins the conversion does not need; disabling them keeps startup fast
# and avoids touching anything outside root/state (CRI would want CNI etc.).
_DISABLED = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def skip_reason():
    """Why a test needing a private containerd + ctr-remote cannot run, or None."""
    missing = [t for t in ("containerd", "ctr-remote") if not which(t)]
    if missing:
        return "%s not installed" % ", ".join(missing)
    if os.geteuid() != 0:
        return "a private containerd needs root"
    return None


def _mounts_under(prefix):
    prefix = os.path.realpath(prefix)
    return [e[0] for e in mountinfo() if e[0] == prefix or e[0].startswith(prefix + "/")]


class Containerd:
    """containerd with its own root, state and socket under a temp dir.
    start() waits (bounded) for the socket; stop() is idempotent: it kills
    the process group and lazily unmounts anything left under the dir."""

    def __init__(self, workdir=None):
        # The socket path must stay well below sockaddr_un's 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="ucrfs-cd-", dir=workdir if workdir and
                                    len(workdir) < 60 else None)
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.log_path = os.path.join(self.dir, "containerd.log")
        self.config = os.path.join(self.dir, "config.toml")
        self.proc = None

    def config_toml(self):
        return "\n".join([
            "version = 2",
            'root = "%s"' % self.root,
            'state = "%s"' % self.state,
            "disabled_plugins = [%s]" % ", ".join('"%s"' % p for p in _DISABLED),
            "[grpc]",
            '  address = "%s"' % self.sock,
            "[ttrpc]",
            '  address = "%s.ttrpc"' % self.sock,
            "[debug]",
            '  address = ""',
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.snapshotter.v1.overlayfs"]',
            '  root_path = ""',
            "",
        ])

    def start(self, timeout=30.0):
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.state, exist_ok=True)
        with open(self.config, "w") as f:
            f.write(self.config_toml())
        self.proc = start_process(["containerd", "--config", self.config], self.log_path)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if os.path.exists(self.sock):
                res = subprocess.run(["ctr-remote", "-a", self.sock, "version"],
                                     capture_output=True, timeout=10)
                if res.returncode == 0:
                    return self
                last = res.stderr.decode(errors="replace")
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise AssertionError("containerd did not come up within %ss (%s)\nlast: %s\nlog:\n%s" % (
            timeout, "exited" if self.proc and self.proc.poll() is not None else "no socket",
            last, log))

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        for mp in sorted(_mounts_under(self.dir), key=len, reverse=True):
            try:
                subprocess.run(["umount", "-l", mp], capture_output=True, timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if not _mounts_under(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---------------------------------------------------------- ctr-remote

    def ctr(self, *args, timeout=180):
        return run(["ctr-remote", "-a", self.sock, "-n", NAMESPACE] + list(args), timeout=timeout)

    def fetch(self, ref):
        """All content of ref (manifest, config, layers) into the content
        store, without unpacking (no snapshot, no mount)."""
        return self.ctr("content", "fetch", "--plain-http", ref)

    def convert_local(self, src_ref, dst_ref, mode):
        if mode not in MODES:
            raise ValueError(mode)
        return self.ctr("image", "convert", MODES[mode], "--oci", src_ref, dst_ref)

    def push(self, ref):
        return self.ctr("image", "push", "--plain-http", ref)

    def convert(self, src_ref, dst_ref, mode):
        """Fetches src_ref from its (plain-HTTP) registry, converts it to
        mode ("estargz" or "zstdchunked") as dst_ref and pushes that."""
        have = self.ctr("image", "ls", "-q").stdout.decode().split()
        if src_ref not in have:
            self.fetch(src_ref)
        self.convert_local(src_ref, dst_ref, mode)
        self.push(dst_ref)


# ---------------------------------------------------------------- formats

ESTARGZ_FOOTER = 51
ZSTDCHUNKED_FOOTER = 48  # skippable frame header (8) + 40 bytes


class Toc:
    """A lazy layer's TOC as the converter wrote it.
    offset/length: the encoded TOC's byte range in the blob (what a reader
    must fetch besides the footer); json: the raw TOC JSON; entries: parsed."""

    def __init__(self, offset, length, raw_json, compressed=None):
        self.offset = offset
        self.length = length
        self.json = raw_json
        self.compressed = compressed
        self.entries = json.loads(raw_json)["entries"]

    def chunks(self, name):
        """[(chunk offset in the file, encoded offset in the blob)] of a file."""
        out = []
        for e in self.entries:
            if e.get("name") == name and e.get("type") in ("reg", "chunk") and "offset" in e:
                out.append((e.get("chunkOffset", 0), e["offset"]))
        return out

    def encoded_range(self, name, index=0):
        """(start, end) in the blob of the index-th chunk of a file: from its
        offset to the next larger chunk offset (or the TOC)."""
        start = self.chunks(name)[index][1]
        later = sorted(e["offset"] for e in self.entries if e.get("offset", -1) > start)
        end = later[0] if later else self.offset
        return start, end


def estargz_toc(blob):
    foot = blob[-ESTARGZ_FOOTER:]
    if foot[:4] != b"\x1f\x8b\x08\x04" or foot[12:14] != b"SG" or foot[32:38] != b"STARGZ":
        raise ValueError("no eStargz footer")
    off = int(foot[16:32], 16)
    raw = gzip.decompress(blob[off:len(blob) - ESTARGZ_FOOTER])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        m = tf.getmember("stargz.index.json")
        data = tf.extractfile(m).read()
    return Toc(off, len(blob) - ESTARGZ_FOOTER - off, data)


def zstdchunked_toc(blob):
    foot = blob[-ZSTDCHUNKED_FOOTER:]
    if foot[:4] != b"\x50\x2a\x4d\x18" or foot[-8:] != b"GnUlInUx":
        raise ValueError("no zstd:chunked footer")
    off, clen, rawlen, kind = struct.unpack("<QQQQ", foot[8:40])
    if kind != 1:
        raise ValueError("zstd:chunked manifest type %d" % kind)
    comp = blob[off:off + clen]
    raw = subprocess.run(["zstd", "-d", "-c", "-q"], input=comp, capture_output=True,
                         check=True, timeout=60).stdout
    if len(raw) != rawlen:
        raise ValueError("zstd:chunked TOC length %d, footer says %d" % (len(raw), rawlen))
    return Toc(off, clen, raw, comp)


def read_toc(blob, mode):
    return estargz_toc(blob) if mode == "estargz" else zstdchunked_toc(blob)
