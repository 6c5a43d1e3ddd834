"""ucrfs pull / inspect against a real registry (Debian's docker-registry,
distribution 2.8) on loopback: plain HTTP, TLS with a throwaway CA, htpasswd
Basic auth, multi-platform indexes, zstd and uncompressed layers, errors."""
import base64
import json
import os
import unittest

from lib import images as I
from lib.registry import Pusher, RealRegistry, make_ca_and_cert, make_htpasswd, ssl_context_for
from lib.util import (UcrfsTestCase, free_port, host_arch, other_arch, run, sha256_digest,
                      store_snapshot, which, write_docker_config)

NOT_FOUND = r"not found|unknown|404|no such"
UNAUTHORIZED = r"unauthori[sz]ed|401"
CERTIFICATE = r"certificate|x509|tls|ssl|verif"


class RegistryCase(UcrfsTestCase):
    """Starts one registry per class (setUpClass) and stops it afterwards."""

    required_tools = ("docker-registry",)
    registry_host = "127.0.0.1"
    tls = False
    auth = None  # (user, password)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tls = None
        cls.ca = None
        ctx = None
        if cls.tls:
            cls.ca, crt, key = make_ca_and_cert(os.path.join(cls.class_tmp, "pki"),
                                                ip=cls.registry_host)
            tls = (crt, key)
            ctx = ssl_context_for(cls.ca)
        htpasswd = None
        if cls.auth:
            htpasswd = make_htpasswd(os.path.join(cls.class_tmp, "htpasswd"), *cls.auth)
        cls.registry = RealRegistry(os.path.join(cls.class_tmp, "registry"),
                                    host=cls.registry_host, tls=tls, htpasswd=htpasswd)
        cls.addClassCleanup(cls.registry.stop)
        cls.registry.start(ssl_context=ctx)
        cls.pusher = Pusher(cls.registry.url, auth=cls.auth, ssl_context=ctx)
        cls.addr = cls.registry.addr

    def ref(self, repo_tag):
        return "%s/%s" % (self.addr, repo_tag)


