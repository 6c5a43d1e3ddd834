"""The differential oracle's comparator: walk two directory trees (the
reference `umoci unpack` rootfs and a ucrfs mount) and list every difference.

The walk goes through directory file descriptors (openat/fstatat with bytes
names), so paths longer than PATH_MAX and names that are not UTF-8 work.
Per path it records: type and full st_mode, uid, gid, size, mtime in ns,
st_nlink, st_rdev (devices), the symlink target, every xattr
(llistxattr/lgetxattr, via /proc/self/fd/N/NAME so no symlink is followed
and no path is too long), the sha256 of regular files' content, the inode
identity (to compare hardlink groups as partitions) and readdir's d_type.

What is deliberately NOT compared (and why) is in `compare`'s docstring and
in the `Exclusions` a test passes; every exclusion is named in the report.
"""
import errno
import hashlib
import os
import stat

TYPE_NAMES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
              stat.S_IFSOCK: "socket"}


class Node:
    __slots__ = ("path", "mode", "uid", "gid", "size", "mtime_ns", "nlink", "rdev", "ino",
                 "target", "xattrs", "sha256", "dtype")

    @property
    def type(self):
        return TYPE_NAMES.get(stat.S_IFMT(self.mode), oct(stat.S_IFMT(self.mode)))


def _hash_fd(fd):
    h = hashlib.sha256()
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        h.update(b)
    return h.hexdigest()


class NoXattrSupport(dict):
    """llistxattr said ENOTSUP: an empty set that says so when printed. It
    equals {} (a FUSE server that has no xattrs to serve may answer ENOSYS,
    after which the kernel answers ENOTSUP for the whole mount); against a
    reference with xattrs it is a difference like any other."""

    def __repr__(self):
        return "<ENOTSUP>"


def _xattrs(dirfd, name):
    p = b"/proc/self/fd/%d/%s" % (dirfd, name) if name else b"/proc/self/fd/%d" % dirfd
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            return NoXattrSupport()
        return {"<llistxattr error>": repr(e).encode()}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(p, n, follow_symlinks=False)
        except OSError as e:
            out[n] = ("<lgetxattr error: %r>" % e).encode()
    return out


def _node(rel, st, dirfd, name, hash_content, want_xattrs):
    n = Node()
    n.path = rel
    n.mode, n.uid, n.gid = st.st_mode, st.st_uid, st.st_gid
    n.size, n.mtime_ns, n.nlink = st.st_size, st.st_mtime_ns, st.st_nlink
    n.ino = (st.st_dev, st.st_ino)
    n.rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None
    n.target = None
    n.sha256 = None
    n.dtype = None
    if stat.S_ISLNK(st.st_mode):
        try:
            n.target = os.readlink(name, dir_fd=dirfd)
        except OSError as e:
            n.target = ("<readlink error: %r>" % e).encode()
    elif stat.S_ISREG(st.st_mode) and hash_content:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as e:
            n.sha256 = "<open error: %r>" % e
        else:
            try:
                n.sha256 = _hash_fd(fd)
            except OSError as e:
                n.sha256 = "<read error: %r>" % e
            finally:
                os.close(fd)
    n.xattrs = _xattrs(dirfd, name) if want_xattrs else None
    return n


def walk(root, hash_content=True, want_xattrs=True):
    """{relative bytes path: Node}; the root itself is b"."."""
    nodes = {}
    errors = []
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(rootfd)
        n = _node(b".", st, rootfd, b"", False, want_xattrs)
        nodes[b"."] = n

        def visit(dirfd, rel):
            try:
                entries = list(os.scandir(dirfd))
            except OSError as e:
                errors.append("%s: readdir: %r" % (show(rel), e))
                return
            for ent in entries:
                name = os.fsencode(ent.name)
                crel = name if rel == b"." else rel + b"/" + name
                try:
                    cst = os.lstat(name, dir_fd=dirfd)
                except OSError as e:
                    errors.append("%s: lstat: %r" % (show(crel), e))
                    continue
                node = _node(crel, cst, dirfd, name, hash_content, want_xattrs)
                # readdir's d_type (scandir uses it when it is not DT_UNKNOWN).
                try:
                    node.dtype = ("symlink" if ent.is_symlink() else "dir" if
                                  ent.is_dir(follow_symlinks=False) else "file" if
                                  ent.is_file(follow_symlinks=False) else "other")
                except OSError:
                    node.dtype = None
                nodes[crel] = node
                if stat.S_ISDIR(cst.st_mode):
                    try:
                        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                     os.O_CLOEXEC, dir_fd=dirfd)
                    except OSError as e:
                        errors.append("%s: open dir: %r" % (show(crel), e))
                        continue
                    try:
                        visit(fd, crel)
                    finally:
                        os.close(fd)

        visit(rootfd, b".")
    finally:
        os.close(rootfd)
    return nodes, errors


def show(p):
    """A path for humans: bytes repr, shortened in the middle when long."""
    r = repr(p)[2:-1] if isinstance(p, bytes) else str(p)
    if len(r) > 160:
        r = r[:70] + "...(%d chars)..." % len(r) + r[-70:]
    return r


def _fmt(field, v):
    if v is None:
        return "None"
    if field == "mode":
        return "0o%06o (%s)" % (v, TYPE_NAMES.get(stat.S_IFMT(v), "?"))
    if field == "rdev":
        return "%d:%d" % (os.major(v), os.minor(v))
    if field == "target":
        return show(v)
    if field == "xattrs":
        if isinstance(v, NoXattrSupport):
            return "<llistxattr: ENOTSUP>"
        return "{%s}" % ", ".join("%s=%r" % (k, v[k]) for k in sorted(v))
    if field == "links":
        return "{%s}" % ", ".join(show(x) for x in sorted(v))
    return repr(v)


class Exclusions:
    """What a comparison leaves out, each with its reason (printed)."""

    def __init__(self):
        self.items = []   # (predicate(path, node), field, reason)

    def add(self, pred, field, reason):
        self.items.append((pred, field, reason))
        return self

    def skips(self, path, node, field):
        for pred, f, _ in self.items:
            if f == field and pred(path, node):
                return True
        return False

    def describe(self):
        return ["not compared: %s: %s" % (f, r) for _, f, r in self.items] + [
            "equivalent: llistxattr failing with ENOTSUP on the mount = no xattrs, when the "
            "reference has none either (a FUSE server without xattrs answers ENOSYS once)"]


def default_exclusions(root_has_entry):
    ex = Exclusions()
    ex.add(lambda p, n: n.type == "dir", "size",
           "a directory's st_size is the storing filesystem's business (ext4: 4096 per block)")
    if not root_has_entry:
        ex.add(lambda p, n: p == b".", "mtime",
               "no layer has an entry for / : umoci sets the rootfs mtime to the epoch "
               "(oci/layer/unpack.go, 'arbitrary choice'), nothing in the image defines it")
    return ex


def _groups(nodes):
    by_ino = {}
    for p, n in nodes.items():
        if n.type != "dir":
            by_ino.setdefault(n.ino, set()).add(p)
    return {p: frozenset(g) for g in by_ino.values() for p in g}


FIELDS = ("mode", "uid", "gid", "size", "mtime_ns", "nlink", "rdev", "target", "sha256",
          "xattrs")


def compare(ref, got, exclusions=None, limit=None):
    """Differences between two walks ({path: Node}) as human-readable lines,
    in path order: missing/extra paths, every field in FIELDS, hardlink
    groups (paths sharing an inode must be the same sets on both sides), and
    readdir d_type vs lstat type on the `got` side.

    Not compared, ever: st_ino/st_dev values (only the partition they
    induce), atime and ctime (not image data: set by extraction/access),
    st_blocks/st_blksize (storage: umoci writes sparse files' holes as
    zeros)."""
    ex = exclusions or Exclusions()
    out = []
    field_of = {"mtime_ns": "mtime"}
    gref, ggot = _groups(ref), _groups(got)
    for p in sorted(set(ref) | set(got)):
        r, g = ref.get(p), got.get(p)
        if r is None:
            out.append("%s: only in the mount (%s)" % (show(p), g.type))
            continue
        if g is None:
            out.append("%s: missing from the mount (reference: %s)" % (show(p), r.type))
            continue
        for f in FIELDS:
            name = field_of.get(f, f)
            if ex.skips(p, r, name):
                continue
            if f == "size" and r.type not in ("file", "symlink", "dir"):
                continue
            rv, gv = getattr(r, f), getattr(g, f)
            if f == "sha256" and (rv is None or gv is None):
                continue
            if f == "xattrs" and (rv is None or gv is None):
                continue
            if rv != gv:
                out.append("%s: %s: reference=%s mount=%s" % (show(p), name, _fmt(f, rv),
                                                              _fmt(f, gv)))
        if r.type != "dir" and not ex.skips(p, r, "links"):
            a = gref.get(p, frozenset([p]))
            b = ggot.get(p, frozenset([p]))
            if a != b:
                out.append("%s: hardlink group: reference=%s mount=%s" % (
                    show(p), _fmt("links", a), _fmt("links", b)))
        if g.dtype is not None and p != b".":
            want = {"symlink": "symlink", "dir": "dir", "file": "file"}.get(g.type, "other")
            if g.dtype != want:
                out.append("%s: readdir d_type says %s, lstat says %s" % (show(p), g.dtype, g.type))
        if limit and len(out) >= limit:
            out.append("... (stopped after %d differences)" % limit)
            break
    return out


