#!/usr/bin/env python3
"""Tree walk and file reads: a ucrfs mount against the same image unpacked by
`umoci unpack` to a native ext4/xfs directory (the peer), same run.

The image is one tar+gzip layer of real files from this machine: /usr/share
then /usr/lib in sorted walk order, regular files over --max-file-kib left out,
until --entries entries or --mib MiB of file data. The OCI layout is written
directly; `umoci unpack` makes the native rootfs, `ucrfs mount oci:…` serves
the same layout (the first mount imports, indexes and merges it; both of those
one-off times are reported too, single run).

Measured, --runs times each, medians:
  walk   `find DIR -printf '%s %m\\n'` (an lstat of every entry), same walker
         for both;
  read   every regular file read to its end (1 MiB reads, sorted walk order),
         by the same Python reader for both.
"cold": `sync; echo 3 > /proc/sys/vm/drop_caches` before, and for ucrfs also
a remount, so the kernel's FUSE dentry/attr/page caches are empty; "warm": the
same walk/read again right after. Ratios are ucrfs / native (lower is
better; the target for the warm walk is <= 1.5 in wall time). CPU seconds are
user+sys of the walker or reader plus, for ucrfs, of the FUSE server process
(for a native directory the same work is kernel time of the walker): a
figure that other load on the machine skews far less than wall time, which
for FUSE is round trips that each wait for a CPU.

  python3 bench/walk_bench.py --ucrfs build-bench/tools/ucrfs [--entries 100000] [--mib 500] [--runs 3] [--no-read]
"""
import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import busy_note, finish_layout

READER = r"""
import os, sys
buf = bytearray(1 << 20); mv = memoryview(buf); total = files = 0
def walk(d):
    global total, files
    with os.scandir(d) as it:
        ents = sorted(it, key=lambda e: e.name)
    for e in ents:
        if e.is_dir(follow_symlinks=False):
            walk(e.path)
        elif e.is_file(follow_symlinks=False):
            with open(os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW), "rb", buffering=0) as f:
                while n := f.readinto(mv):
                    total += n
            files += 1
walk(sys.argv[1])
print(files, total)
"""


def pick_files(max_entries, max_bytes, max_file, roots):
    out, used = [], 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk("/" + root):
            dirnames.sort()
            out.append(dirpath[1:])
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]  # not walked
            for name in sorted(filenames + links):
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.isfile(p) and not os.path.islink(p):
                    if st.st_size > max_file:
                        continue
                    used += st.st_size
                out.append(p[1:])
            if len(out) >= max_entries or used >= max_bytes:
                return out, used
    return out, used


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def make_layout(work, a):
    files, used = pick_files(a.entries, a.mib << 20, a.max_file_kib << 10, ["usr/share", "usr/lib"])
    lst = os.path.join(work, "files.lst")
    with open(lst, "wb") as f:
        for p in files:
            f.write(p.encode() + b"\0")
    layout = os.path.join(work, "oci")
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    tar_path = os.path.join(work, "layer.tar")
    subprocess.run(["tar", "-C", "/", "--format=gnu", "--numeric-owner", "--no-recursion", "--null",
                    "-T", lst, "-cf", tar_path], check=True)
    diff_id = "sha256:" + sha256_file(tar_path)
    gz_tmp = os.path.join(work, "layer.tar.gz")
    with open(gz_tmp, "wb") as out:
        subprocess.run(["gzip", "-6", "-c", tar_path], stdout=out, check=True)
    tar_size = os.path.getsize(tar_path)
    os.unlink(tar_path)
    d = sha256_file(gz_tmp)
    gz_size = os.path.getsize(gz_tmp)
    os.rename(gz_tmp, os.path.join(blobs, d))

    finish_layout(layout, [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": "sha256:" + d, "size": gz_size}], [diff_id])
    return layout, len(files), used, tar_size, gz_size


def run(cmd, timeout=600):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-600:]}")
    return p.stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Ucrfs:
    def __init__(self, binary, store, image, mnt):
        self.binary, self.store, self.image, self.mnt = binary, store, image, mnt

    def mount(self):
        run([self.binary, "--store", self.store, "mount", self.image, self.mnt], timeout=900)

    def umount(self):
        if is_mounted(self.mnt):
            run([self.binary, "--store", self.store, "umount", self.mnt], timeout=60)

    def force_cleanup(self):
        try:
            self.umount()
        except Exception as e:  # noqa: BLE001 - best effort, then the lazy kernel unmount
            print(f"umount: {e}; detaching", file=sys.stderr)
            subprocess.run(["umount", "-l", self.mnt], timeout=30)


def server_pid(mnt):
    """The mount server's pid, from the record `ucrfs mount` keeps (mount_cmds.cc)."""
    rec = os.path.join("/run/ucrfs/mounts", hashlib.sha256(os.path.realpath(mnt).encode()).hexdigest())
    with open(rec) as f:
        return int(f.readline())


