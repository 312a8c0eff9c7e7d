#!/usr/bin/env python3
"""Writes a small OCI image layout for Wharf's end-to-end tests, no daemon.

    python3 make_layout.py DIR

DIR gets `oci-layout`, `index.json` and `blobs/sha256/...` with two tags:

  1      a linux/amd64 image (two gzip layers, one of ~1 MiB incompressible
         data), valid enough for docker and podman to pull and unpack
  multi  an image index of a linux/amd64 and a linux/arm64 image

and `DIR/refs.json`, which names the digests the tests compare against.
Everything is deterministic: the same script writes the same bytes.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 1700000000  # fixed mtime for every tar entry
CREATED = "2023-11-14T22:13:20Z"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data: bytes) -> str:
        digest = sha256(data)
        path = os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])
        with open(path, "wb") as f:
            f.write(data)
        return digest

    def descriptor(self, media_type: str, data: bytes, **extra) -> dict:
        d = {"mediaType": media_type, "digest": self.blob(data), "size": len(data)}
        d.update(extra)
        return d


def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def tar_layer(files: dict) -> bytes:
    """An uncompressed tar of {path: bytes}; directories end with '/'."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(path.rstrip("/"))
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if path.endswith("/"):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as f:
        f.write(data)
    return buf.getvalue()


def image(layout: Layout, arch: str, layers: list, annotations=None):
    """Writes one image (layers are lists of uncompressed tars); returns
    (manifest descriptor, manifest bytes, facts)."""
    diff_ids, layer_descs = [], []
    for raw in layers:
        diff_ids.append(sha256(raw))
        layer_descs.append(layout.descriptor(OCI_LAYER_GZ, gz(raw)))
    config = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.wharf.e2e": arch},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": f"wharf e2e layer {i}"}
            for i in range(len(layers))
        ],
    }
    if arch == "arm64":
        config["variant"] = "v8"
    config_desc = layout.descriptor(OCI_CONFIG, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    }
    if annotations:
        manifest["annotations"] = annotations
    mbytes = json.dumps(manifest, indent=2).encode()
    mdesc = layout.descriptor(OCI_MANIFEST, mbytes)
    facts = {
        "manifest": mdesc["digest"],
        "config": config_desc["digest"],
        "layers": [d["digest"] for d in layer_descs],
        "diff_ids": diff_ids,
        "arch": arch,
    }
    return mdesc, facts


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_layout.py DIR")
    root = sys.argv[1]
    layout = Layout(root)
    rnd = random.Random(20240501)

    # linux/amd64, tag "1": a small "base" layer and ~1 MiB of noise so the
    # upload is more than one read buffer and does not compress away.
    base = tar_layer({
        "etc/": b"",
        "etc/os-release": b'NAME="wharf-e2e"\nID=wharf-e2e\n',
        "etc/wharf-e2e": b"amd64 base layer\n",
    })
    noise = tar_layer({
        "data/": b"",
        "data/noise.bin": rnd.randbytes(1024 * 1024 + 4321),
        "hello.txt": b"hello from wharf e2e (amd64)\n",
    })
    amd64_desc, amd64 = image(layout, "amd64", [base, noise])

    # linux/arm64: its own config and layer.
    arm = tar_layer({
        "etc/": b"",
        "etc/wharf-e2e": b"arm64 only layer\n",
        "hello.txt": b"hello from wharf e2e (arm64)\n",
    })
    arm64_desc, arm64 = image(layout, "arm64", [arm])

    # The multi-arch index, pointing at both.
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            dict(amd64_desc, platform={"architecture": "amd64", "os": "linux"}),
            dict(arm64_desc, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ],
    }
    ibytes = json.dumps(index, indent=2).encode()
    index_desc = layout.descriptor(OCI_INDEX, ibytes)

    ref = "org.opencontainers.image.ref.name"
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            dict(amd64_desc, annotations={ref: "1"}),
            dict(index_desc, annotations={ref: "multi"}),
        ],
    }
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(top, f, indent=2)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(root, "refs.json"), "w") as f:
        json.dump({"amd64": amd64, "arm64": arm64, "index": index_desc["digest"]}, f, indent=2)


if __name__ == "__main__":
    main()