# ---------------------------------------------------------------- facts

def resolve_in_tree(root, rel, follow_last=False, max_hops=40):
    """Resolves rel inside root, following symlinks as a chroot would
    (absolute targets restart at root, '..' stops at root). Returns
    (relative bytes path, lstat result) or (path, None) when missing."""
    if isinstance(rel, str):
        rel = os.fsencode(rel)
    todo = [c for c in rel.split(b"/") if c]
    cur = []
    hops = 0
    st = os.lstat(root)
    while todo:
        c = todo.pop(0)
        if c == b".":
            continue
        if c == b"..":
            if cur:
                cur.pop()
            st = os.lstat(os.path.join(os.fsencode(root), *cur) if cur else root)
            continue
        p = os.path.join(os.fsencode(root), *(cur + [c]))
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            return b"/".join(cur + [c] + todo), None
        if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
            hops += 1
            if hops > max_hops:
                raise OSError("too many symlinks resolving %r" % rel)
            t = os.readlink(p)
            if t.startswith(b"/"):
                cur = []
            todo = [x for x in t.split(b"/") if x] + todo
            continue
        cur.append(c)
    return b"/".join(cur), st


def check_facts(root, facts):
    """facts: [(path, kind, expected)] with kind absent|file|dir|symlink|
    follow-file; returns a list of problems."""
    bad = []
    for rel, kind, want in facts:
        try:
            path, st = resolve_in_tree(root, rel, follow_last=(kind == "follow-file"))
        except OSError as e:
            bad.append("%s: %r" % (rel, e))
            continue
        full = os.path.join(os.fsencode(root), path)
        if kind == "absent":
            if st is not None:
                bad.append("%s: should not exist, is a %s" % (rel, TYPE_NAMES.get(
                    stat.S_IFMT(st.st_mode))))
            continue
        if st is None:
            bad.append("%s: missing (expected %s)" % (rel, kind))
            continue
        t = TYPE_NAMES.get(stat.S_IFMT(st.st_mode))
        if kind in ("file", "follow-file"):
            if t != "file":
                bad.append("%s: expected a regular file, is a %s" % (rel, t))
            elif want is not None:
                with open(full, "rb") as f:
                    got = f.read()
                if got != want:
                    bad.append("%s: content %r, expected %r" % (rel, got[:80], want[:80]))
        elif kind == "dir":
            if t != "dir":
                bad.append("%s: expected a directory, is a %s" % (rel, t))
        elif kind == "symlink":
            if t != "symlink":
                bad.append("%s: expected a symlink, is a %s" % (rel, t))
            elif want is not None and os.readlink(full) != want:
                bad.append("%s: symlink to %r, expected %r" % (rel, os.readlink(full), want))
        else:
            raise ValueError(kind)
    return bad


def link_groups(nodes, wanted):
    """Problems with the expected hardlink groups (sets of paths) in a walk."""
    g = _groups(nodes)
    bad = []
    for grp in wanted:
        for p in grp:
            if p not in nodes:
                bad.append("%s: missing (hardlink group %s)" % (show(p), _fmt("links", grp)))
                continue
            have = g.get(p, frozenset([p]))
            if have != grp:
                bad.append("%s: hardlink group %s, expected %s" % (
                    show(p), _fmt("links", have), _fmt("links", grp)))
            if nodes[p].nlink != len(grp):
                bad.append("%s: st_nlink %d, expected %d" % (show(p), nodes[p].nlink, len(grp)))
    return bad


# ---------------------------------------------------------------- tar model

