"""ucrfs pull / inspect from local sources: `docker save` archives (manifest.json
format from our writer and from skopeo; the legacy `repositories` format Mesos
reads), a `--docker-registry DIR` of archives, and OCI image layouts (our
writer, umoci, multi-arch)."""
import json
import os
import tarfile
import unittest

from lib import images as I
from lib.util import (UcrfsTestCase, host_arch, other_arch, run, sha256_digest, store_snapshot,
                      which)

NOT_FOUND = r"not found|no such|unknown|does not exist"


class DockerArchiveTest(UcrfsTestCase):
    def check_archive_image(self, image_arg, layer_tars, runtime, config_bytes=None, flags=()):
        """pull + inspect; layers are the uncompressed tars, base first."""
        digest = self.assertPulled(self.ucrfs("pull", image_arg, flags=flags))
        info = self.inspect(image_arg, flags=flags)
        self.assertEqual(info.get("digest"), digest, "inspect digest == pulled digest")
        self.assertEqual([(l.get("digest"), l.get("size")) for l in info.get("layers", [])],
                         [(sha256_digest(t), len(t)) for t in layer_tars], "layers, base first")
        for l in info["layers"]:
            self.assertNotIn("gzip", l.get("mediaType", ""), "archive layers are plain tar")
        self.assertRuntimeConfig(info, runtime)
        blobs = {sha256_digest(t): t for t in layer_tars}
        if config_bytes is not None:
            blobs[sha256_digest(config_bytes)] = config_bytes
        self.assertBlobsInStore(blobs)
        self.assertStagingEmpty()
        return info

    def test_manifest_json_archive(self):
        im = I.simple_image("arch", nlayers=2)
        path = os.path.join(self.tmp, "app.tar")
        I.write_docker_archive(path, im, ["it/app:v1"])
        tars = [l.tar for l in im.layers]
        self.check_archive_image("docker-archive:" + path, tars, im.runtime, im.config.data)
        # With the reference it was saved under.
        store2 = os.path.join(self.tmp, "s2")
        self.assertPulled(self.ucrfs("pull", "docker-archive:%s:it/app:v1" % path, store=store2))

    def test_manifest_json_archive_wrong_ref_fails(self):
        # Like skopeo: asking for a tag the archive does not hold is an error,
        # even when the archive holds a single (differently tagged) image.
        im = I.simple_image("arch2", nlayers=1)
        path = os.path.join(self.tmp, "app.tar")
        I.write_docker_archive(path, im, ["it/app:v1"])
        res = self.ucrfs("pull", "docker-archive:%s:it/app:v9" % path)
        self.assertFailedOneLine(res, NOT_FOUND + r"|it/app:v9")

    def test_archive_made_by_skopeo(self):
        if not which("skopeo"):
            self.skipTest("skopeo not installed")
        im = I.simple_image("skarch", nlayers=3)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"v1": im})
        path = os.path.join(self.tmp, "skopeo.tar")
        run(["skopeo", "copy", "oci:%s:v1" % layout, "docker-archive:%s:name:tag" % path])
        with tarfile.open(path) as tf:
            man = json.loads(tf.extractfile("manifest.json").read())
            config = tf.extractfile(man[0]["Config"]).read()
        self.check_archive_image("docker-archive:" + path, [l.tar for l in im.layers],
                                 im.runtime, config)

    def test_legacy_repositories_archive(self):
        t123 = I.make_tar([("temp", b"foo 123")])
        t456 = I.make_tar([("temp", b"bar 456"), ("etc", None), ("etc/motd", b"legacy\n")])
        runtime = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo legacy"],
                   "Env": ["PATH=/bin", "LEGACY=1"], "WorkingDir": "/tmp", "User": "nobody"}
        path = os.path.join(self.tmp, "legacy.tar")
        I.write_legacy_archive(path, {"abc": {"latest": "456"}},
                               [("123", t123, None), ("456", t456, runtime)])
        self.check_archive_image("docker-archive:" + path, [t123, t456], runtime)
        store2 = os.path.join(self.tmp, "s2")
        self.assertPulled(self.ucrfs("pull", "docker-archive:%s:abc" % path, store=store2))
        res = self.ucrfs("pull", "docker-archive:%s:abc:nope" % path, store=store2)
        self.assertFailedOneLine(res, NOT_FOUND + r"|nope")

    def test_docker_registry_dir_mesos_fixture(self):
        # Mesos' local store fixture: images/abc.tar, base json {"parent": ""}.
        images = os.path.join(self.tmp, "images")
        os.makedirs(images)
        t123 = I.make_tar([("temp", b"foo 123")])
        t456 = I.make_tar([("temp", b"bar 456")])
        I.write_legacy_archive(os.path.join(images, "abc.tar"), {"abc": {"latest": "456"}},
                               [("123", t123, None), ("456", t456, None)], base_parent="")
        flags = ["--docker-registry", images]
        self.assertPulled(self.ucrfs("pull", "abc", flags=flags))
        info = self.inspect("abc", flags=flags)
        self.assertEqual([l.get("digest") for l in info.get("layers", [])],
                         [sha256_digest(t123), sha256_digest(t456)], "base first")
        self.assertBlobsInStore({sha256_digest(t123): t123, sha256_digest(t456): t456})

        # `abc:1.0` -> DIR/abc:1.0.tar (Mesos: stringify(reference) + ".tar").
        t789 = I.make_tar([("temp", b"baz 789")])
        I.write_legacy_archive(os.path.join(images, "abc:1.0.tar"), {"abc": {"1.0": "789"}},
                               [("123", t123, None), ("789", t789, None)], base_parent="")
        info = self.inspect("abc:1.0", flags=flags)
        self.assertEqual([l.get("digest") for l in info.get("layers", [])],
                         [sha256_digest(t123), sha256_digest(t789)])
        self.assertPulled(self.ucrfs("pull", "abc:1.0", flags=flags))
        self.assertBlobsInStore({sha256_digest(t789): t789})

        before = store_snapshot(self.store)
        res = self.ucrfs("pull", "nosuchimage", flags=flags)
        # Says the archive is missing and where it was looked for.
        line = self.assertFailedOneLine(res, NOT_FOUND + r"|no archive|failed to find")
        self.assertIn(os.path.join(images, "nosuchimage.tar"), line)
        self.assertStoreUnchanged(before)

    def test_missing_archive_fails(self):
        missing = os.path.join(self.tmp, "missing.tar")
        res = self.ucrfs("pull", "docker-archive:" + missing)
        line = self.assertFailedOneLine(res, NOT_FOUND)
        self.assertIn(missing, line)

    def test_not_an_archive_fails(self):
        path = os.path.join(self.tmp, "garbage.tar")
        with open(path, "wb") as f:
            f.write(b"this is not a tar file\n" * 100)
        res = self.ucrfs("pull", "docker-archive:" + path)
        self.assertFailedOneLine(res)


