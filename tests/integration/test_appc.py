"""Appc images (`appc:NAME[,LABEL=VALUE]...[@ID]`) by simple discovery, after
Mesos' provisioner_appc_tests.cpp (AppcImageFetcherTest.SimpleFileFetch and
CURL_SimpleHttpFetch, AppcStoreTest, ROOT_SimpleLinuxImageTest) and what it
left untested (dependencies, image ids):

- ACIs are built here with Python's tarfile (manifest + rootfs/, gzip'ed or
  not) and found under a directory prefix (plain path and file://) and from
  an HTTP server on 127.0.0.1 started by the test;
- the store keeps each ACI's uncompressed tar under sha512:<image id>, and
  the image id is the sha512 of that tar, computed here independently;
- an image with a dependency mounts (fuse, overlay, copy) as the tree that
  applying the dependency's rootfs and then the image's gives (lib/treecmp's
  tar_model of the rootfs tars): files of both, the image winning a conflict,
  nothing from outside rootfs/;
- a wrong image id (the reference's or a dependency's) and a missing image
  fail with one line naming it, and leave no image in the store.
"""
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import unittest

from lib import treecmp as T
from lib.mounts import MountTestCase
from lib.util import UcrfsTestCase, host_arch

MTIME = 1700000000


def appc_arch():
    return {"arm64": "aarch64", "386": "i386", "arm": "armv7l"}.get(host_arch(), host_arch())


def manifest(name, version="1.0.0", deps=(), app=None, **extra):
    m = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
         "labels": [{"name": "version", "value": version}, {"name": "os", "value": "linux"},
                    {"name": "arch", "value": appc_arch()}],
         "annotations": [{"name": "created", "value": "2024-01-02T03:04:05Z"}]}
    if deps:
        m["dependencies"] = list(deps)
    if app:
        m["app"] = app
    m.update(extra)
    return m


def _add(tf, prefix, spec):
    """spec: list of (path, kind, arg, mode): kind file (arg bytes), dir,
    symlink (arg target), hardlink (arg target path)."""
    for path, kind, arg, mode in spec:
        ti = tarfile.TarInfo(prefix + path)
        ti.mtime = MTIME
        ti.mode = mode
        ti.uid, ti.gid = 0, 0
        if kind == "file":
            ti.size = len(arg)
            tf.addfile(ti, io.BytesIO(arg))
            continue
        if kind == "dir":
            ti.type = tarfile.DIRTYPE
        elif kind == "symlink":
            ti.type, ti.linkname = tarfile.SYMTYPE, arg
        elif kind == "hardlink":
            ti.type, ti.linkname = tarfile.LNKTYPE, prefix + arg
        tf.addfile(ti)


def rootfs_tar(spec):
    """The rootfs alone, as a layer tar: what tar_model applies."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "", spec)
    return buf.getvalue()


def aci_tar(m, spec):
    """The uncompressed ACI: manifest, rootfs/ and, outside it, a file that
    must not reach the filesystem."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        body = json.dumps(m).encode()
        ti = tarfile.TarInfo("manifest")
        ti.size, ti.mtime = len(body), MTIME
        tf.addfile(ti, io.BytesIO(body))
        _add(tf, "", [("rootfs", "dir", None, 0o755)])
        _add(tf, "rootfs/", spec)
        _add(tf, "", [("README-outside-rootfs", "file", b"not in the filesystem\n", 0o644)])
    return buf.getvalue()


def image_id(tar):
    return "sha512-" + hashlib.sha512(tar).hexdigest()


BASE_SPEC = [
    ("bin", "dir", None, 0o755),
    ("bin/tool", "file", b"#!/bin/sh\necho base tool\n", 0o755),
    ("etc", "dir", None, 0o755),
    ("etc/motd", "file", b"from the base\n", 0o644),
    ("etc/base-only", "file", b"base\n", 0o600),
    ("etc/link", "symlink", "motd", 0o777),
    ("tmp", "dir", None, 0o1777),
]
TOP_SPEC = [
    ("etc", "dir", None, 0o755),
    ("etc/motd", "file", b"from the image\n", 0o644),
    ("app", "dir", None, 0o750),
    ("app/run", "file", b"#!/bin/sh\nexec /bin/tool\n", 0o4755),
    ("app/run-again", "hardlink", "app/run", 0o4755),
]