def pax_mtime_ns(member):
    """A member's mtime in ns, exact from the PAX record when there is one."""
    s = member.pax_headers.get("mtime")
    if s is None:
        return int(member.mtime) * 10 ** 9
    neg = s.startswith("-")
    s = s.lstrip("-")
    sec, _, frac = s.partition(".")
    ns = int(sec or "0") * 10 ** 9 + int((frac + "000000000")[:9])
    return -ns if neg else ns


_TAR_IFMT = {tarfile_type: ifmt for tarfile_type, ifmt in (
    (b"0", stat.S_IFREG), (b"\0", stat.S_IFREG), (b"7", stat.S_IFREG), (b"S", stat.S_IFREG),
    (b"5", stat.S_IFDIR), (b"2", stat.S_IFLNK), (b"3", stat.S_IFCHR), (b"4", stat.S_IFBLK),
    (b"6", stat.S_IFIFO))}


def tar_model(tars):
    """{path: Node} of what applying whiteout-free layer tars in order makes,
    read with Python's tarfile (which also reads GNU and PAX sparse members).
    The reference for what no extractor can write (paths beyond PATH_MAX).
    The root gets 0o755 root:root; its mtime is not modelled (None)."""
    import io
    import itertools
    import tarfile
    ids = itertools.count(1)
    nodes = {}

    def mk(path, ifmt, perm):
        n = Node()
        n.path = path
        n.mode = ifmt | perm
        n.uid = n.gid = 0
        n.size = 0
        n.mtime_ns = None
        n.nlink = 1
        n.rdev = None
        n.ino = (0, next(ids))
        n.target = None
        n.xattrs = {}
        n.sha256 = None
        n.dtype = None
        return n

    nodes[b"."] = mk(b".", stat.S_IFDIR, 0o755)
    for tar in tars:
        with tarfile.open(fileobj=io.BytesIO(tar), encoding="utf-8",
                          errors="surrogateescape") as tf:
            for m in tf:
                path = os.fsencode(m.name)
                while path.startswith(b"./"):
                    path = path[2:]
                path = path.rstrip(b"/") or b"."
                base = path.rsplit(b"/", 1)[-1]
                if base.startswith(b".wh."):
                    raise NotImplementedError("tar_model has no whiteouts")
                parent = path.rsplit(b"/", 1)[0] if b"/" in path else b"."
                if parent not in nodes or nodes[parent].type != "dir":
                    raise ValueError("tar_model: %s has no parent directory" % show(path))
                old = nodes.get(path)
                if old is not None and not (old.type == "dir" and m.isdir()):
                    for k in [k for k in nodes if k == path or k.startswith(path + b"/")]:
                        del nodes[k]
                if m.islnk():
                    t = os.fsencode(m.linkname).lstrip(b"/")
                    src = nodes[t]
                    n = mk(path, 0, 0)
                    for f in FIELDS + ("ino",):
                        setattr(n, f, getattr(src, f))
                    n.path = path
                    nodes[path] = n
                    continue
                ifmt = _TAR_IFMT[m.type]
                n = old if (old is not None and old.type == "dir" and m.isdir()) else \
                    mk(path, ifmt, 0)
                n.mode = ifmt | (m.mode & 0o7777)
                n.uid, n.gid = m.uid, m.gid
                n.mtime_ns = pax_mtime_ns(m)
                n.xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                            for k, v in m.pax_headers.items()
                            if k.startswith("SCHILY.xattr.") and v != ""}
                if m.issym():
                    n.target = os.fsencode(m.linkname)
                    n.size = len(n.target)
                elif m.ischr() or m.isblk():
                    n.rdev = os.makedev(m.devmajor, m.devminor)
                elif m.isreg():
                    data = tf.extractfile(m).read()
                    n.size = len(data)
                    n.sha256 = hashlib.sha256(data).hexdigest()
                nodes[path] = n
    # Link counts: files by shared identity, directories 2 + subdirectories.
    by_ino = {}
    for n in nodes.values():
        by_ino.setdefault(n.ino, []).append(n)
    for n in nodes.values():
        if n.type == "dir":
            n.nlink = 2
        else:
            n.nlink = len(by_ino[n.ino])
    for p, n in nodes.items():
        if n.type == "dir" and p != b".":
            parent = p.rsplit(b"/", 1)[0] if b"/" in p else b"."
            nodes[parent].nlink += 1
    return nodes
