#!/usr/bin/env python3
"""Fills a Wharf node for the garbage-collection benchmark (scripts/bench/gc.sh).

Run by hand through gc.sh, never by CI; it only talks to a loopback address.

The store it builds, in REPOS repositories spread over TENANTS tenants:

  - MANIFESTS image manifests, each with a config of its own and LAYERS
    layers: one base layer shared by every manifest of its repository, and
    LAYERS - 1 layers of its own. Every blob is BLOB_BYTES long and unique
    (a counter and random bytes), so nothing is shared by accident.
  - then every DELETE_EVERY-th manifest of each repository is deleted by
    digest: its config and its own layers are then referenced by nothing
    (about a tenth of the blobs and of the manifests), while the base layer
    it shared stays referenced by the others and must be kept.

Blobs go up as monolithic uploads (`POST .../blobs/uploads/?digest=`), each
thread on its own keep-alive connection; a 429/503 is retried after a short
pause, a bounded number of times.

Writes to OUT: `manifest-paths` and `blob-paths` (kept content, one request
path a line, for the pull loads), `gone-blob-paths` (a sample of deleted
content, which must answer 404 after the pass), and `fill.json` with the
counts, what a pass must reclaim (contents and bytes) and the timings.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import queue
import random
import sys
import threading
import time

from keepalive import KeepAlive

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
RETRIES = 20


class Client(KeepAlive):
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host, port):
        super().__init__(host, port, RETRIES)


class Maker:
    """Unique blob bodies: a counter and random bytes."""

    def __init__(self, size, seed):
        self.size = size
        self.rng = random.Random(seed)
        self.n = 0
        self.lock = threading.Lock()

    def blob(self):
        with self.lock:
            self.n += 1
            n = self.n
            pad = self.rng.randbytes(max(0, self.size - 32))
        head = f"wharf-gc-bench {n:012d}\n".encode()
        body = (head + pad)[: self.size] if self.size >= len(head) else head
        return body


def digest_of(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", required=True, help="ip:port of the registry (loopback)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--manifests", type=int, default=10000)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--blob-bytes", type=int, default=1024)
    ap.add_argument("--delete-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    host, port = a.addr.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"gcfill: {host} is not a loopback address")
    port = int(port)
    if a.layers < 2 or a.repos < 1 or a.manifests < a.repos:
        sys.exit("gcfill: needs --layers >= 2 and --manifests >= --repos >= 1")
    os.makedirs(a.out, exist_ok=True)
    maker = Maker(a.blob_bytes, a.seed)
    repos = [f"t{r % a.tenants:02d}/app{r:04d}" for r in range(a.repos)]
    per_repo = a.manifests // a.repos

    lock = threading.Lock()
    stats = {"blob_uploads": 0, "manifest_puts": 0, "manifest_deletes": 0, "errors": 0}
    first_error = []

    def count(key, n=1):
        with lock:
            stats[key] += n

    def err(msg):
        with lock:
            stats["errors"] += 1
            if len(first_error) < 5:
                first_error.append(msg)

    def upload(cl, repo, body):
        d = digest_of(body)
        st, data, _ = cl.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body,
                                 {"Content-Type": "application/octet-stream"})
        if st != 201:
            err(f"upload {repo} {d}: {st} {data[:200]!r}")
        count("blob_uploads")
        return d

    def run_threads(work, fn):
        q = queue.Queue()
        for w in work:
            q.put(w)

        def worker():
            cl = Client(host, port)
            while True:
                try:
                    w = q.get_nowait()
                except queue.Empty:
                    return
                try:
                    fn(cl, w)
                except Exception as e:  # noqa: BLE001 - counted, the run goes on
                    err(f"{w}: {e}")

        ts = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    t0 = time.monotonic()
    # 1. the shared base layer of each repository
    base = {}

    def push_base(cl, repo):
        body = maker.blob()
        base[repo] = (upload(cl, repo, body), len(body))

    run_threads(repos, push_base)

    # 2. the manifests, each with its config and its own layers
    records = {}  # (repo, i) -> (manifest digest, manifest bytes, own blob digests, own bytes)

    def push_image(cl, w):
        repo, i = w
        own, own_bytes = [], 0
        cfg = json.dumps({"architecture": "amd64", "os": "linux",
                          "config": {"Labels": {"bench": maker.blob()[:27].decode()}}}).encode()
        cd = upload(cl, repo, cfg)
        own.append(cd)
        own_bytes += len(cfg)
        layers = [{"mediaType": OCI_LAYER, "digest": base[repo][0], "size": base[repo][1]}]
        for _ in range(a.layers - 1):
            body = maker.blob()
            d = upload(cl, repo, body)
            own.append(d)
            own_bytes += len(body)
            layers.append({"mediaType": OCI_LAYER, "digest": d, "size": len(body)})
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(cfg)},
                        "layers": layers}, separators=(",", ":")).encode()
        st, data, _ = cl.request("PUT", f"/v2/{repo}/manifests/m{i}", m,
                                 {"Content-Type": OCI_MANIFEST})
        if st != 201:
            err(f"manifest {repo} m{i}: {st} {data[:200]!r}")
        count("manifest_puts")
        with lock:
            records[(repo, i)] = (digest_of(m), len(m), own, own_bytes)

    work = [(repo, i) for i in range(per_repo) for repo in repos]
    run_threads(work, push_image)
    t_push = time.monotonic() - t0

    # 3. delete every DELETE_EVERY-th manifest of each repository
    doomed = [(repo, i) for (repo, i) in records if i % a.delete_every == a.delete_every - 1]

    def delete(cl, w):
        repo, i = w
        md = records[w][0]
        st, data, _ = cl.request("DELETE", f"/v2/{repo}/manifests/{md}")
        if st != 202:
            err(f"delete {repo} {md}: {st} {data[:200]!r}")
        count("manifest_deletes")

    t1 = time.monotonic()
    run_threads(doomed, delete)
    t_delete = time.monotonic() - t1

    gone = set(doomed)
    kept = [k for k in records if k not in gone]
    exp_blobs = sum(len(records[k][2]) for k in doomed)
    exp_blob_bytes = sum(records[k][3] for k in doomed)
    exp_manifest_bytes = sum(records[k][1] for k in doomed)
    blobs_total = len(base) + sum(len(r[2]) for r in records.values())

    rng = random.Random(a.seed + 1)
    with open(os.path.join(a.out, "manifest-paths"), "w") as f:
        for repo, i in kept:
            f.write(f"/v2/{repo}/manifests/m{i}\n")
    blob_paths = []
    for repo, i in kept:
        for d in records[(repo, i)][2]:
            blob_paths.append(f"/v2/{repo}/blobs/{d}")
    blob_paths += [f"/v2/{repo}/blobs/{d}" for repo, (d, _) in base.items()]
    rng.shuffle(blob_paths)
    with open(os.path.join(a.out, "blob-paths"), "w") as f:
        f.write("\n".join(blob_paths[:20000]) + "\n")
    with open(os.path.join(a.out, "gone-blob-paths"), "w") as f:
        for repo, i in doomed[:50]:
            f.write(f"/v2/{repo}/blobs/{records[(repo, i)][2][-1]}\n")
            f.write(f"/v2/{repo}/manifests/{records[(repo, i)][0]}\n")

    out = {
        "repos": a.repos,
        "tenants": a.tenants,
        "blob_bytes": a.blob_bytes,
        "blobs": blobs_total,
        "manifests": len(records),
        "manifests_deleted": len(doomed),
        "blobs_unreferenced": exp_blobs,
        "expected_deleted": exp_blobs + len(doomed),
        "expected_bytes": exp_blob_bytes + exp_manifest_bytes,
        "push_seconds": round(t_push, 1),
        "delete_seconds": round(t_delete, 1),
        "threads": a.threads,
        **stats,
        "first_errors": first_error,
    }
    with open(os.path.join(a.out, "fill.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
