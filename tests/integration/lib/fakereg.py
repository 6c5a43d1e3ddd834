"""A registry of ours (http.server) serving an in-memory image set, with the
faults real registries and networks produce. Every request is recorded.

    reg = FakeRegistry()            # then reg.add_image(...), reg.start()
    reg.bearer = {"user": "u", "password": "p"}   # or {} for anonymous tokens
    reg.faults["corrupt_blob"] = {digest}
    reg.faults["corrupt_at"][digest] = {offset}   # flip that byte wherever served
    reg.faults["hold_below"][digest] = offset     # GETs starting below it wait for
    reg.hold_release.set()                        # ... this (or stop(), or 120 s)

Blob bytes served are counted per GET (`served`, `served_bytes`), so tests can
tell a lazy reader's Range requests from a whole download. stop() also
closes kept-alive connections (a stopped registry answers nothing), and
start(port) can bring it back on the same port.
"""
import base64
import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .util import sha256_digest

_PATH_RE = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Request:
    def __init__(self, method, path, headers):
        self.method = method
        self.path = path
        self.headers = headers  # {lower-case name: value}
        self.time = time.monotonic()

    def __repr__(self):
        return "%s %s" % (self.method, self.path)


class Served:
    """One blob GET answered: which blob, which bytes, asked with a Range?"""

    def __init__(self, digest, start, length, ranged):
        self.digest = digest
        self.start = start
        self.length = length
        self.ranged = ranged
        self.time = time.monotonic()

    def __repr__(self):
        return "%s[%d+%d%s]" % (self.digest[7:19], self.start, self.length,
                                "" if self.ranged else ", no Range")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hung up (or stop() closing its connection) is not news.
        import sys
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class FakeRegistry:
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.manifests = {}  # (repo, tag-or-digest) -> (media_type, body)
        self.blobs = {}      # digest -> bytes
        self.requests = []
        self.lock = threading.Lock()
        # Bearer auth: None (off) or {"user":..., "password":...} / {} for anonymous.
        self.bearer = None
        self.token_field = "token"      # or "access_token"
        self.tokens = set()
        self.faults = {
            "corrupt_blob": set(),      # digests served with one byte flipped
            "fail_429": {},             # path (or "*") -> how many 429 answers
            "fail_503": {},             # path (or "*") -> how many 503 answers
            "cut_blob_once": set(),     # digests whose first GET is cut mid-body
            "redirect_blobs": False,    # blob GETs -> 307 to http://localhost:P/storage/
            "stall_blob": set(),        # digests: send half the body, then hang
            "corrupt_at": {},           # digest -> {blob offset}: that byte flipped in any response
            "hold_below": {},           # digest -> offset: GETs starting below it wait for hold_release
        }
        self.hold_release = threading.Event()
        self.held = []       # (digest, start) of each GET that hold_below made wait
        self.served = []     # Served(...) per blob GET answered with a body
        self._conns = set()
        self.stopping = threading.Event()
        self.httpd = None
        self.thread = None

    # ---------------------------------------------------------- content

    def add_blob(self, data, digest):
        self.blobs[digest] = data

    def add_manifest(self, repo, ref, media_type, body):
        self.manifests[(repo, ref)] = (media_type, body)

    def add_image(self, repo, image, tag=None):
        for digest, data in image.blobs().items():
            self.add_blob(data, digest)
        m = image.manifest
        self.add_manifest(repo, m.digest, m.media_type, m.data)
        if tag:
            self.add_manifest(repo, tag, m.media_type, m.data)

    def add_index(self, repo, index, tag):
        for im in index.images:
            self.add_image(repo, im)
        m = index.manifest
        self.add_manifest(repo, m.digest, m.media_type, m.data)
        self.add_manifest(repo, tag, m.media_type, m.data)

    # ---------------------------------------------------------- lifecycle

    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def start(self, port=0):
        """Serves on port (0: any free port; pass the old port to restart)."""
        reg = self

        class Handler(_Handler):
            registry = reg

        self.stopping.clear()
        self.httpd = _Server((self.host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stops listening and closes every open connection (keep-alive
        ones too), so clients see the registry gone."""
        self.stopping.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.httpd = None
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---------------------------------------------------------- queries

    def requests_for(self, prefix="", method=None):
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)
                    and (method is None or r.method == method)]

    def mark(self):
        """A position in `served`, for served_bytes(since=...)."""
        with self.lock:
            return len(self.served)

    def served_for(self, digest, since=0):
        with self.lock:
            return [s for s in self.served[since:] if s.digest == digest]

    def served_bytes(self, digest, since=0):
        """Body bytes of blob GETs answered for digest (after mark `since`)."""
        return sum(s.length for s in self.served_for(digest, since))

    def token_requests(self):
        return self.requests_for("/token")

    def blob_path(self, repo, digest):
        return "/v2/%s/blobs/%s" % (repo, digest)

    def manifest_path(self, repo, ref):
        return "/v2/%s/manifests/%s" % (repo, ref)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    registry = None  # set by FakeRegistry.start
    server_version = "ucrfs-fake-registry/1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.registry.lock:
            self.registry._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.registry.lock:
                self.registry._conns.discard(self.connection)

    # ---------------------------------------------------------- helpers

    def _send(self, code, body=b"", headers=None, head=False):
        self.send_response(code)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _error(self, code, err, message, head=False, headers=None):
        body = json.dumps({"errors": [{"code": err, "message": message, "detail": None}]}).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self._send(code, body, h, head)

    def _record(self):
        reg = self.registry
        req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        with reg.lock:
            reg.requests.append(req)
        return req

    def _take_fault(self, name, path):
        reg = self.registry
        with reg.lock:
            for key in (path, "*"):
                left = reg.faults[name].get(key, 0)
                if left > 0:
                    reg.faults[name][key] = left - 1
                    return True
        return False

    # ---------------------------------------------------------- dispatch

    def do_GET(self):
        self._handle(head=False)

    def do_HEAD(self):
        self._handle(head=True)

    def _handle(self, head):
        self._record()
        reg = self.registry
        path = self.path.split("?", 1)[0]
        if self._take_fault("fail_429", path):
            return self._error(429, "TOOMANYREQUESTS", "slow down", head, {"Retry-After": "1"})
        if self._take_fault("fail_503", path):
            return self._error(503, "UNAVAILABLE", "try again", head, {"Retry-After": "1"})
        if path == "/token":
            return self._token()
        if path.startswith("/storage/"):
            return self._blob(path[len("/storage/"):], head, redirected=True)
        if path == "/v2/" or path == "/v2":
            if not self._authorized(None):
                return
            return self._send(200, b"{}", {"Content-Type": "application/json"}, head)
        if path.startswith("/v2/") and path.endswith("/tags/list"):
            repo = path[len("/v2/"):-len("/tags/list")]
            if not self._authorized(repo):
                return
            tags = sorted(r for (rp, r) in reg.manifests if rp == repo and ":" not in r)
            body = json.dumps({"name": repo, "tags": tags}).encode()
            return self._send(200, body, {"Content-Type": "application/json"}, head)
        m = _PATH_RE.match(path)
        if not m:
            return self._error(404, "NOT_FOUND", "no such endpoint", head)
        repo, kind, ref = m.group("repo"), m.group("kind"), m.group("ref")
        if not self._authorized(repo):
            return
        if kind == "manifests":
            entry = reg.manifests.get((repo, ref))
            if entry is None:
                return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown", head)
            mt, body = entry
            return self._send(200, body, {"Content-Type": mt,
                                          "Docker-Content-Digest": sha256_digest(body)}, head)
        if ref not in reg.blobs:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown to registry", head)
        if reg.faults["redirect_blobs"] and not head:
            loc = "http://localhost:%d/storage/%s" % (reg.port, ref)
            return self._send(307, b"", {"Location": loc})
        return self._blob(ref, head)

    def _authorized(self, repo):
        reg = self.registry
        if reg.bearer is None:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):] in reg.tokens:
            return True
        chal = 'Bearer realm="http://%s/token",service="fake"' % reg.addr
        if repo is not None:
            chal += ',scope="repository:%s:pull"' % repo
        self._error(401, "UNAUTHORIZED", "authentication required",
                    self.command == "HEAD", {"WWW-Authenticate": chal})
        return False

    def _token(self):
        reg = self.registry
        if reg.bearer is None:
            return self._error(404, "NOT_FOUND", "no token service")
        want = reg.bearer
        if want.get("user") is not None:
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                try:
                    ok = base64.b64decode(auth[6:]).decode() == "%s:%s" % (
                        want["user"], want["password"])
                except ValueError:
                    ok = False
            if not ok:
                return self._error(401, "UNAUTHORIZED", "bad credentials", False,
                                   {"WWW-Authenticate": 'Basic realm="fake"'})
        tok = "tok-" + uuid.uuid4().hex
        with reg.lock:
            reg.tokens.add(tok)
        body = json.dumps({reg.token_field: tok, "expires_in": 300,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self._send(200, body.encode(), {"Content-Type": "application/json"})

    def _blob(self, digest, head, redirected=False):
        reg = self.registry
        data = reg.blobs.get(digest)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown", head)
        if digest in reg.faults["corrupt_blob"]:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]
        total = len(data)
        start, end, code = 0, total - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE_RE.match(rng.strip())
            if not m or int(m.group(1)) >= total:
                return self._send(416, b"", {"Content-Range": "bytes */%d" % total}, head)
            start = int(m.group(1))
            if m.group(2):
                end = min(int(m.group(2)), total - 1)
            code = 206
        limit = reg.faults["hold_below"].get(digest)
        if limit is not None and start < limit and not head:
            with reg.lock:
                reg.held.append((digest, start))
            deadline = time.monotonic() + 120
            while not (reg.hold_release.is_set() or reg.stopping.is_set()) and time.monotonic() < deadline:
                reg.hold_release.wait(0.05)
        body = data[start:end + 1]
        flips = [o - start for o in reg.faults["corrupt_at"].get(digest, ()) if start <= o <= end]
        if flips:
            b = bytearray(body)
            for i in flips:
                b[i] ^= 0xFF
            body = bytes(b)
        if not head:
            with reg.lock:
                reg.served.append(Served(digest, start, len(body), bool(rng)))
        headers = {"Content-Type": "application/octet-stream",
                   "Docker-Content-Digest": digest, "Accept-Ranges": "bytes",
                   "Content-Length": str(len(body))}
        if code == 206:
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, total)
        if not head and digest in reg.faults["stall_blob"]:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            reg.stopping.wait(60)
            self.close_connection = True
            return
        cut = False
        if not head:
            with reg.lock:
                if digest in reg.faults["cut_blob_once"]:
                    reg.faults["cut_blob_once"].discard(digest)
                    cut = True
        if cut:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(code, body, headers, head)