class PlainRegistryTest(RegistryCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.app = I.simple_image("app", nlayers=2)
        cls.pusher.push_image("it/app", cls.app, "v1")
        cls.other = I.simple_image("other", nlayers=1)
        cls.pusher.push_image("it/other", cls.other, "v1")

    def test_pull_two_layer_gzip_image(self):
        res = self.ucrfs("pull", self.ref("it/app:v1"))
        # The digest of exactly the manifest bytes we pushed.
        self.assertPulled(res, sha256_digest(self.app.manifest.data))
        self.assertBlobsInStore(self.app.blobs())
        self.assertStagingEmpty()

    def test_pull_docker_transport_prefix(self):
        res = self.ucrfs("pull", "docker://" + self.ref("it/app:v1"))
        self.assertPulled(res, self.app.manifest.digest)
        self.assertBlobsInStore(self.app.blobs())

    def test_inspect_remote_then_from_store(self):
        info = self.inspect(self.ref("it/app:v1"))
        self.assertIn("it/app", info.get("reference", ""))
        self.assertEqual(info.get("digest"), self.app.manifest.digest)
        self.assertEqual(info.get("mediaType"), I.OCI_MANIFEST)
        self.assertNotIn("indexDigest", info, "a plain manifest has no index")
        self.assertEqual((info.get("platform") or {}).get("architecture"), "amd64")
        self.assertEqual((info.get("platform") or {}).get("os"), "linux")
        self.assertLayers(info, self.app.layer_descs())
        self.assertRuntimeConfig(info, self.app.runtime)
        # inspect of an image not pulled fetches no layers.
        for l in self.app.layers:
            self.assertFalse(os.path.exists(os.path.join(self.store, "blobs", "sha256", l.desc.hex)),
                             "inspect must not fetch layer blobs")

        self.assertPulled(self.ucrfs("pull", self.ref("it/app:v1")), self.app.manifest.digest)
        again = self.inspect(self.ref("it/app:v1"))
        for key in ("digest", "mediaType", "layers", "config"):
            self.assertEqual(again.get(key), info.get(key), "inspect after pull: " + key)

    def test_pull_by_digest(self):
        ref = self.ref("it/app@" + self.app.manifest.digest)
        self.assertPulled(self.ucrfs("pull", ref), self.app.manifest.digest)
        self.assertBlobsInStore(self.app.blobs())
        info = self.inspect(ref)
        self.assertEqual(info.get("digest"), self.app.manifest.digest)
        self.assertLayers(info, self.app.layer_descs())

    def test_docker_schema2_image(self):
        im = I.simple_image("d2", nlayers=2, docker=True)
        self.pusher.push_image("it/d2", im, "latest")
        # No tag: "latest" is implied.
        self.assertPulled(self.ucrfs("pull", self.ref("it/d2")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        info = self.inspect(self.ref("it/d2:latest"))
        self.assertEqual(info.get("mediaType"), I.DOCKER_MANIFEST)
        self.assertLayers(info, im.layer_descs())
        self.assertRuntimeConfig(info, im.runtime)

    def _check_multiarch(self, repo, index, other_platform):
        ref = self.ref(repo + ":multi")
        host, other = index.by_arch(host_arch()), index.by_arch(other_arch())
        info = self.inspect(ref)
        self.assertEqual(info.get("indexDigest"), index.manifest.digest)
        self.assertEqual(info.get("digest"), host.manifest.digest,
                         "default platform must be the host's (%s), not the first entry"
                         % host_arch())
        self.assertEqual(info["platform"].get("architecture"), host_arch())
        self.assertLayers(info, host.layer_descs())

        info = self.inspect(ref, flags=["--platform", other_platform])
        self.assertEqual(info.get("digest"), other.manifest.digest)
        self.assertEqual(info["platform"].get("architecture"), other_arch())
        if other.variant:
            self.assertEqual(info["platform"].get("variant"), other.variant)
        self.assertLayers(info, other.layer_descs())
        self.assertRuntimeConfig(info, other.runtime)

        res = self.ucrfs("pull", ref, flags=["--platform", other_platform])
        self.assertPulled(res, other.manifest.digest)
        self.assertBlobsInStore(other.blobs())
        for l in host.layers:
            self.assertFalse(os.path.exists(os.path.join(self.store, "blobs", "sha256", l.desc.hex)),
                             "the other platform's layers must not be pulled")
        self.assertPulled(self.ucrfs("pull", ref), host.manifest.digest)
        self.assertBlobsInStore(host.blobs())

    def test_oci_index_selects_platform(self):
        # Other arch FIRST; layer files carry the arch, so digests differ.
        index = I.Index([I.simple_image("oidx", arch=other_arch()),
                         I.simple_image("oidx", arch=host_arch())])
        self.pusher.push_index("it/oidx", index, "multi")
        self._check_multiarch("it/oidx", index, "linux/" + other_arch())

    def test_docker_manifest_list_selects_platform(self):
        variant = "v8" if other_arch() == "arm64" else None
        oth = I.simple_image("dlist", arch=other_arch(), variant=variant, docker=True)
        index = I.Index([oth, I.simple_image("dlist", arch=host_arch(), docker=True)],
                        docker=True)
        self.pusher.push_index("it/dlist", index, "multi")
        # linux/arm64 must match an entry that says variant v8.
        self._check_multiarch("it/dlist", index, "linux/" + other_arch())

    def test_platform_not_in_index_fails(self):
        index = I.Index([I.simple_image("noplat", arch=host_arch())])
        self.pusher.push_index("it/noplat", index, "multi")
        res = self.ucrfs("pull", self.ref("it/noplat:multi"), flags=["--platform", "linux/s390x"])
        self.assertFailedOneLine(res, r"platform|s390x|no match")

    def test_zstd_layers(self):
        if not which("zstd"):
            self.skipTest("zstd not installed")
        im = I.simple_image("zst", nlayers=2, kind="zstd")
        self.pusher.push_image("it/zst", im, "v1")
        self.assertPulled(self.ucrfs("pull", self.ref("it/zst:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        info = self.inspect(self.ref("it/zst:v1"))
        self.assertEqual([l["mediaType"] for l in info["layers"]], [I.OCI_LAYER_ZSTD] * 2)
        self.assertLayers(info, im.layer_descs())

    def test_uncompressed_layers(self):
        im = I.simple_image("raw", nlayers=2, kind="tar")
        self.pusher.push_image("it/raw", im, "v1")
        self.assertPulled(self.ucrfs("pull", self.ref("it/raw:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        info = self.inspect(self.ref("it/raw:v1"))
        self.assertLayers(info, im.layer_descs())

    def test_image_pushed_by_skopeo(self):
        if not which("skopeo"):
            self.skipTest("skopeo not installed")
        layout = os.path.join(self.tmp, "layout")
        im = I.simple_image("sk", nlayers=2)
        I.write_oci_layout(layout, {"v1": im})
        run(["skopeo", "copy", "--dest-tls-verify=false", "oci:%s:v1" % layout,
             "docker://%s/it/skopeo:v1" % self.addr], timeout=60)
        raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                   "docker://%s/it/skopeo:v1" % self.addr]).stdout
        manifest = json.loads(raw)
        self.assertPulled(self.ucrfs("pull", self.ref("it/skopeo:v1")), sha256_digest(raw))
        info = self.inspect(self.ref("it/skopeo:v1"))
        self.assertEqual([l["digest"] for l in info["layers"]],
                         [l["digest"] for l in manifest["layers"]])
        self.assertRuntimeConfig(info, im.runtime)

    def test_unknown_tag_fails(self):
        self.assertPulled(self.ucrfs("pull", self.ref("it/other:v1")))
        before = store_snapshot(self.store)
        res = self.ucrfs("pull", self.ref("it/app:no-such-tag"))
        self.assertFailedOneLine(res, NOT_FOUND)
        self.assertStoreUnchanged(before)
        self.assertStagingEmpty()
        res = self.ucrfs("pull", self.ref("it/no-such-repo:v1"))
        self.assertFailedOneLine(res, NOT_FOUND)
        self.assertStoreUnchanged(before)

    def test_unreachable_registry_fails(self):
        port = free_port()  # nothing listens there
        res = self.ucrfs("pull", "127.0.0.1:%d/it/app:v1" % port, timeout=90)
        self.assertFailedOneLine(res, r"connect|refused|unreachable|127\.0\.0\.1:%d" % port)
        self.assertLess(res.elapsed, 60, "giving up must not take minutes")


class TlsRegistryTest(RegistryCase):
    """TLS on 127.0.0.2 (a host name that is not 127.0.0.1/localhost, so the
    client uses HTTPS), cert issued by a throwaway CA."""

    required_tools = ("docker-registry", "openssl")
    registry_host = "127.0.0.2"
    tls = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.app = I.simple_image("tls", nlayers=2)
        cls.pusher.push_image("it/tls", cls.app, "v1")
        cls.other = I.simple_image("tls-other", nlayers=1)
        cls.pusher.push_image("it/tls-other", cls.other, "v1")

    def test_tls_with_registry_ca(self):
        res = self.ucrfs("pull", self.ref("it/tls:v1"), flags=["--registry-ca", self.ca])
        self.assertPulled(res, self.app.manifest.digest)
        self.assertBlobsInStore(self.app.blobs())
        info = self.inspect(self.ref("it/tls:v1"), flags=["--registry-ca", self.ca])
        self.assertLayers(info, self.app.layer_descs())

    def test_tls_without_ca_fails(self):
        self.assertPulled(self.ucrfs("pull", self.ref("it/tls-other:v1"),
                                     flags=["--registry-ca", self.ca]))
        before = store_snapshot(self.store)
        res = self.ucrfs("pull", self.ref("it/tls:v1"))
        self.assertFailedOneLine(res, CERTIFICATE)
        self.assertStoreUnchanged(before)
        self.assertStagingEmpty()
        res = self.ucrfs("inspect", "--json", self.ref("it/tls:v1"))
        self.assertFailedOneLine(res, CERTIFICATE)

    def test_insecure_registry_skips_verification(self):
        res = self.ucrfs("pull", self.ref("it/tls:v1"), flags=["--insecure-registry", self.addr])
        self.assertPulled(res, self.app.manifest.digest)
        self.assertBlobsInStore(self.app.blobs())

    def test_insecure_flag_for_another_registry_does_not_apply(self):
        res = self.ucrfs("pull", self.ref("it/tls:v1"),
                         flags=["--insecure-registry", "127.0.0.2:%d" % free_port("127.0.0.2")])
        self.assertFailedOneLine(res, CERTIFICATE)


class BasicAuthRegistryTest(RegistryCase):
    """htpasswd Basic auth (plain HTTP on 127.0.0.1); credentials come from a
    docker config.json."""

    required_tools = ("docker-registry", "htpasswd")
    auth = ("ucrfs-user", "S3cret-Pw-9f2b71")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.app = I.simple_image("auth", nlayers=2)
        cls.pusher.push_image("it/auth", cls.app, "v1")
        cls.other = I.simple_image("auth-other", nlayers=1)
        cls.pusher.push_image("it/auth-other", cls.other, "v1")

    def secrets(self, password=None):
        pw = password or self.auth[1]
        return [pw, base64.b64encode(("%s:%s" % (self.auth[0], pw)).encode()).decode()]

    def config(self, password=None):
        return write_docker_config(os.path.join(self.tmp, "config-%s.json" % (password or "ok")),
                                   {self.addr: (self.auth[0], password or self.auth[1])})

    def test_basic_auth_with_docker_config(self):
        res = self.ucrfs("pull", self.ref("it/auth:v1"), flags=["--docker-config", self.config()])
        self.assertPulled(res, self.app.manifest.digest)
        self.assertNoSecrets(res, self.secrets())
        self.assertBlobsInStore(self.app.blobs())
        info = self.inspect(self.ref("it/auth:v1"), flags=["--docker-config", self.config()])
        self.assertLayers(info, self.app.layer_descs())

    def test_no_secret_in_debug_output(self):
        store2 = os.path.join(self.tmp, "store2")
        res = self.ucrfs("pull", self.ref("it/auth:v1"), store=store2,
                         flags=["--docker-config", self.config(), "--log-level", "debug"])
        self.assertPulled(res, self.app.manifest.digest)
        self.assertNoSecrets(res, self.secrets())
        res = self.ucrfs("pull", self.ref("it/auth:v1"), store=store2,
                         flags=["--docker-config", self.config("Wrong-Pw-77c1"),
                                "--log-level", "debug"])
        self.assertNotEqual(res.returncode, 0, res.describe())
        self.assertNoSecrets(res, self.secrets("Wrong-Pw-77c1"))

    def test_without_credentials_fails(self):
        self.assertPulled(self.ucrfs("pull", self.ref("it/auth-other:v1"),
                                     flags=["--docker-config", self.config()]))
        before = store_snapshot(self.store)
        res = self.ucrfs("pull", self.ref("it/auth:v1"))
        self.assertFailedOneLine(res, UNAUTHORIZED)
        self.assertStoreUnchanged(before)
        self.assertStagingEmpty()
        # A config without an entry for this registry is no credential either.
        empty = write_docker_config(os.path.join(self.tmp, "other.json"),
                                    {"registry.example.com": ("a", "b")})
        res = self.ucrfs("pull", self.ref("it/auth:v1"), flags=["--docker-config", empty])
        self.assertFailedOneLine(res, UNAUTHORIZED)
        self.assertStoreUnchanged(before)

    def test_wrong_password_fails(self):
        self.assertPulled(self.ucrfs("pull", self.ref("it/auth-other:v1"),
                                     flags=["--docker-config", self.config()]))
        before = store_snapshot(self.store)
        res = self.ucrfs("pull", self.ref("it/auth:v1"),
                         flags=["--docker-config", self.config("Wrong-Pw-77c1")])
        self.assertFailedOneLine(res, UNAUTHORIZED + r"|denied|credential|authenticat",
                                 secrets=self.secrets("Wrong-Pw-77c1"))
        self.assertStoreUnchanged(before)


if __name__ == "__main__":
    unittest.main()
