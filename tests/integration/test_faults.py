"""ucrfs pull against a registry of ours that injects faults: Bearer token
flow (and token caching), corrupt blobs, 429/503 then success, a connection
cut mid-blob, redirects to another host (no credential leak), broken and
unsupported manifests, missing tags."""
import base64
import json
import os
import signal
import time
import unittest
import urllib.parse

from lib import images as I
from lib.fakereg import FakeRegistry
from lib.util import UcrfsTestCase, store_snapshot, write_docker_config

NOT_FOUND = r"not found|unknown|404|no such"


class FakeRegistryCase(UcrfsTestCase):
    def setUp(self):
        super().setUp()
        self.reg = FakeRegistry()
        self.reg.start()
        self.addCleanup(self.reg.stop)

    def ref(self, repo_tag):
        return "%s/%s" % (self.reg.addr, repo_tag)

    def add(self, repo, tag, nlayers=2, **kw):
        im = I.simple_image(repo.replace("/", "-") + "-" + tag, nlayers=nlayers, **kw)
        self.reg.add_image(repo, im, tag)
        return im

    def seed_store(self):
        """A successful pull first, so failure tests compare a real store."""
        im = self.add("seed/img", "v1", nlayers=1)
        self.assertPulled(self.ucrfs("pull", self.ref("seed/img:v1")), im.manifest.digest)
        return store_snapshot(self.store)

    def blob_gets(self, repo, digest):
        return self.reg.requests_for(self.reg.blob_path(repo, digest), method="GET")


