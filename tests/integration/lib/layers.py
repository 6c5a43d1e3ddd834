"""Hand-made layer tars with full control over every header field.

`make_layer_tar(entries)` concatenates entries built by the helpers below
(`reg`, `dir_`, `sym`, `hard`, `chr_`, `blk`, `fifo`, `whiteout`, `opaque`,
`raw`) into one tar stream. Each entry is written with Python's `tarfile` in
the format it names (PAX by default, GNU or USTAR on request), so one layer
can mix PAX records (long names, big ids, nanosecond mtimes, xattrs,
non-UTF-8 names via hdrcharset=BINARY) with GNU long names and base-256
numbers; `raw` splices in members made by GNU tar (sparse files).

Paths and link targets may be str or bytes; bytes that are not UTF-8 are
carried through surrogateescape and end up byte-exact in the archive.

`RawLayer` wraps such a tar like `images.Layer` does (diff_id, compressed
blob, descriptor), so `images.Image` and the writers accept it.
"""
import gzip
import io
import os
import subprocess
import tarfile
import tempfile

from . import images as I
from .util import sha256_digest

BLOCK = 512
DEFAULT_MTIME = 1700000000


def _s(p):
    """str for tarfile: bytes are decoded with surrogateescape (byte-exact)."""
    if isinstance(p, bytes):
        return p.decode("utf-8", "surrogateescape")
    return p


def _pad(n):
    return b"\0" * ((BLOCK - n % BLOCK) % BLOCK)


class Entry:
    def __init__(self, ti, data=None, fmt=tarfile.PAX_FORMAT, chunk=None):
        self.ti = ti
        self.data = data
        self.fmt = fmt
        self.chunk = chunk  # pre-built bytes (raw)

    def to_bytes(self):
        if self.chunk is not None:
            return self.chunk
        buf = self.ti.tobuf(self.fmt, "utf-8", "surrogateescape")
        if self.data:
            buf += self.data + _pad(len(self.data))
        return buf


def _ti(path, type_, mode, uid, gid, mtime, xattrs, pax, uname="", gname=""):
    ti = tarfile.TarInfo(_s(path))
    ti.type = type_
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname, ti.gname = uname, gname
    pax = dict(pax or {})
    if isinstance(mtime, str):
        # "SECONDS.NANOS" (may be negative): exact in a PAX record, rounded
        # into the ustar field when it fits.
        sec = int(float(mtime))
        ti.mtime = sec if 0 <= sec < 8 ** 11 else 0
        pax["mtime"] = mtime
    else:
        ti.mtime = mtime
    for k, v in (xattrs or {}).items():
        pax["SCHILY.xattr." + k] = _s(v)
    if pax:
        ti.pax_headers = pax
    return ti


def reg(path, data=b"", mode=0o644, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, pax=None,
        fmt=tarfile.PAX_FORMAT, type_=tarfile.REGTYPE):
    ti = _ti(path, type_, mode, uid, gid, mtime, xattrs, pax)
    ti.size = len(data)
    return Entry(ti, data, fmt)


def dir_(path, mode=0o755, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, pax=None,
         fmt=tarfile.PAX_FORMAT):
    return Entry(_ti(path, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs, pax), None, fmt)


def sym(path, target, uid=0, gid=0, mtime=DEFAULT_MTIME, pax=None, fmt=tarfile.PAX_FORMAT):
    ti = _ti(path, tarfile.SYMTYPE, 0o777, uid, gid, mtime, None, pax)
    ti.linkname = _s(target)
    return Entry(ti, None, fmt)


def hard(path, target, mtime=DEFAULT_MTIME, fmt=tarfile.PAX_FORMAT, mode=0o644, uid=0, gid=0):
    ti = _ti(path, tarfile.LNKTYPE, mode, uid, gid, mtime, None, None)
    ti.linkname = _s(target)
    return Entry(ti, None, fmt)


def _dev(path, type_, major, minor, mode, uid, gid, mtime):
    ti = _ti(path, type_, mode, uid, gid, mtime, None, None)
    ti.devmajor, ti.devminor = major, minor
    return Entry(ti)


def chr_(path, major, minor, mode=0o666, uid=0, gid=0, mtime=DEFAULT_MTIME):
    return _dev(path, tarfile.CHRTYPE, major, minor, mode, uid, gid, mtime)


def blk(path, major, minor, mode=0o660, uid=0, gid=0, mtime=DEFAULT_MTIME):
    return _dev(path, tarfile.BLKTYPE, major, minor, mode, uid, gid, mtime)


def fifo(path, mode=0o644, uid=0, gid=0, mtime=DEFAULT_MTIME):
    return Entry(_ti(path, tarfile.FIFOTYPE, mode, uid, gid, mtime, None, None))


def whiteout(path):
    """`dir/.wh.NAME` for path `dir/NAME` (an empty regular file, as docker writes it)."""
    d, n = os.path.split(_s(path))
    return reg(os.path.join(d, ".wh." + n), b"", mode=0o600)


def opaque(dirpath):
    return reg(os.path.join(_s(dirpath), ".wh..wh..opq"), b"", mode=0o600)


def raw(chunk):
    assert len(chunk) % BLOCK == 0
    return Entry(None, chunk=chunk)


def make_layer_tar(entries):
    """One tar stream: every entry, then the two zero blocks that end it."""
    out = io.BytesIO()
    for e in entries:
        out.write(e.to_bytes())
    out.write(b"\0" * (2 * BLOCK))
    return out.getvalue()


def raw_header(name, size_field, type_=b"0", mode=b"0000644", extra=None):
    """A single ustar header block built by hand (fields as bytes), with a
    correct checksum: for headers tarfile refuses to write."""
    h = bytearray(BLOCK)

    def put(off, length, val):
        val = val[:length]
        h[off:off + len(val)] = val

    put(0, 100, name)
    put(100, 8, mode + b"\0")
    put(108, 8, b"0000000\0")
    put(116, 8, b"0000000\0")
    put(124, 12, size_field)
    put(136, 12, b"14524770400\0")  # 1700000000
    put(156, 1, type_)
    put(257, 6, b"ustar\0")
    put(263, 2, b"00")
    for off, val in (extra or {}).items():
        put(off, len(val), val)
    h[148:156] = b"        "
    chk = sum(h)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


# ---------------------------------------------------------------- GNU tar

def gnu_tar_members(srcdir, names, fmt="gnu", sparse=True, mtime=DEFAULT_MTIME, extra_args=()):
    """Runs GNU tar over srcdir/names and returns the member bytes without
    the end-of-archive blocks, ready for `raw()`."""
    cmd = ["tar", "-C", srcdir, "-c", "-f", "-", "--format=" + fmt, "--numeric-owner",
           "--owner=0", "--group=0", "--mtime=@%d" % mtime]
    if sparse:
        cmd.append("--sparse")
    if fmt in ("posix", "pax"):
        cmd += ["--pax-option=delete=atime,delete=ctime"]
    cmd += list(extra_args) + ["--"] + list(names)
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        tf.getmembers()
        end = tf.offset
    return out[:end]


def make_sparse_file(path, size, extents):
    """A file of `size` bytes with data only at extents [(offset, bytes)],
    holes elsewhere (ftruncate + pwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, data in extents:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def sparse_members(workdir, specs, fmt):
    """specs: [(relpath, size, extents)] -> GNU tar --sparse member bytes and
    {relpath: expected content}."""
    src = tempfile.mkdtemp(prefix="sparse-", dir=workdir)
    expected = {}
    for rel, size, extents in specs:
        p = os.path.join(src, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        make_sparse_file(p, size, extents)
        with open(p, "rb") as f:
            expected[rel] = f.read()
    chunk = gnu_tar_members(src, [s[0] for s in specs], fmt=fmt)
    return chunk, expected


# ---------------------------------------------------------------- layers

def compress(tar, kind, level=None):
    if kind == "gzip":
        return gzip.compress(tar, compresslevel=6 if level is None else level, mtime=0)
    if kind == "zstd":
        lv = "-%d" % (3 if level is None else level)
        return subprocess.run(["zstd", "-q", "-c", lv, "-T2"], input=tar, capture_output=True,
                              check=True, timeout=120).stdout
    if kind == "tar":
        return tar
    raise ValueError(kind)


class RawLayer:
    """Like images.Layer, from a ready-made uncompressed tar."""

    def __init__(self, tar, kind="gzip", level=None, docker=False, blob=None):
        self.tar = tar
        self.diff_id = sha256_digest(tar)
        self.kind = kind
        if blob is None:
            blob = compress(tar, kind, level)
        if docker:
            mt = {"gzip": I.DOCKER_LAYER_GZIP, "tar": I.DOCKER_LAYER_TAR}[kind]
        else:
            mt = {"gzip": I.OCI_LAYER_GZIP, "tar": I.OCI_LAYER_TAR, "zstd": I.OCI_LAYER_ZSTD}[kind]
        self.desc = I.Descriptor(mt, blob)


def image_from_tars(tars, kind, level=None, runtime=None):
    """An OCI image (host arch) whose layers are the given uncompressed tars."""
    from .util import host_arch
    layers = [RawLayer(t, kind, level) for t in tars]
    rt = runtime if runtime is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    return I.Image(layers, runtime=rt, arch=host_arch())
