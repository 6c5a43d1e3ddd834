"""Helpers the benchmark scripts share: OCI layouts they build, and the load
note they print. Standard library only."""
import hashlib
import json
import os

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def put_blob(layout, data):
    """Writes data under layout/blobs/sha256; returns (digest, size)."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)


def finish_layout(layout, layers, diff_ids, tag="bench"):
    """Writes the config, manifest, index.json and oci-layout of a one-image
    layout whose layer blobs (descriptors `layers`) are already in place."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cn = put_blob(layout, cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                      "config": {"mediaType": CONFIG, "digest": cd, "size": cn}, "layers": layers}).encode()
    md, mn = put_blob(layout, man)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": MANIFEST, "digest": md, "size": mn,
             "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def busy_note(start_load):
    """Other work on the machine skews every figure (FUSE round trips most).
    The load at the end includes the benchmark's own (about 1)."""
    end = os.getloadavg()[0]
    note = f"load average (1 min): {start_load:.2f} before starting, {end:.2f} at the end"
    if start_load > 0.5:
        note += " -- the machine was busy: rerun when it is idle"
    return note
