"""The real registry (Debian's docker-registry, distribution 2.8) on loopback:
plain HTTP, TLS with a throwaway CA, htpasswd Basic auth; and a pusher that
speaks the distribution API with urllib."""
import base64
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from .util import free_port, run, start_process, stop_process, wait_http


def make_ca_and_cert(directory, ip="127.0.0.2"):
    """Throwaway CA + server cert (SAN IP:<ip>, DNS:localhost). Returns
    (ca_cert, server_cert, server_key) paths."""
    os.makedirs(directory, exist_ok=True)
    p = lambda n: os.path.join(directory, n)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509"] + ec + ["-keyout", p("ca.key"), "-out", p("ca.crt"),
         "-days", "2", "-subj", "/CN=ucrfs test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-new"] + ec + ["-keyout", p("server.key"), "-out", p("server.csr"),
         "-subj", "/CN=localhost"])
    with open(p("ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n"
                "subjectAltName=IP:%s,DNS:localhost\n" % ip)
    run(["openssl", "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"),
         "-CAkey", p("ca.key"), "-CAcreateserial", "-days", "2", "-out", p("server.crt"),
         "-extfile", p("ext.cnf")])
    return p("ca.crt"), p("server.crt"), p("server.key")


def make_htpasswd(path, user, password):
    res = run(["htpasswd", "-Bbn", user, password])
    with open(path, "wb") as f:
        f.write(res.stdout)
    return path


class RealRegistry:
    """docker-registry serve on host:port, storage in a temp dir.
    Use start(); stop() is idempotent (register it as a cleanup)."""

    def __init__(self, workdir, host="127.0.0.1", tls=None, htpasswd=None):
        self.workdir = workdir
        self.host = host
        self.port = free_port(host)
        self.tls = tls            # (cert, key) or None
        self.htpasswd = htpasswd  # path or None
        self.proc = None
        self.log_path = os.path.join(workdir, "registry.log")

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def url(self):
        return "%s://%s" % ("https" if self.tls else "http", self.addr)

    def config_yaml(self):
        storage = os.path.join(self.workdir, "storage")
        os.makedirs(storage, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            "    rootdirectory: %s" % storage,
            "  delete:",
            "    enabled: true",
            "http:",
            "  addr: %s" % self.addr,
            "  secret: ucrfs-integration-test-secret",
        ]
        if self.tls:
            lines += ["  tls:", "    certificate: %s" % self.tls[0], "    key: %s" % self.tls[1]]
        if self.htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: ucrfs-test",
                      "    path: %s" % self.htpasswd]
        return "\n".join(lines) + "\n"

    def start(self, ssl_context=None):
        os.makedirs(self.workdir, exist_ok=True)
        cfg = os.path.join(self.workdir, "config.yml")
        for attempt in range(3):
            with open(cfg, "w") as f:
                f.write(self.config_yaml())
            self.proc = start_process(["docker-registry", "serve", cfg], self.log_path)
            try:
                wait_http(self.url + "/v2/", proc=self.proc, ssl_context=ssl_context,
                          log_path=self.log_path)
                return self
            except AssertionError:
                exited = self.proc.poll() is not None
                self.stop()
                if not exited or attempt == 2:
                    raise
                # Lost the race for the free port to someone else: try another.
                self.port = free_port(self.host)
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Pusher:
    """Pushes images over the distribution API: monolithic blob uploads
    (POST then PUT ?digest=) and manifests by tag or digest."""

    def __init__(self, base_url, auth=None, ssl_context=None):
        self.base = base_url.rstrip("/")
        self.auth = auth  # (user, password) or None
        self.ctx = ssl_context

    def _req(self, method, url, data=None, headers=None):
        headers = dict(headers or {})
        if self.auth:
            tok = base64.b64encode(("%s:%s" % self.auth).encode()).decode()
            headers["Authorization"] = "Basic " + tok
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            raise AssertionError("%s %s -> %d %s" % (method, url, e.code, body[:500])) from None

    def blob_exists(self, repo, digest):
        try:
            self._req("HEAD", "%s/v2/%s/blobs/%s" % (self.base, repo, digest))
            return True
        except AssertionError:
            return False

    def push_blob(self, repo, digest, data):
        status, headers, _ = self._req("POST", "%s/v2/%s/blobs/uploads/" % (self.base, repo),
                                       data=b"", headers={"Content-Length": "0"})
        assert status == 202, status
        loc = headers.get("Location")
        loc = urllib.parse.urljoin(self.base + "/", loc)
        sep = "&" if "?" in loc else "?"
        status, _, _ = self._req("PUT", loc + sep + "digest=" + urllib.parse.quote(digest),
                                 data=data, headers={"Content-Type": "application/octet-stream",
                                                     "Content-Length": str(len(data))})
        assert status == 201, status

    def push_manifest(self, repo, ref, desc):
        status, headers, _ = self._req("PUT", "%s/v2/%s/manifests/%s" % (self.base, repo, ref),
                                       data=desc.data, headers={"Content-Type": desc.media_type})
        assert status == 201, status
        got = headers.get("Docker-Content-Digest")
        assert got in (None, desc.digest), (got, desc.digest)

    def push_image(self, repo, image, tag=None):
        for digest, data in image.blobs().items():
            self.push_blob(repo, digest, data)
        self.push_manifest(repo, tag or image.manifest.digest, image.manifest)

    def push_index(self, repo, index, tag):
        for im in index.images:
            self.push_image(repo, im)  # by digest
        self.push_manifest(repo, tag, index.manifest)


def ssl_context_for(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx
