"""Test images for the mount tests, built from hand-made layers.

FEATURES: a three-layer image with every kind of entry a rootfs can hold
(see features_tars) plus the multi-layer rules (whiteouts, opaque dirs,
type changes, re-creation, metadata changes, hardlinks across layers).
MESOS_WHITEOUT / MESOS_OVERWRITE: the layers of the images Mesos'
provisioner tests use (zhq527725/whiteout, chhsiao/overwrite), as docker
builds them from their Dockerfiles, with a tiny base layer instead of alpine.

Every directory has its own tar entry (umoci gives implicit parents the
extraction time as mtime; see treecmp for the exclusions this avoids).
"""
import random
import struct
import tarfile

from . import layers as L

T0 = 1700000000
BIG_SIZE = 100 * 1024 * 1024
BIG_PATH = b"big/100M.bin"
MANY_DIR = b"many"
MANY_COUNT = 5000
DEEP_LEVELS = 22           # 22 x (200 + 1) bytes > 4 KiB
DEEP_NAME = 200

# v2 file capability (VFS_CAP_REVISION_2 | EFFECTIVE), permitted =
# CAP_NET_BIND_SERVICE (bit 10): what `setcap cap_net_bind_service+ep` writes.
CAP_NET_BIND_SERVICE_V2 = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)

_big = None