class BearerTest(FakeRegistryCase):
    USER, PASSWORD = "tok-user", "Bearer-Pw-41d8e0"

    def config(self, password=None):
        return write_docker_config(os.path.join(self.tmp, "config.json"),
                                   {self.reg.addr: (self.USER, password or self.PASSWORD)})

    def test_bearer_flow_and_token_cached(self):
        self.reg.bearer = {"user": self.USER, "password": self.PASSWORD}
        im = self.add("ns/app", "v1", nlayers=3)
        res = self.ucrfs("pull", self.ref("ns/app:v1"), flags=["--docker-config", self.config()])
        self.assertPulled(res, im.manifest.digest)
        self.assertBlobsInStore(im.blobs())

        toks = self.reg.token_requests()
        self.assertEqual(len(toks), 1, "one token for the whole pull (cached), got %r" % toks)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(toks[0].path).query)
        self.assertEqual(q.get("service"), ["fake"])
        self.assertEqual(q.get("scope"), ["repository:ns/app:pull"])
        basic = "Basic " + base64.b64encode(("%s:%s" % (self.USER, self.PASSWORD)).encode()).decode()
        self.assertEqual(toks[0].headers.get("authorization"), basic,
                         "token request must carry the docker config credentials")
        # Every blob was fetched with the token, and each exactly once.
        for digest in im.blobs():
            gets = self.blob_gets("ns/app", digest)
            self.assertEqual(len(gets), 1, "GETs of %s" % digest)
            self.assertIn(gets[0].headers.get("authorization", "")[len("Bearer "):],
                          self.reg.tokens)
        self.assertNoSecrets(res, [self.PASSWORD] + sorted(self.reg.tokens))

    def test_no_token_or_password_in_debug_log(self):
        self.reg.bearer = {"user": self.USER, "password": self.PASSWORD}
        im = self.add("ns/dbg", "v1", nlayers=1)
        res = self.ucrfs("pull", self.ref("ns/dbg:v1"),
                         flags=["--docker-config", self.config(), "--log-level", "debug"])
        self.assertPulled(res, im.manifest.digest)
        self.assertTrue(self.reg.tokens, "a token was issued")
        b64 = base64.b64encode(("%s:%s" % (self.USER, self.PASSWORD)).encode()).decode()
        self.assertNoSecrets(res, [self.PASSWORD, b64] + sorted(self.reg.tokens))

    def test_anonymous_access_token_variant(self):
        self.reg.bearer = {}  # anonymous tokens
        self.reg.token_field = "access_token"
        im = self.add("library/anon", "v1", nlayers=3)
        self.assertPulled(self.ucrfs("pull", self.ref("library/anon:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertEqual(len(self.reg.token_requests()), 1)
        info = self.inspect(self.ref("library/anon:v1"))
        self.assertLayers(info, im.layer_descs())

    def test_wrong_credentials_fail(self):
        self.reg.bearer = {"user": self.USER, "password": self.PASSWORD}
        self.add("ns/app", "v1")
        res = self.ucrfs("pull", self.ref("ns/app:v1"),
                         flags=["--docker-config", self.config("Not-The-Pw-5e2")])
        self.assertFailedOneLine(res, r"unauthori[sz]ed|401|denied|credential|authenticat",
                                 secrets=["Not-The-Pw-5e2"])
        self.assertEqual(self.reg.requests_for("/v2/ns/app/blobs/"), [],
                         "no blob fetched without a token")


class IntegrityTest(FakeRegistryCase):
    def test_corrupt_layer_fails_and_store_unchanged(self):
        before = self.seed_store()
        im = self.add("ns/bad", "v1", nlayers=3)
        bad = im.layers[1].desc
        self.reg.faults["corrupt_blob"].add(bad.digest)
        res = self.ucrfs("pull", self.ref("ns/bad:v1"))
        self.assertFailedOneLine(res, bad.hex)  # names the blob's digest
        self.assertStoreUnchanged(before)
        self.assertStagingEmpty()

    def test_corrupt_config_fails(self):
        before = self.seed_store()
        im = self.add("ns/badcfg", "v1", nlayers=1)
        self.reg.faults["corrupt_blob"].add(im.config.digest)
        res = self.ucrfs("pull", self.ref("ns/badcfg:v1"))
        self.assertFailedOneLine(res, im.config.hex)
        self.assertStoreUnchanged(before)

    def test_manifest_not_matching_requested_digest_fails(self):
        before = self.seed_store()
        good = self.add("ns/dig", "v1")
        evil = I.simple_image("evil")
        # The registry answers the digest of `good` with other bytes.
        self.reg.add_manifest("ns/dig", good.manifest.digest, evil.manifest.media_type,
                              evil.manifest.data)
        self.reg.add_image("ns/dig", evil)
        res = self.ucrfs("pull", self.ref("ns/dig@" + good.manifest.digest))
        self.assertFailedOneLine(res, r"digest|mismatch|verif")
        self.assertStoreUnchanged(before)


class TransientFaultTest(FakeRegistryCase):
    def test_429_then_success(self):
        im = self.add("ns/busy", "v1", nlayers=2)
        mpath = self.reg.manifest_path("ns/busy", "v1")
        bpath = self.reg.blob_path("ns/busy", im.layers[0].desc.digest)
        self.reg.faults["fail_429"] = {mpath: 1, bpath: 2}
        res = self.ucrfs("pull", self.ref("ns/busy:v1"))
        self.assertPulled(res, im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertStagingEmpty()
        self.assertEqual(len(self.reg.requests_for(bpath, "GET")), 3, "2 x 429, then 200")
        gets = self.reg.requests_for(mpath, "GET")
        self.assertGreaterEqual(len(gets), 2)
        self.assertGreaterEqual(gets[1].time - gets[0].time, 0.9,
                                "the retry must wait the Retry-After: 1 second")

    def test_503_then_success(self):
        im = self.add("ns/flaky", "v1", nlayers=2)
        mpath = self.reg.manifest_path("ns/flaky", "v1")
        bpath = self.reg.blob_path("ns/flaky", im.layers[1].desc.digest)
        cpath = self.reg.blob_path("ns/flaky", im.config.digest)
        self.reg.faults["fail_503"] = {mpath: 2, bpath: 2, cpath: 1}
        self.assertPulled(self.ucrfs("pull", self.ref("ns/flaky:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertEqual(len(self.reg.requests_for(bpath, "GET")), 3)

    def test_persistent_503_fails(self):
        before = self.seed_store()
        self.add("ns/down", "v1", nlayers=1)
        self.reg.faults["fail_503"] = {self.reg.manifest_path("ns/down", "v1"): 1000}
        res = self.ucrfs("pull", self.ref("ns/down:v1"))
        self.assertFailedOneLine(res, r"503|unavailable")
        self.assertLess(res.elapsed, 60)
        self.assertStoreUnchanged(before)

    def test_connection_cut_mid_blob_then_success(self):
        im = self.add("ns/cut", "v1", nlayers=2, size=1 << 20)  # ~1 MiB, incompressible
        big = im.layers[1].desc
        self.assertGreater(big.size, 1 << 20)
        self.reg.faults["cut_blob_once"].add(big.digest)
        self.assertPulled(self.ucrfs("pull", self.ref("ns/cut:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertStagingEmpty()
        gets = self.blob_gets("ns/cut", big.digest)
        self.assertGreaterEqual(len(gets), 2, "the cut transfer was retried")
        rng = gets[1].headers.get("range")
        if rng:  # a resume must continue where the first transfer broke, not before it
            start = int(rng.split("=")[1].split("-")[0])
            self.assertLessEqual(start, big.size // 2)


class StoreTest(FakeRegistryCase):
    def test_repull_and_shared_layers_fetch_only_new_blobs(self):
        a = self.add("ns/a", "v1", nlayers=2)
        self.assertPulled(self.ucrfs("pull", self.ref("ns/a:v1")), a.manifest.digest)
        with self.reg.lock:
            self.reg.requests.clear()
        self.assertPulled(self.ucrfs("pull", self.ref("ns/a:v1")), a.manifest.digest)
        refetched = {r.path.rsplit("/", 1)[1] for r in self.reg.requests_for("/v2/ns/a/blobs/", "GET")}
        # (The small config blob may be read again to resolve the image.)
        self.assertEqual(refetched - {a.config.digest}, set(),
                         "a re-pull fetches no layer already in the store")
        # b shares a's base layer: only its own layer and config are fetched.
        b = I.Image([a.layers[0], I.Layer([("only-in-b", b"b\n")])],
                    runtime=I.default_runtime_config("b"))
        self.reg.add_image("ns/b", b, "v1")
        self.assertPulled(self.ucrfs("pull", self.ref("ns/b:v1")), b.manifest.digest)
        fetched = {r.path.rsplit("/", 1)[1] for r in self.reg.requests_for("/v2/ns/b/blobs/", "GET")}
        self.assertEqual(fetched, {b.config.digest, b.layers[1].desc.digest},
                         "only b's own layer and config are fetched")
        self.assertBlobsInStore(a.blobs())
        self.assertBlobsInStore(b.blobs())

    def test_concurrent_pulls_share_one_store(self):
        im = self.add("ns/conc", "v1", nlayers=3, size=200000)
        procs = [self.ucrfs_popen("pull", self.ref("ns/conc:v1")) for _ in range(3)]
        for p in procs:
            self.assertPulled(self.wait_popen(p), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertStagingEmpty()
        info = self.inspect(self.ref("ns/conc:v1"))
        self.assertLayers(info, im.layer_descs())

    def test_killed_pull_leaves_no_partial_blob(self):
        im = self.add("ns/kill", "v1", nlayers=2, size=500000)
        stalled = im.layers[1].desc
        self.reg.faults["stall_blob"].add(stalled.digest)
        p = self.ucrfs_popen("pull", self.ref("ns/kill:v1"))
        deadline = time.monotonic() + 30
        while not self.blob_gets("ns/kill", stalled.digest) and time.monotonic() < deadline:
            self.assertIsNone(p.poll(), "ucrfs exited before fetching the stalled blob")
            time.sleep(0.05)
        self.assertTrue(self.blob_gets("ns/kill", stalled.digest), "stalled blob never requested")
        time.sleep(0.3)  # let it write what it received
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        self.assertFalse(os.path.exists(os.path.join(self.store, "blobs", "sha256", stalled.hex)),
                         "a half-received blob must never appear under blobs/")
        self.reg.faults["stall_blob"].clear()
        self.assertPulled(self.ucrfs("pull", self.ref("ns/kill:v1")), im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        self.assertStagingEmpty()


class RedirectTest(FakeRegistryCase):
    def test_redirect_to_other_host_without_authorization(self):
        self.reg.bearer = {"user": "u", "password": "Redirect-Pw-0a9"}
        self.reg.faults["redirect_blobs"] = True
        im = self.add("ns/redir", "v1", nlayers=2)
        cfg = write_docker_config(os.path.join(self.tmp, "c.json"),
                                  {self.reg.addr: ("u", "Redirect-Pw-0a9")})
        res = self.ucrfs("pull", self.ref("ns/redir:v1"), flags=["--docker-config", cfg])
        self.assertPulled(res, im.manifest.digest)
        self.assertBlobsInStore(im.blobs())
        storage = self.reg.requests_for("/storage/", "GET")
        self.assertEqual(sorted({r.path[len("/storage/"):] for r in storage}), sorted(im.blobs()),
                         "every blob came from the redirect target")
        for r in storage:
            self.assertEqual(r.headers.get("host"), "localhost:%d" % self.reg.port)
            self.assertNotIn("authorization", r.headers,
                             "credentials leaked to the redirect target: %r" % r)


class BadManifestTest(FakeRegistryCase):
    def test_malformed_manifest(self):
        before = self.seed_store()
        im = I.simple_image("mal")
        self.reg.add_image("ns/mal", im)
        body = im.manifest.data[: len(im.manifest.data) // 2]  # truncated JSON
        self.reg.add_manifest("ns/mal", "v1", I.OCI_MANIFEST, body)
        res = self.ucrfs("pull", self.ref("ns/mal:v1"))
        self.assertFailedOneLine(res, r"manifest|json|pars|malformed|invalid")
        self.assertStoreUnchanged(before)

    def test_manifest_without_layers_field(self):
        body = json.dumps({"schemaVersion": 2, "mediaType": I.OCI_MANIFEST}).encode()
        self.reg.add_manifest("ns/nolayers", "v1", I.OCI_MANIFEST, body)
        res = self.ucrfs("pull", self.ref("ns/nolayers:v1"))
        self.assertFailedOneLine(res, r"manifest|config|layers|invalid")

    def test_unsupported_media_type(self):
        before = self.seed_store()
        mt = "application/vnd.acme.rocket.manifest.v1+json"
        body = json.dumps({"schemaVersion": 2, "mediaType": mt, "parts": []}).encode()
        self.reg.add_manifest("ns/rocket", "v1", mt, body)
        res = self.ucrfs("pull", self.ref("ns/rocket:v1"))
        self.assertFailedOneLine(res, r"acme\.rocket|unsupported")
        self.assertStoreUnchanged(before)

    def test_missing_tag(self):
        before = self.seed_store()
        self.add("ns/app", "v1")
        res = self.ucrfs("pull", self.ref("ns/app:v2"))
        self.assertFailedOneLine(res, NOT_FOUND)
        self.assertStoreUnchanged(before)
        res = self.ucrfs("inspect", "--json", self.ref("ns/app:v2"))
        self.assertFailedOneLine(res, NOT_FOUND)


if __name__ == "__main__":
    unittest.main()