class AciServer:
    """A directory of ACIs served over HTTP on 127.0.0.1 (python's
    http.server in a thread), counting requests per path."""

    def __init__(self, root):
        self.root = root
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=root))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def prefix(self):
        return "http://127.0.0.1:%d/" % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AppcCase(UcrfsTestCase):
    def setUp(self):
        super().setUp()
        self.aci_dir = self.path("aci", "x")[:-2]
        os.makedirs(self.aci_dir, exist_ok=True)

    def put(self, m, spec, compress=True, version=None):
        """Writes NAME-VERSION-linux-ARCH.aci under the ACI directory; returns
        the uncompressed tar and its image id."""
        tar = aci_tar(m, spec)
        version = version or [l["value"] for l in m["labels"] if l["name"] == "version"][0]
        path = os.path.join(self.aci_dir, "%s-%s-linux-%s.aci" % (m["name"], version, appc_arch()))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(gzip.compress(tar, mtime=0) if compress else tar)
        return tar, image_id(tar)

    def serve(self):
        s = AciServer(self.aci_dir)
        self.addCleanup(s.close)
        return s

    def flags(self, prefix):
        return ("--appc-simple-discovery-uri-prefix", prefix)

    def two_images(self):
        """example.com/base and example.com/app depending on it by name and id."""
        base_tar, base_id = self.put(manifest("example.com/base"), BASE_SPEC)
        app_m = manifest("example.com/app", deps=[
            {"imageName": "example.com/base", "imageID": base_id,
             "labels": [{"name": "version", "value": "1.0.0"}]}],
            app={"exec": ["/app/run", "--now"], "user": "0", "group": "0",
                 "workingDirectory": "/app",
                 "environment": [{"name": "GREETING", "value": "hello"}]})
        top_tar, top_id = self.put(app_m, TOP_SPEC, compress=False)
        return base_tar, base_id, top_tar, top_id

    def assertNoImages(self):
        res = self.ucrfs("images", "--json")
        if res.returncode == 0:
            self.assertEqual(json.loads(res.stdout), [], "images in the store after a failed pull")


class AppcPullTest(AppcCase):
    def check_pulled(self, res, ref, tars_ids):
        self.assertSucceeded(res)
        info = self.inspect(ref, flags=self.flags(self.aci_dir + "/"))
        self.assertEqual([l["digest"] for l in info["layers"]],
                         ["sha512:" + i[len("sha512-"):] for _, i in tars_ids])
        for tar, i in tars_ids:
            blob = os.path.join(self.store, "blobs", "sha512", i[len("sha512-"):])
            with open(blob, "rb") as f:
                self.assertEqual(f.read(), tar, "the store keeps the uncompressed ACI")
        return info

    def test_directory_prefix_plain_and_file_url(self):
        tar, iid = self.put(manifest("example.com/hello", app={"exec": ["/bin/hello"]}), BASE_SPEC)
        ref = "appc:example.com/hello,version=1.0.0"
        res = self.ucrfs("pull", ref, flags=self.flags(self.aci_dir + "/"))
        info = self.check_pulled(res, ref, [(tar, iid)])
        self.assertEqual(info["mediaType"], "application/vnd.ucrfs.appc.image.v1+json")
        self.assertEqual(info["platform"], {"os": "linux", "architecture": appc_arch()})
        self.assertEqual(info["config"]["exec"], ["/bin/hello"])
        self.assertEqual(info["reference"],
                         "appc:example.com/hello,arch=%s,os=linux,version=1.0.0" % appc_arch())
        # file:// names the same place; the image id pins the same bytes.
        store2 = self.path("store2")
        res = self.ucrfs("pull", ref + "@" + iid, store=store2, flags=self.flags("file://" + self.aci_dir + "/"))
        self.assertSucceeded(res)
        self.assertEqual(res.stdout.strip(), self.ucrfs("pull", ref, flags=self.flags(self.aci_dir + "/"))
                         .stdout.strip())

    def test_http_prefix_and_inspect_shows_the_app(self):
        base_tar, base_id, top_tar, top_id = self.two_images()
        srv = self.serve()
        ref = "appc:example.com/app,version=1.0.0"
        res = self.ucrfs("pull", ref, flags=self.flags(srv.prefix))
        self.assertSucceeded(res)
        self.assertIn("/example.com/app-1.0.0-linux-%s.aci" % appc_arch(), srv.requests)
        self.assertIn("/example.com/base-1.0.0-linux-%s.aci" % appc_arch(), srv.requests)
        info = self.check_pulled(res, ref, [(base_tar, base_id), (top_tar, top_id)])
        # The config is the image's own manifest (Mesos used its first
        # dependency's), shown as its app.
        self.assertEqual(info["config"]["exec"], ["/app/run", "--now"])
        self.assertEqual(info["config"]["workingDirectory"], "/app")
        self.assertEqual(info["created"], "2024-01-02T03:04:05Z")
        text = self.ucrfs("inspect", ref, flags=self.flags(srv.prefix))
        self.assertSucceeded(text)
        out = text.stdout
        self.assertIn('Entrypoint:  ["/app/run","--now"]', out)
        self.assertIn("GREETING=hello", out)
        self.assertIn("User:        0:0", out)
        # Pulled images are mounted without the network: a second pull of the
        # dependency by id is served from the store.
        n = len(srv.requests)
        res = self.ucrfs("pull", "appc:example.com/base,version=1.0.0@" + base_id, flags=self.flags(srv.prefix))
        self.assertSucceeded(res)
        self.assertEqual(len(srv.requests), n, "an image named by a stored id was fetched again")

    def test_wrong_image_id_refused(self):
        tar, iid = self.put(manifest("example.com/hello"), BASE_SPEC)
        wrong = "sha512-" + "0" * 128
        res = self.ucrfs("pull", "appc:example.com/hello,version=1.0.0@" + wrong,
                         flags=self.flags(self.aci_dir + "/"))
        self.assertFailedOneLine(res, "image id is %s, but %s was asked for" % (iid, wrong))
        self.assertNoImages()
        self.assertStagingEmpty()

    def test_wrong_dependency_id_refused(self):
        self.put(manifest("example.com/base"), BASE_SPEC)
        wrong = "sha512-" + "f" * 128
        self.put(manifest("example.com/app", deps=[{"imageName": "example.com/base", "imageID": wrong,
                                                    "labels": [{"name": "version", "value": "1.0.0"}]}]),
                 TOP_SPEC)
        srv = self.serve()
        res = self.ucrfs("pull", "appc:example.com/app,version=1.0.0", flags=self.flags(srv.prefix))
        self.assertFailedOneLine(res, "dependency example.com/base.*but %s was asked for" % wrong)
        self.assertNoImages()

    def test_missing_image_names_the_url(self):
        srv = self.serve()
        url = srv.prefix + "example.com/nothing-2.0-linux-%s.aci" % appc_arch()
        res = self.ucrfs("pull", "appc:example.com/nothing,version=2.0", flags=self.flags(srv.prefix))
        self.assertFailedOneLine(res, "not found at %s" % url)
        path = os.path.join(self.aci_dir, "example.com/nothing-2.0-linux-%s.aci" % appc_arch())
        res = self.ucrfs("pull", "appc:example.com/nothing,version=2.0", flags=self.flags(self.aci_dir + "/"))
        self.assertFailedOneLine(res, "not found at %s" % path)
        self.assertNoImages()

    def test_bad_references_and_prefixes(self):
        for ref, why in [("appc:Example.com/x", "character 'E'"),
                         ("appc:x,version=../../etc", "version"),
                         ("appc:x@sha512-abc", "sha512-<128")]:
            res = self.ucrfs("pull", ref, flags=self.flags(self.aci_dir + "/"))
            self.assertFailedOneLine(res, why)
        res = self.ucrfs("pull", "appc:x", flags=self.flags("ftp://host/"))
        self.assertFailedOneLine(res, "--appc-simple-discovery-uri-prefix")

    def test_not_an_aci_refused(self):
        path = os.path.join(self.aci_dir, "example.com/junk-1.0.0-linux-%s.aci" % appc_arch())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(gzip.compress(rootfs_tar(BASE_SPEC)))  # no manifest
        res = self.ucrfs("pull", "appc:example.com/junk,version=1.0.0", flags=self.flags(self.aci_dir + "/"))
        self.assertFailedOneLine(res, "no manifest")
        self.assertNoImages()


