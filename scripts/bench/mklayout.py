#!/usr/bin/env python3
"""Benchmark image generator for scripts/bench/run.sh.

  mklayout.py make OUT --tag 1 --layers 4 --size BYTES
      Writes an OCI image layout at OUT: LAYERS uncompressed tar layers
      (media type application/vnd.oci.image.layer.v1.tar), each one file of
      SIZE random bytes, a config whose diff_ids match, and an OCI manifest
      tagged TAG. Everything is streamed in 1 MiB chunks: a 2 GiB layer never
      sits in memory. Prints a JSON summary (digests, sizes) on stdout.

  mklayout.py publish OUT --tag 1 --root NGINX_ROOT --repo bench/x
      Lays the same bytes out for nginx: ROOT/v2/REPO/manifests/{TAG,DIGEST}
      and ROOT/v2/REPO/blobs/DIGEST (hard links when possible, else copies).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

CHUNK = 1 << 20
LAYER_MT = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"


class RandomReader(io.RawIOBase):
    """A file-like object yielding `size` random bytes, chunk by chunk."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        n = min(n, CHUNK)
        self.left -= n
        return os.urandom(n)


class HashingWriter:
    """Write-through to `f`, hashing as it goes (tarfile needs only these)."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def tell(self):
        return self.n

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def put_blob_bytes(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd, len(data)


def make(args):
    blobs = os.path.join(args.out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers = []
    for i in range(args.layers):
        tmp = os.path.join(blobs, f".layer{i}.tmp")
        with open(tmp, "wb") as raw:
            hw = HashingWriter(raw)
            with tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"bench/layer{i}.bin")
                info.size = args.size
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, RandomReader(args.size))
        hexd = hw.h.hexdigest()
        os.rename(tmp, os.path.join(blobs, hexd))
        layers.append({"mediaType": LAYER_MT, "digest": "sha256:" + hexd, "size": hw.n})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
    }
    cdig, csize = put_blob_bytes(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": cdig, "size": csize},
        "layers": layers,
    }
    mdata = json.dumps(manifest, sort_keys=True).encode()
    mdig, msize = put_blob_bytes(blobs, mdata)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MT,
            "digest": mdig,
            "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": args.tag},
        }],
    }
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f)
    json.dump({
        "manifest": mdig,
        "manifest_size": msize,
        "config": cdig,
        "layers": [l["digest"] for l in layers],
        "layer_bytes": sum(l["size"] for l in layers),
    }, sys.stdout)
    sys.stdout.write("\n")


def link_or_copy(src, dst):
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def publish(args):
    with open(os.path.join(args.out, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag)
    blobs = os.path.join(args.out, "blobs", "sha256")
    base = os.path.join(args.root, "v2", args.repo)
    os.makedirs(os.path.join(base, "manifests"), exist_ok=True)
    os.makedirs(os.path.join(base, "blobs"), exist_ok=True)
    mpath = os.path.join(blobs, desc["digest"].split(":", 1)[1])
    link_or_copy(mpath, os.path.join(base, "manifests", args.tag))
    link_or_copy(mpath, os.path.join(base, "manifests", desc["digest"]))
    with open(mpath) as f:
        manifest = json.load(f)
    for d in [manifest["config"]] + manifest["layers"]:
        link_or_copy(os.path.join(blobs, d["digest"].split(":", 1)[1]),
                     os.path.join(base, "blobs", d["digest"]))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--tag", default="1")
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--size", type=int, default=64 << 20)
    pb = sub.add_parser("publish")
    pb.add_argument("out")
    pb.add_argument("--tag", default="1")
    pb.add_argument("--root", required=True)
    pb.add_argument("--repo", required=True)
    args = p.parse_args()
    make(args) if args.cmd == "make" else publish(args)


if __name__ == "__main__":
    main()
