"""Image builders: layers (tarfile), OCI/Docker configs and manifests, indexes,
and writers for an OCI image layout and `docker save` archives (both the
manifest.json format and the legacy `repositories` format)."""
import gzip
import io
import json
import os
import random
import subprocess
import tarfile

from .util import sha256_digest, sha256_hex

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

FIXED_MTIME = 1700000000


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Descriptor:
    def __init__(self, media_type, data, platform=None, annotations=None):
        self.media_type = media_type
        self.data = data
        self.digest = sha256_digest(data)
        self.size = len(data)
        self.platform = platform
        self.annotations = annotations

    @property
    def hex(self):
        return self.digest.split(":", 1)[1]

    def to_json(self):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        if self.annotations:
            d["annotations"] = self.annotations
        return d


def make_tar(entries):
    """entries: list of (path, spec); spec is bytes (regular file, 0644),
    None (directory), ("symlink", target) or ("file", bytes, mode).
    Deterministic: fixed mtime, uid/gid 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, spec in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime = FIXED_MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            data = None
            if spec is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
            elif isinstance(spec, tuple) and spec[0] == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = spec[1]
                ti.mode = 0o777
            elif isinstance(spec, tuple) and spec[0] == "file":
                data, ti.mode = spec[1], spec[2]
            else:
                data, ti.mode = spec, 0o644
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def compress(tar, kind):
    if kind == "gzip":
        return gzip.compress(tar, compresslevel=6, mtime=0)
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=tar, capture_output=True,
                              check=True, timeout=60).stdout
    if kind == "tar":
        return tar
    raise ValueError(kind)


class Layer:
    """A layer: its uncompressed tar (diff) and the blob as distributed."""

    def __init__(self, entries, kind="gzip", docker=False):
        self.tar = make_tar(entries)
        self.diff_id = sha256_digest(self.tar)
        self.kind = kind
        blob = compress(self.tar, kind)
        if docker:
            mt = {"gzip": DOCKER_LAYER_GZIP, "tar": DOCKER_LAYER_TAR}[kind]
        else:
            mt = {"gzip": OCI_LAYER_GZIP, "tar": OCI_LAYER_TAR, "zstd": OCI_LAYER_ZSTD}[kind]
        self.desc = Descriptor(mt, blob)


def default_runtime_config(tag="x"):
    return {
        "Entrypoint": ["/bin/entry-%s" % tag],
        "Cmd": ["--flag", "value with spaces"],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "IMAGE_TAG=%s" % tag],
        "WorkingDir": "/srv/%s" % tag,
        "User": "1000:1000",
        "Labels": {"org.example.tag": tag},
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
    }


class Image:
    """A single-platform image: config, layers, manifest (OCI or Docker schema2)."""

    def __init__(self, layers, runtime=None, os_="linux", arch="amd64", variant=None,
                 docker=False):
        self.layers = layers
        self.runtime = runtime if runtime is not None else default_runtime_config()
        self.os, self.arch, self.variant = os_, arch, variant
        cfg = {
            "architecture": arch,
            "os": os_,
            "created": "2023-11-14T22:13:20Z",
            "config": self.runtime,
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "ucrfs test"}
                        for _ in layers],
        }
        if variant:
            cfg["variant"] = variant
        self.config_json = cfg
        self.config = Descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, _json(cfg))
        mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
        man = {"schemaVersion": 2, "mediaType": mt, "config": self.config.to_json(),
               "layers": [l.desc.to_json() for l in layers]}
        self.manifest = Descriptor(mt, json.dumps(man, indent=3).encode(),
                                   platform=self.platform())

    def platform(self):
        p = {"architecture": self.arch, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p

    def blobs(self):
        """{digest: bytes} of the config and every layer blob."""
        out = {self.config.digest: self.config.data}
        for l in self.layers:
            out[l.desc.digest] = l.desc.data
        return out

    def layer_descs(self):
        return [l.desc for l in self.layers]


class Index:
    """An OCI image index or a Docker manifest list over images (in order)."""

    def __init__(self, images, docker=False):
        self.images = images
        mt = DOCKER_LIST if docker else OCI_INDEX
        idx = {"schemaVersion": 2, "mediaType": mt,
               "manifests": [im.manifest.to_json() for im in images]}
        self.manifest = Descriptor(mt, json.dumps(idx, indent=2).encode())

    def by_arch(self, arch):
        return next(im for im in self.images if im.arch == arch)


def simple_image(tag, nlayers=2, kind="gzip", docker=False, arch="amd64", variant=None,
                 size=0):
    """An image whose layers differ per tag/arch: layer i has /layer<i>/<tag>."""
    layers = []
    for i in range(nlayers):
        body = ("content of layer %d of %s for %s\n" % (i, tag, arch)).encode()
        if size:  # incompressible, deterministic filler
            body += random.Random("%s/%s/%d" % (tag, arch, i)).randbytes(size)
        entries = [("layer%d" % i, None), ("layer%d/%s-%s.txt" % (i, tag, arch), body)]
        if i == 0:
            entries += [("bin", None), ("bin/sh", ("file", b"#!fake shell\n", 0o755)),
                        ("etc", None), ("etc/os-release", b"ID=ucrfs-test\n"),
                        ("lib", ("symlink", "usr/lib"))]
        layers.append(Layer(entries, kind=kind, docker=docker))
    return Image(layers, runtime=default_runtime_config(tag), arch=arch, variant=variant,
                 docker=docker)


# ---------------------------------------------------------------- writers

def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_oci_layout(directory, refs):
    """refs: {tag: Image | Index}. Writes oci-layout, blobs/sha256/*, and
    index.json with one entry per tag (org.opencontainers.image.ref.name)."""
    _write(os.path.join(directory, "oci-layout"), _json({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for tag, obj in refs.items():
        images = obj.images if isinstance(obj, Index) else [obj]
        for im in images:
            for digest, data in im.blobs().items():
                _write(os.path.join(directory, "blobs", "sha256", digest[7:]), data)
            _write(os.path.join(directory, "blobs", "sha256", im.manifest.hex), im.manifest.data)
        if isinstance(obj, Index):
            _write(os.path.join(directory, "blobs", "sha256", obj.manifest.hex),
                   obj.manifest.data)
        d = {"mediaType": obj.manifest.media_type, "digest": obj.manifest.digest,
             "size": obj.manifest.size,
             "annotations": {"org.opencontainers.image.ref.name": tag}}
        entries.append(d)
    _write(os.path.join(directory, "index.json"),
           json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                      indent=2).encode())


def _tar_of_files(path, files):
    """files: list of (name, bytes|None) -> a tar file (directories for None)."""
    with tarfile.open(path, "w") as tf:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.mtime = FIXED_MTIME
            if data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def write_docker_archive(path, image, repo_tags):
    """`docker save` manifest.json format: <config hex>.json, <id>/layer.tar
    (uncompressed), manifest.json. No `repositories` file."""
    files = []
    layer_paths = []
    parent = ""
    for i, l in enumerate(image.layers):
        lid = sha256_hex((parent + "\n" + l.diff_id).encode())
        files += [(lid, None), (lid + "/VERSION", b"1.0"), (lid + "/layer.tar", l.tar),
                  (lid + "/json", _json({"id": lid, "parent": parent} if parent else {"id": lid}))]
        layer_paths.append(lid + "/layer.tar")
        parent = lid
    files.append((image.config.hex + ".json", image.config.data))
    files.append(("manifest.json", json.dumps(
        [{"Config": image.config.hex + ".json", "RepoTags": list(repo_tags),
          "Layers": layer_paths}]).encode()))
    _tar_of_files(path, files)


def write_legacy_archive(path, repositories, layers, base_parent=None):
    """Legacy `docker save` (what Mesos' local puller reads).
    repositories: {"name": {"tag": top_id}}; layers: list of (id, tar bytes,
    config dict or None), base first; each layer's parent is the previous one.
    base_parent: None -> no "parent" key on the base, else its value (e.g. "")."""
    files = [("repositories", json.dumps(repositories).encode())]
    parent = None
    for lid, tar, config in layers:
        meta = {"id": lid}
        if parent is not None:
            meta["parent"] = parent
        elif base_parent is not None:
            meta["parent"] = base_parent
        if config is not None:
            meta["config"] = config
        files += [(lid, None), (lid + "/VERSION", b"1.0"), (lid + "/json", json.dumps(meta).encode()),
                  (lid + "/layer.tar", tar)]
        parent = lid
    _tar_of_files(path, files)


def read_tar_member(path, name):
    with tarfile.open(path) as tf:
        return tf.extractfile(name).read()