class AppcMountTest(AppcCase, MountTestCase):
    def expected(self):
        return T.tar_model([rootfs_tar(BASE_SPEC), rootfs_tar(TOP_SPEC)])

    def test_mount_image_with_dependency(self):
        self.two_images()
        srv = self.serve()
        _, mp = self.mount("appc:example.com/app,version=1.0.0", flags=self.flags(srv.prefix))
        got, errors = T.walk(mp)
        self.assertEqual(errors, [])
        diffs = T.compare(self.expected(), got, T.default_exclusions(root_has_entry=False), limit=40)
        self.assertEqual(diffs, [], "appc mount vs the model of base + image rootfs")
        self.assertEqual(self.read_in_mount(mp, "etc/motd"), b"from the image\n")
        self.assertEqual(self.read_in_mount(mp, "etc/base-only"), b"base\n")
        self.assertFalse(os.path.lexists(os.path.join(mp, "manifest")))
        self.assertFalse(os.path.lexists(os.path.join(mp, "README-outside-rootfs")))
        self.umount(mp)

    def essentials(self, nodes):
        return {p: (n.type, n.mode, n.uid, n.gid, n.sha256, n.target,
                    n.size if n.type != "dir" else None)
                for p, n in nodes.items() if p != b"."}

    def test_backends_overlay_and_copy(self):
        self.two_images()
        want = self.essentials(self.expected())
        for backend in ("overlay", "copy"):
            mp = self.mountpoint("rootfs-" + backend)
            self.addCleanup(lambda m=mp: self.ucrfs("umount", m, timeout=60))
            res = self.ucrfs("mount", "--backend", backend, "appc:example.com/app,version=1.0.0", mp,
                             flags=self.flags(self.aci_dir + "/"), timeout=300)
            self.assertSucceeded(res)
            got, errors = T.walk(mp)
            self.assertEqual(errors, [])
            self.assertEqual(self.essentials(got), want, "%s rootfs vs the model" % backend)
            self.assertSucceeded(self.ucrfs("umount", mp, timeout=60))
            self.assertEqual(os.listdir(mp), [])


if __name__ == "__main__":
    unittest.main()