def big_data():
    """100 MiB: a 4093-byte random block repeated (prime period, so a read
    at a wrong offset shows) with a marker at every MiB (so a shift by a
    multiple of the period shows too). Compresses to ~2 MB with gzip -1."""
    global _big
    if _big is None:
        blk = random.Random(4093).randbytes(4093)
        b = bytearray(blk * (BIG_SIZE // len(blk) + 1))[:BIG_SIZE]
        for i in range(BIG_SIZE // (1 << 20)):
            m = b"<MiB %08d>" % i
            b[i << 20:(i << 20) + len(m)] = m
        _big = bytes(b)
    return _big


def deep_dirs():
    """[b'deep', b'deep/ddd...', ...]: nested dirs of 200-byte names."""
    out = [b"deep"]
    cur = b"deep"
    for i in range(DEEP_LEVELS):
        name = (b"%02d" % i) + b"d" * (DEEP_NAME - 2)
        cur = cur + b"/" + name
        out.append(cur)
    return out


SPARSE_GNU = [("sparse/gnu-holes", 4 << 20,
               [(0, b"A" * 4096), (1 << 20, b"B" * 8192)])]            # ends in a hole
SPARSE_PAX = [("sparse/pax-holes", 3 << 20,
               [(2 << 20, b"C" * 4096), ((3 << 20) - 10, b"0123456789")])]  # starts with one


def features_tars(workdir, with_big=True, cross_layer_hardlink=True):
    """The FEATURES image's three uncompressed layer tars, base first.
    cross_layer_hardlink=False leaves out layer 2's hardlink to a layer-1
    file (what a layer unpacked on its own, for overlayfs, cannot hold)."""
    l1 = [
        L.dir_("./", mtime=T0 - 1000),
        L.dir_("etc"), L.reg("etc/hostname", b"ucrfs\n"), L.reg("etc/empty", b""),
        L.dir_("bin"), L.reg("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
        # modes
        L.dir_("modes"),
        L.reg("modes/setuid", b"suid\n", mode=0o4755),
        L.reg("modes/setgid", b"sgid\n", mode=0o2755),
        L.reg("modes/all", b"all bits\n", mode=0o7777),
        L.reg("modes/none", b"no bits\n", mode=0o000),
        L.dir_("modes/sticky", mode=0o1777),
        L.dir_("modes/sgid-dir", mode=0o2775, gid=50),
        L.dir_("modes/locked", mode=0o000),
        L.reg("modes/locked/secret", b"behind a 000 dir\n", mode=0o600),
        # owners
        L.dir_("owners"),
        L.reg("owners/u70000", b"x", uid=70000, gid=70000),
        L.reg("owners/u4000000", b"y", uid=4000000, gid=4000001),          # PAX uid/gid
        L.reg("owners/gnu-b256", b"z", uid=3000000, gid=3000001, fmt=tarfile.GNU_FORMAT),
        L.reg("owners/named", b"n", uid=1000, gid=1000,                    # numbers win
              pax={"uname": "root", "gname": "root"}),
        L.dir_("owners/d70000", mode=0o750, uid=70000, gid=70001),
        L.sym("owners/link", "u70000", uid=1234, gid=5678),
        # symlinks
        L.dir_("links"),
        L.sym("links/rel", "../etc/hostname", mtime="1700000001.5"),
        L.sym("links/abs", "/etc/hostname"),
        L.sym("links/dangling", "nowhere/at/all"),
        L.sym("links/dirlink", "../etc"),
        L.sym("links/long", "t" * 300 + "/end"),                            # PAX linkpath
        L.sym("links/self", "self"),
        # hardlinks
        L.dir_("hard"),
        L.reg("hard/a", b"group of three\n", mode=0o640, uid=7, gid=8),
        L.hard("hard/b", "hard/a"), L.hard("hard/c", "hard/a"),
        L.reg("hard/lower", b"linked from layer 2\n"),
        L.reg("hard/suid", b"setuid, linked\n", mode=0o4750),
        L.hard("hard/suid-link", "hard/suid"),
        L.reg("hard/g2a", b"group of four, two go\n"),
        L.hard("hard/g2b", "hard/g2a"), L.hard("hard/g2c", "hard/g2a"),
        L.hard("hard/g2d", "hard/g2a"),
        # devices
        L.dir_("devs"),
        L.chr_("devs/null", 1, 3), L.blk("devs/sda", 8, 0, gid=6),
        L.fifo("devs/fifo"), L.chr_("devs/big", 511, 1048575, mode=0o600),
        # xattrs
        L.dir_("xattrs"),
        # A zero-length PAX value deletes the keyword (POSIX pax, "value
        # field is zero length"): user.empty must NOT appear (umoci/Go agree).
        L.reg("xattrs/user", b"u", xattrs={"user.foo": "bar", "user.empty": ""}),
        L.reg("xattrs/cap", b"\x7fELF-ish", mode=0o755,
              xattrs={"security.capability": CAP_NET_BIND_SERVICE_V2}),
        L.reg("xattrs/bin", b"b", xattrs={"user.bin": b"\x00\xff\xfe\x80binary"}),
        L.dir_("xattrs/dir", xattrs={"user.dir": "1"}),
        # names
        L.dir_("names"),
        L.reg(b"names/" + b"L" * 255, b"255 bytes (PAX path)\n"),
        L.reg(b"names/" + b"G" * 255, b"255 bytes (GNU longname)\n", fmt=tarfile.GNU_FORMAT),
        L.dir_(b"names/" + b"D" * 255),
        L.reg(b"names/" + b"D" * 255 + b"/" + b"F" * 255, b"two 255-byte components\n"),
        L.reg(b"names/latin1-\xe9t\xe9", b"PAX hdrcharset=BINARY\n"),
        L.reg(b"names/gnu-raw-\xff\xfe", b"raw bytes in the header\n", fmt=tarfile.GNU_FORMAT),
        L.dir_(b"names/dir-\x80\x81"),
        L.reg(b"names/dir-\x80\x81/inside", b"in a non-UTF-8 dir\n"),
        L.sym(b"names/badtarget", b"\xff\xfe-target"),
        L.reg("names/ünïcødé-名前", b"utf-8\n"),
        L.reg("names/with\nnewline and space", b"nl\n"),
        L.reg("names/-dash", b"-\n"),
        # mtimes
        L.dir_("times", mtime="1600000000.987654321"),
        L.reg("times/ns", b"ns\n", mtime="1700000000.123456789"),
        L.reg("times/pre1970", b"old\n", mtime="-86400.25"),
        L.reg("times/future", b"far\n", mtime="9000000000.5"),  # > 8**11: PAX only
        L.reg("times/epoch", b"zero\n", mtime=0),
        L.dir_("times/nsdir", mtime="1650000000.000000001"),
        # whiteout targets
        L.dir_("wh"), L.reg("wh/file", b"to be whited out\n"), L.reg("wh/keep", b"stays\n"),
        L.dir_("wh/tree"), L.dir_("wh/tree/a"), L.dir_("wh/tree/a/b"),
        L.reg("wh/tree/a/b/c", b"deep in a removed tree\n"),
        L.reg("wh/samelayer", b"lower version\n"),
        L.dir_("opq", mtime=T0 + 1),
        L.reg("opq/old1", b"lower, hidden by opaque\n"), L.dir_("opq/olddir"),
        L.reg("opq/olddir/x", b"lower\n"), L.reg("opq/same", b"lower same\n"),
        L.reg("opq/after", b"lower after\n"),
        L.dir_("recreate"), L.reg("recreate/x", b"v1\n"), L.dir_("recreate/d"),
        L.reg("recreate/d/child", b"gone\n"),
        L.dir_("types"), L.reg("types/f2d", b"file, then dir\n"), L.dir_("types/d2f"),
        L.reg("types/d2f/child", b"goes with its dir\n"), L.reg("types/f2s", b"file, then symlink\n"),
        L.sym("types/s2d", "f2d"), L.chr_("types/dev2f", 1, 5), L.fifo("types/fifo2dir"),
        L.dir_("meta", mode=0o755, xattrs={"user.meta": "1", "user.gone": "1"}),
        L.reg("meta/child", b"c\n"),
    ]
    if with_big:
        l1 += [L.dir_("big"), L.reg(BIG_PATH, big_data())]
    l1 += [L.dir_(MANY_DIR)]
    for i in range(MANY_COUNT):
        l1.append(L.reg(b"%s/f%05d" % (MANY_DIR, i), b"%d\n" % i if i % 3 else b""))
    l1.append(L.dir_("sparse"))
    # PAX 1.0 sparse (GNU tar --format=posix). The old GNU 'S' type is in
    # beyond_umoci_tars: umoci (Go archive/tar keeps Typeflag 'S') rejects it.
    pax, _ = L.sparse_members(workdir, SPARSE_PAX, "posix")
    l1 += [L.raw(pax)]

    t2 = T0 + 100
    l2 = [
        L.whiteout("wh/file"), L.whiteout("wh/tree"), L.whiteout("wh/neverexisted"),
        L.reg("wh/samelayer", b"upper version\n", mtime=t2),
        L.whiteout("wh/samelayer"),  # same layer: must not hide the entry above
        L.dir_("opq", mode=0o775, mtime=t2),
        L.reg("opq/before", b"same layer, before the marker\n", mtime=t2),
        L.reg("opq/same", b"upper same, before the marker\n", mtime=t2),
        L.opaque("opq"),
        L.reg("opq/after", b"same layer, after the marker\n", mtime=t2),
        L.dir_("opq/newdir", mtime=t2), L.reg("opq/newdir/y", b"y\n", mtime=t2),
        L.whiteout("recreate/x"), L.whiteout("recreate/d"),
        L.dir_("types/f2d", mtime=t2), L.reg("types/f2d/new", b"in the new dir\n", mtime=t2),
        L.reg("types/d2f", b"dir, then file\n", mtime=t2),
        L.sym("types/f2s", "d2f", mtime=t2),
        L.dir_("types/s2d", mtime=t2), L.reg("types/s2d/inside", b"in the new dir\n", mtime=t2),
        L.reg("types/dev2f", b"was a char device\n", mtime=t2),
        L.dir_("types/fifo2dir", mode=0o700, mtime=t2),
        L.dir_("meta", mode=0o700, uid=1000, gid=2000, mtime=t2, xattrs={"user.meta": "2"}),
    ] + ([L.hard("hard/tolower", "hard/lower")] if cross_layer_hardlink else []) + [
        L.reg("etc/hostname", b"ucrfs layer 2\n", mode=0o600, mtime=t2),
    ]
    t3 = T0 + 200
    l3 = [
        L.dir_("./", mtime=T0 + 3000),
        L.dir_("recreate/x", mode=0o711, mtime=t3), L.reg("recreate/x/inner", b"v3\n", mtime=t3),
        L.sym("recreate/d", "x", mtime=t3),
        L.whiteout("hard/g2c"),
        L.reg("hard/g2d", b"replaced, out of the group\n", mtime=t3),
        L.whiteout("types/f2d/new"),
    ]
    return [L.make_layer_tar(l1), L.make_layer_tar(l2), L.make_layer_tar(l3)]


DEEP_BOTTOM_DATA = b"more than 4 KiB down\n"


def beyond_umoci_tars(workdir):
    """What umoci 0.4.7 cannot unpack, for a reference made by GNU tar
    (`tar -x` of each layer in order; no whiteouts here, so that is exact):
    a path longer than PATH_MAX (umoci works on full paths: ENAMETOOLONG) and
    an old-GNU sparse member (type 'S': umoci fails with "unknown typeflag";
    so do docker's and containerd's extractors, GNU tar and ucrfs should not)."""
    gnu, _ = L.sparse_members(workdir, SPARSE_GNU, "gnu")
    base = [L.dir_("etc"), L.reg("etc/os-release", b"ID=base\n"), L.dir_("sparse"), L.raw(gnu)]
    deep = []
    for i, d in enumerate(deep_dirs()):
        deep.append(L.dir_(d, mode=0o755 if i % 2 else 0o750, uid=i, gid=100 + i,
                           mtime="%d.%09d" % (T0 + i, i)))
    deep.append(L.reg(deep_dirs()[-1] + b"/bottom", DEEP_BOTTOM_DATA, mode=0o640, uid=5, gid=6,
                      mtime="1700000123.456789012"))
    deep.append(L.sym(deep_dirs()[-1] + b"/up", b"../" * 3 + b"x" * 10))
    return [L.make_layer_tar(base), L.make_layer_tar(deep)]


def sparse_expected(workdir):
    """{relative path: content} of both sparse files."""
    exp = {}
    for specs, fmt in ((SPARSE_GNU, "gnu"), (SPARSE_PAX, "posix")):
        _, e = L.sparse_members(workdir, specs, fmt)
        exp.update(e)
    return exp


# Semantics checked on the umoci tree (is the fixture what we think?) and on
# the mount: (relative path, kind, expectation).
FEATURE_FACTS = [
    ("wh/file", "absent", None), ("wh/tree", "absent", None), ("wh/keep", "file", b"stays\n"),
    ("wh/samelayer", "file", b"upper version\n"),
    ("opq/old1", "absent", None), ("opq/olddir", "absent", None),
    ("opq/before", "file", b"same layer, before the marker\n"),
    ("opq/after", "file", b"same layer, after the marker\n"),
    ("opq/same", "file", b"upper same, before the marker\n"),
    ("opq/newdir/y", "file", b"y\n"),
    ("recreate/x", "dir", None), ("recreate/x/inner", "file", b"v3\n"),
    ("recreate/d", "symlink", b"x"), ("recreate/d/child", "absent", None),
    ("types/f2d", "dir", None), ("types/f2d/new", "absent", None),
    ("types/d2f", "file", b"dir, then file\n"), ("types/f2s", "symlink", b"d2f"),
    ("types/s2d", "dir", None), ("types/s2d/inside", "file", b"in the new dir\n"),
    ("types/dev2f", "file", b"was a char device\n"), ("types/fifo2dir", "dir", None),
    ("etc/hostname", "file", b"ucrfs layer 2\n"),
    ("hard/g2c", "absent", None),
    ("hard/g2d", "file", b"replaced, out of the group\n"),
]
FEATURE_LINK_GROUPS = [
    {b"hard/a", b"hard/b", b"hard/c"}, {b"hard/lower", b"hard/tolower"},
    {b"hard/suid", b"hard/suid-link"}, {b"hard/g2a", b"hard/g2b"},
]


def mesos_whiteout_tars():
    """zhq527725/whiteout: RUN mkdir -p /dir1/dir2 && touch /dir1/file1 /dir1/dir2/file2;
    RUN rm -rf /dir1/file1 /dir1/dir2 && mkdir /dir1/dir2 && touch /dir1/dir2/file3."""
    base = [L.dir_("tmp", mode=0o1777), L.dir_("etc"), L.reg("etc/os-release", b"ID=base\n")]
    l1 = [L.dir_("dir1", mtime=T0 + 10), L.dir_("dir1/dir2", mtime=T0 + 10),
          L.reg("dir1/dir2/file2", b"", mtime=T0 + 10), L.reg("dir1/file1", b"", mtime=T0 + 10)]
    l2 = [L.dir_("dir1", mtime=T0 + 20), L.whiteout("dir1/file1"),
          L.dir_("dir1/dir2", mtime=T0 + 20), L.opaque("dir1/dir2"),
          L.reg("dir1/dir2/file3", b"", mtime=T0 + 20)]
    return [L.make_layer_tar(x) for x in (base, l1, l2)]


MESOS_WHITEOUT_FACTS = [
    ("dir1/file1", "absent", None), ("dir1/dir2/file2", "absent", None),
    ("dir1/dir2/file3", "file", b""),
]


def mesos_overwrite_tars():
    """chhsiao/overwrite (WORKDIR /):
    RUN mkdir /merged /replaced1 /replaced2 && touch /merged/m1 /replaced1/r1
        /replaced2/r2 /replaced3 baz && ln -s /merged /replaced4 && ln -s baz foo
        && ln -s bar bar && ln -s ../../../../../../../abc xyz
    RUN rm -rf /replaced1 /replaced2 /replaced3 /replaced4 foo bar baz xyz &&
        mkdir /replaced3 /replaced4 && touch /merged/m2 /replaced1 bar xyz &&
        ln -s /merged /replaced2 && ln -s bar foo && ln -s baz baz
    The second layer is what docker's overlay2 diff holds: new entries over
    old ones of another type, opaque markers in re-created directories."""
    base = [L.dir_("tmp", mode=0o1777), L.dir_("etc"), L.reg("etc/os-release", b"ID=base\n")]
    t1, t2 = T0 + 10, T0 + 20
    l1 = [L.sym("bar", "bar", mtime=t1), L.reg("baz", b"", mtime=t1), L.sym("foo", "baz", mtime=t1),
          L.dir_("merged", mtime=t1), L.reg("merged/m1", b"", mtime=t1),
          L.dir_("replaced1", mtime=t1), L.reg("replaced1/r1", b"", mtime=t1),
          L.dir_("replaced2", mtime=t1), L.reg("replaced2/r2", b"", mtime=t1),
          L.reg("replaced3", b"", mtime=t1), L.sym("replaced4", "/merged", mtime=t1),
          L.sym("xyz", "../../../../../../../abc", mtime=t1)]
    l2 = [L.reg("bar", b"", mtime=t2), L.sym("baz", "baz", mtime=t2), L.sym("foo", "bar", mtime=t2),
          L.dir_("merged", mtime=t2), L.reg("merged/m2", b"", mtime=t2),
          L.reg("replaced1", b"", mtime=t2), L.sym("replaced2", "/merged", mtime=t2),
          L.dir_("replaced3", mtime=t2), L.opaque("replaced3"),
          L.dir_("replaced4", mtime=t2), L.opaque("replaced4"),
          L.reg("xyz", b"", mtime=t2)]
    return [L.make_layer_tar(x) for x in (base, l1, l2)]


# Mesos' checks, with symlinks resolved inside the tree (the mount is not
# our root): test -f /replaced1; test -L /replaced2; test -f /replaced2/m1;
# test -f /replaced2/m2; ! test -e /replaced2/r2; test -d /replaced3;
# test -d /replaced4; ! test -e /replaced4/m1; test -f /foo; ! test -L /bar;
# test -L /baz; and /xyz is an empty regular file (no escape through the
# old symlink).
MESOS_OVERWRITE_FACTS = [
    ("replaced1", "file", b""), ("replaced2", "symlink", b"/merged"),
    ("merged/m1", "file", b""), ("merged/m2", "file", b""), ("merged/r2", "absent", None),
    ("replaced2/r2", "absent", None), ("replaced2/m1", "file", b""), ("replaced2/m2", "file", b""),
    ("foo", "follow-file", b""),
    ("replaced3", "dir", None), ("replaced4", "dir", None), ("replaced4/m1", "absent", None),
    ("foo", "symlink", b"bar"), ("bar", "file", b""), ("baz", "symlink", b"baz"),
    ("xyz", "file", b""),
]
