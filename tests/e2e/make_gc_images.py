#!/usr/bin/env python3
"""Writes the OCI image layout of the garbage-collection e2e case, no daemon.

    python3 make_gc_images.py DIR

DIR gets four linux/amd64 images, tagged a, b, c and d, that docker and
podman can pull and unpack. All four share one base layer; each has layers
of its own (c has two) and a config of its own:

  a  base + a1        b  base + b1        c  base + c1 + c2      d  base + d1

and `DIR/gc-refs.json`: for each tag its manifest digest and size, and the
digest and size of its config and of each layer, so the test can compute
exactly which bytes deleting some of them frees. Layers are gzip tars of
incompressible data (so sizes are what they say), written with fixed times:
the same script writes the same bytes.
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
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 1700000000

# tag -> [(layer name, KiB of data)]; "base" is shared by all.
IMAGES = {
    "a": [("base", 96), ("a1", 40)],
    "b": [("base", 96), ("b1", 48)],
    "c": [("base", 96), ("c1", 56), ("c2", 24)],
    "d": [("base", 96), ("d1", 32)],
}


def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def main(root: str) -> None:
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> dict:
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + h, "size": len(data)}

    layers = {}

    def layer(name: str, kib: int):
        if name not in layers:
            rng = random.Random(f"wharf-gc-e2e/{name}")
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
                info = tarfile.TarInfo(f"gc/{name}.bin")
                info.size, info.mtime, info.mode = kib * 1024, EPOCH, 0o644
                t.addfile(info, io.BytesIO(rng.randbytes(kib * 1024)))
            raw = buf.getvalue()
            gz = gzip.compress(raw, compresslevel=1, mtime=0)
            layers[name] = (put(gz), "sha256:" + hashlib.sha256(raw).hexdigest())
        return layers[name]

    index = {"schemaVersion": 2, "manifests": []}
    refs = {}
    for tag, spec in IMAGES.items():
        ls = [layer(n, k) for n, k in spec]
        config = canonical({
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {"Labels": {"org.wharf.e2e.gc": tag}},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in ls]},
        })
        cd = put(config)
        manifest = canonical({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **cd},
            "layers": [{"mediaType": OCI_LAYER_GZ, **d} for d, _ in ls],
        })
        md = put(manifest)
        index["manifests"].append({
            "mediaType": OCI_MANIFEST, **md,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
        refs[tag] = {
            "manifest": md["digest"],
            "manifest_size": md["size"],
            "config": cd,
            "layers": [d for d, _ in ls],
        }
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "gc-refs.json"), "w") as f:
        json.dump(refs, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