class OciLayoutTest(UcrfsTestCase):
    def test_oci_layout_by_tag(self):
        a = I.simple_image("layout-a", nlayers=2)
        b = I.simple_image("layout-b", nlayers=1, docker=True)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"a": a, "b": b})
        self.assertPulled(self.ucrfs("pull", "oci:%s:a" % layout), a.manifest.digest)
        self.assertBlobsInStore(a.blobs())
        self.assertStagingEmpty()
        info = self.inspect("oci:%s:a" % layout)
        self.assertEqual(info.get("digest"), a.manifest.digest)
        self.assertLayers(info, a.layer_descs())
        self.assertRuntimeConfig(info, a.runtime)
        self.assertNotIn("indexDigest", info)

        self.assertPulled(self.ucrfs("pull", "oci:%s:b" % layout), b.manifest.digest)
        info = self.inspect("oci:%s:b" % layout)
        self.assertEqual(info.get("mediaType"), I.DOCKER_MANIFEST)
        self.assertLayers(info, b.layer_descs())

    def test_oci_layout_single_image_without_tag(self):
        a = I.simple_image("single", nlayers=1)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"only": a})
        # Like skopeo: with one image in index.json, no tag is needed.
        self.assertPulled(self.ucrfs("pull", "oci:" + layout), a.manifest.digest)

    def test_oci_layout_made_by_umoci(self):
        if not which("umoci"):
            self.skipTest("umoci not installed")
        layout = os.path.join(self.tmp, "umoci")
        src = os.path.join(self.tmp, "hello.txt")
        with open(src, "w") as f:
            f.write("hello from umoci\n")
        run(["umoci", "init", "--layout", layout])
        run(["umoci", "new", "--image", layout + ":t1"])
        run(["umoci", "insert", "--image", layout + ":t1", src, "/opt/hello.txt"])
        run(["umoci", "config", "--image", layout + ":t1", "--config.cmd=/bin/echo",
             "--config.cmd=hi", "--config.env=FOO=bar", "--config.workingdir=/opt",
             "--config.user=1:2"])
        with open(os.path.join(layout, "index.json")) as f:
            entry = json.load(f)["manifests"][0]
        with open(os.path.join(layout, "blobs", "sha256", entry["digest"][7:]), "rb") as f:
            manifest = json.load(f)
        self.assertPulled(self.ucrfs("pull", "oci:%s:t1" % layout), entry["digest"])
        info = self.inspect("oci:%s:t1" % layout)
        self.assertEqual([(l["digest"], l["mediaType"], l["size"]) for l in info["layers"]],
                         [(l["digest"], l["mediaType"], l["size"]) for l in manifest["layers"]])
        self.assertRuntimeConfig(info, {"Cmd": ["/bin/echo", "hi"], "Env": ["FOO=bar"],
                                        "WorkingDir": "/opt", "User": "1:2"})
        blobs = {}
        for d in [manifest["config"]] + manifest["layers"]:
            p = os.path.join(layout, "blobs", "sha256", d["digest"][7:])
            with open(p, "rb") as f:
                blobs[d["digest"]] = f.read()
        self.assertBlobsInStore(blobs)

    def test_oci_layout_index_platform_selection(self):
        index = I.Index([I.simple_image("lmulti", arch=other_arch()),
                         I.simple_image("lmulti", arch=host_arch())])
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"multi": index})
        host, other = index.by_arch(host_arch()), index.by_arch(other_arch())
        ref = "oci:%s:multi" % layout
        info = self.inspect(ref)
        self.assertEqual(info.get("digest"), host.manifest.digest)
        self.assertEqual(info.get("indexDigest"), index.manifest.digest)
        self.assertLayers(info, host.layer_descs())
        info = self.inspect(ref, flags=["--platform", "linux/" + other_arch()])
        self.assertEqual(info.get("digest"), other.manifest.digest)
        self.assertLayers(info, other.layer_descs())
        self.assertPulled(self.ucrfs("pull", ref, flags=["--platform", "linux/" + other_arch()]),
                          other.manifest.digest)
        self.assertBlobsInStore(other.blobs())

    def test_oci_layout_missing_tag_fails(self):
        a = I.simple_image("lmiss", nlayers=1)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"a": a})
        self.assertPulled(self.ucrfs("pull", "oci:%s:a" % layout))
        before = store_snapshot(self.store)
        res = self.ucrfs("pull", "oci:%s:nope" % layout)
        self.assertFailedOneLine(res, NOT_FOUND + r"|nope")
        self.assertStoreUnchanged(before)

    def test_oci_layout_corrupt_blob_fails(self):
        a = I.simple_image("lcorrupt", nlayers=2)
        layout = os.path.join(self.tmp, "layout")
        I.write_oci_layout(layout, {"a": a})
        bad = a.layers[0].desc
        p = os.path.join(layout, "blobs", "sha256", bad.hex)
        data = bytearray(bad.data)
        data[len(data) // 2] ^= 0xFF
        with open(p, "wb") as f:
            f.write(bytes(data))
        res = self.ucrfs("pull", "oci:%s:a" % layout)
        self.assertFailedOneLine(res, bad.hex)
        self.assertFalse(os.path.exists(os.path.join(self.store, "blobs", "sha256", bad.hex)))

    def test_missing_layout_dir_fails(self):
        nowhere = os.path.join(self.tmp, "nowhere")
        res = self.ucrfs("pull", "oci:%s:a" % nowhere)
        line = self.assertFailedOneLine(res, NOT_FOUND + r"|not an OCI (image )?layout")
        self.assertIn(nowhere, line)


if __name__ == "__main__":
    unittest.main()
