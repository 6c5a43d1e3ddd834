"""The startup benchmark's image: Debian bookworm (debootstrap minbase) with
python3-numpy and python3-scipy, as an OCI layout of three gzip layers made
by umoci, each the diff of one step over the one before:

  1. the debootstrap --variant=minbase base        (tag "base")
  2. + python3                                      (tag "python")
  3. + python3-numpy python3-scipy                  (tag "bench", the image)

apt runs in a chroot with /proc mounted and the host's /dev bound only while
it installs (both unmounted before the layer is packed); apt's lists and
caches and the copied resolv.conf are removed from every layer. The layout is
built once under the cache directory and reused while its stamp file is
there; the .deb files are kept in the cache too, so a build that failed half
way does not download them again.

  python3 bench/startup/image.py [--cache DIR]   # build (or show) the cached image
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
TAG = "bench"
STEPS = (("python", ["python3"]), (TAG, ["python3-numpy", "python3-scipy"]))
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh(cmd, **kw):
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def unmount(path):
    if mounted(path):
        if subprocess.run(["umount", path]).returncode != 0:
            subprocess.run(["umount", "-l", path])


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def tidy(rootfs):
    """What no layer should carry: apt's package lists and caches, the host's
    resolv.conf and hostname that debootstrap copies in, debootstrap's /dev
    nodes (a container runtime provides /dev)."""
    lists = os.path.join(rootfs, "var/lib/apt/lists")
    for name in os.listdir(lists) if os.path.isdir(lists) else ():
        if name != "partial":
            remove(os.path.join(lists, name))
    cache = os.path.join(rootfs, "var/cache/apt")
    for name in os.listdir(cache) if os.path.isdir(cache) else ():
        if name.endswith(".bin"):
            remove(os.path.join(cache, name))
    archives = os.path.join(cache, "archives")
    for name in os.listdir(archives) if os.path.isdir(archives) else ():
        if name.endswith(".deb"):
            remove(os.path.join(archives, name))
    for rel in ("etc/resolv.conf", "etc/hostname"):
        remove(os.path.join(rootfs, rel))
    dev = os.path.join(rootfs, "dev")
    if mounted(dev):
        raise RuntimeError(f"{dev} is mounted: not emptying it")
    for name in os.listdir(dev):
        remove(os.path.join(dev, name))


def apt_install(rootfs, packages, debs):
    """apt-get install in a chroot: /proc, /dev and the .deb cache mounted only
    for the duration."""
    proc, dev = os.path.join(rootfs, "proc"), os.path.join(rootfs, "dev")
    archives = os.path.join(rootfs, "var/cache/apt/archives")
    os.makedirs(archives, exist_ok=True)
    shutil.copy("/etc/resolv.conf", os.path.join(rootfs, "etc/resolv.conf"))
    env = {"PATH": ENV_PATH.split("=", 1)[1], "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    try:
        sh(["mount", "-t", "proc", "proc", proc])
        sh(["mount", "--bind", "/dev", dev])
        sh(["mount", "--bind", debs, archives])
        sh(["chroot", rootfs, "apt-get", "update", "-q"], env=env)
        # No `apt-get clean`: it would empty the bound .deb cache; tidy()
        # removes what apt leaves in the image once this is unmounted.
        sh(["chroot", rootfs, "apt-get", "install", "-y", "-q"] + packages, env=env)
    finally:
        for m in (archives, dev, proc):
            unmount(m)
    for m in (archives, dev, proc):
        if mounted(m):
            raise RuntimeError(f"{m} is still mounted")


def du_bytes(path):
    out = subprocess.run(["du", "-s", "-b", "--apparent-size", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def layout_sizes(layout, tag):
    """[{digest, size, tarSize}] of the tag's layers: compressed and
    uncompressed bytes (measured by decompressing: `gzip -l` is wrong past
    4 GiB)."""
    def blob(d):
        return os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
    with open(os.path.join(layout, "index.json")) as f:
        idx = json.load(f)
    m = next(m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    with open(blob(m["digest"])) as f:
        man = json.load(f)
    layers = []
    for l in man["layers"]:
        p = subprocess.run(f"gzip -dc '{blob(l['digest'])}' | wc -c", shell=True, capture_output=True,
                           text=True, check=True)
        layers.append({"digest": l["digest"], "size": l["size"], "tarSize": int(p.stdout)})
    return layers


def build(cache):
    """Builds the layout in cache/oci unless cache/image.json says it is done;
    returns that record: layout path, tag, layers, sizes."""
    stamp = os.path.join(cache, "image.json")
    layout = os.path.join(cache, "oci")
    if os.path.exists(stamp):
        with open(stamp) as f:
            rec = json.load(f)
        if os.path.isdir(layout):
            return rec
    for tool in ("debootstrap", "umoci", "chroot"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install {tool})")
    os.makedirs(cache, exist_ok=True)
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    bundle = os.path.join(cache, "bundle")
    for d in (layout, bundle):
        if os.path.exists(d):
            shutil.rmtree(d)
    t0 = time.monotonic()
    print(f"building the image in {cache} (debootstrap {SUITE} from {MIRROR}) ...", flush=True)
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:empty"])
    sh(["umoci", "unpack", "--image", f"{layout}:empty", bundle])
    rootfs = os.path.join(bundle, "rootfs")
    sh(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, rootfs, MIRROR],
       stdout=subprocess.DEVNULL)
    tidy(rootfs)
    sh(["umoci", "repack", "--refresh-bundle", "--history.created_by", "debootstrap --variant=minbase " + SUITE,
        "--image", f"{layout}:base", bundle])
    prev = "base"
    for tag, packages in STEPS:
        apt_install(rootfs, packages, debs)
        tidy(rootfs)
        sh(["umoci", "repack", "--refresh-bundle", "--history.created_by", "apt-get install " + " ".join(packages),
            "--image", f"{layout}:{tag}", bundle])
        prev = tag
    unpacked = du_bytes(rootfs)
    sh(["umoci", "config", "--image", f"{layout}:{prev}", "--tag", TAG,
        "--config.env", ENV_PATH, "--config.cmd", "/usr/bin/python3"])
    for tag in ("empty", "base", "python"):
        sh(["umoci", "rm", "--image", f"{layout}:{tag}"])
    sh(["umoci", "gc", "--layout", layout])
    shutil.rmtree(bundle)
    layers = layout_sizes(layout, TAG)
    rec = {"layout": layout, "tag": TAG, "suite": SUITE, "packages": [p for _, ps in STEPS for p in ps],
           "layers": layers, "compressed": sum(l["size"] for l in layers),
           "tarBytes": sum(l["tarSize"] for l in layers), "unpacked": unpacked,
           "buildSeconds": round(time.monotonic() - t0, 1)}
    with open(stamp + ".tmp", "w") as f:
        json.dump(rec, f, indent=1)
    os.rename(stamp + ".tmp", stamp)
    return rec


def describe(rec):
    mb = 1e6
    per = ", ".join(f"{l['size'] / mb:.0f}" for l in rec["layers"])
    return (f"image: debootstrap {rec['suite']} minbase + {' '.join(rec['packages'])}: "
            f"{len(rec['layers'])} gzip layers ({per} MB), {rec['compressed'] / mb:.0f} MB compressed, "
            f"{rec['tarBytes'] / mb:.0f} MB of tar, {rec['unpacked'] / mb:.0f} MB unpacked (file data)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/var/tmp/ucrfs-bench-startup")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (debootstrap, chroot, mounts)")
    print(describe(build(os.path.abspath(a.cache))))


if __name__ == "__main__":
    main()