def proc_cpu(pid):
    """user+sys seconds of a process and all its threads, dead ones included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd, pid=None):
    """Wall and CPU seconds of cmd; CPU includes the FUSE server's (pid), which
    does the work the kernel does for a native directory."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = proc_cpu(pid) if pid else 0.0
    t = time.monotonic()
    out = run(cmd)
    wall = time.monotonic() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1 = proc_cpu(pid) if pid else 0.0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) + (s1 - s0)
    return wall, cpu, out


def walk(d, pid):
    wall, cpu, out = measure(["find", d, "-printf", "%s %m\n"], pid)
    return wall, cpu, out.count(b"\n")


def read_all(d, pid):
    wall, cpu, out = measure([sys.executable, "-c", READER, d], pid)
    files, total = out.split()
    return wall, cpu, (int(files), int(total))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ucrfs", default="build-bench/tools/ucrfs")
    ap.add_argument("--work", default="/tmp", help="a temporary directory is made (and removed) here")
    ap.add_argument("--entries", type=int, default=100000, help="at most this many tar entries")
    ap.add_argument("--mib", type=int, default=500, help="at most about this much file data")
    ap.add_argument("--max-file-kib", type=int, default=256, help="leave out regular files larger than this")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-read", action="store_true", help="walks only")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (drop_caches, FUSE mounts)")
    binary = os.path.abspath(a.ucrfs)
    load0 = os.getloadavg()[0]
    try:
        os.nice(-20)  # every process measured inherits it: less skew from other work on the machine
    except OSError:
        pass
    work = tempfile.mkdtemp(prefix="ucrfs-walk-bench-", dir=a.work)
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    fs = None
    try:
        print("building the image ...", flush=True)
        layout, n_entries, data_bytes, tar_size, gz_size = make_layout(work, a)
        native = os.path.join(work, "bundle", "rootfs")
        t = time.monotonic()
        run(["umoci", "unpack", "--image", f"{layout}:bench", os.path.join(work, "bundle")], timeout=900)
        t_unpack = time.monotonic() - t
        fs = Ucrfs(binary, os.path.join(work, "store"), f"oci:{layout}:bench", mnt)
        t = time.monotonic()
        fs.mount()
        t_mount = time.monotonic() - t

        res = {k: [] for k in ("walk cold", "walk warm", "read cold", "read warm")}
        counts = {}
        for _ in range(a.runs):
            for name, d in (("native", native), ("ucrfs", mnt)):
                for op, fn in (("walk", walk), ("read", read_all)):
                    if op == "read" and a.no_read:
                        continue
                    # Cold: page cache dropped, and for ucrfs a fresh mount so
                    # the kernel's FUSE dentry and attribute caches are empty.
                    if name == "ucrfs":
                        fs.umount()
                    drop_caches()
                    if name == "ucrfs":
                        fs.mount()
                    pid = server_pid(mnt) if name == "ucrfs" else None
                    for kind in ("cold", "warm"):
                        w, c, n = fn(d, pid)
                        res[f"{op} {kind}"].append((name, w, c))
                        counts[(name, op)] = n
        fs.umount()

        print(f"image: 1 gzip layer, {n_entries} entries, {data_bytes / 1e6:.0f} MB of file data "
              f"(tar {tar_size / 1e6:.0f} MB, gzip -6 {gz_size / 1e6:.0f} MB), files over {a.max_file_kib} KiB "
              f"left out; median of {a.runs} runs, {os.cpu_count()} cores")
        print(f"one-off: umoci unpack {t_unpack:.1f} s; first ucrfs mount (import + index + merge) {t_mount:.1f} s")
        print(f"walk: find -printf '%s %m' lines: native {counts[('native', 'walk')]}, "
              f"ucrfs {counts[('ucrfs', 'walk')]}")
        if not a.no_read:
            print(f"read: files, bytes: native {counts[('native', 'read')]}, ucrfs {counts[('ucrfs', 'read')]}")
        print(f"{'':10} {'native s':>9} {'ucrfs s':>8} {'ratio':>6}   {'native cpu s':>12} {'ucrfs cpu s':>11} {'ratio':>6}")
        for kind, rs in res.items():
            if not rs:
                continue
            med = {who: (statistics.median(r[1] for r in rs if r[0] == who),
                         statistics.median(r[2] for r in rs if r[0] == who)) for who in ("native", "ucrfs")}
            (nw, nc), (uw, uc) = med["native"], med["ucrfs"]
            extra = ""
            if kind == "walk warm":
                extra = "  (target wall <= 1.5: " + ("met" if uw / nw <= 1.5 else "NOT met") + ")"
            print(f"{kind:10} {nw:9.3f} {uw:8.3f} {uw / nw:6.2f}   {nc:12.3f} {uc:11.3f} {uc / nc:6.2f}{extra}")
        print(busy_note(load0))
    finally:
        if fs:
            fs.force_cleanup()
        if a.keep:
            print(f"kept {work}")
        elif is_mounted(mnt):
            print(f"{mnt} is still mounted: left {work} in place", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
