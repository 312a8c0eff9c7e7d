#!/usr/bin/env python3
"""The generator of the scale benchmark (scripts/bench/scale.sh).

Run by hand through scale.sh, never by CI. Owns nothing but the files it
writes under --out; it only ever talks to a loopback address, and never
deletes anything from a registry.

The store is a pure function of the tag count N, so that it can be filled
incrementally (10^3, then up to 10^4, ...) and its request paths and
manifest digests written without asking the registry. Tag k (0 <= k < N):

  - every tenth tag (k % 10 == 0) goes to the "big" repository of tenant
    (k // 10) % 10, `tNN/big`: ten repositories that grow with N (N/100
    tags each), for the tag-list pages;
  - the others go to `tNN/appJJJJJ`, j = k // 100, tenant j % 10: blocks of
    90 tags, so there are about N/100 repositories (10 at 10^3, 10,000 at
    10^6), spread over 10 tenants, for the catalog.

Each repository holds four blobs, uploaded once when it first appears: a
base layer shared by every repository (8 KiB), two layers of its own (2 and
4 KiB) and an image config (~1 KiB JSON). Tag k is one manifest PUT of a
realistic OCI image manifest (~1 KiB) referencing them, made distinct by its
annotations (created time, VCS revision, version), so every tag is its own
manifest and N tags are N manifests.

Subcommands:
  fill   --addr --from N0 --to N1: pushes tags N0..N1-1 (and the blobs of
         the repositories they bring), PROCS processes x THREADS threads,
         each on a keep-alive connection; prints JSON counts and timings.
  paths  --size N --out DIR: request path files for the loads (uniform over
         the whole store): tag-paths, digest-paths, hot-paths (by tag, the
         same 1,000 tags at every size), taglist-paths (big
         repositories, the first page or one from a random tag on),
         catalog-paths (the first page or one from a random repository on).
  push   --addr --count C: pushes C small images (a config and three 4 KiB
         layers of random bytes, then the manifest), one after the other on
         one connection; prints JSON with each push's seconds and p50/p99.
  ready  --addr --timeout S: polls GET /v2/ every 5 ms until it answers 200;
         prints the wall-clock time (epoch seconds) it first did.

Uploads are monolithic (`POST .../blobs/uploads/?digest=`); a registry that
answers 202 (the reference registry) gets the body by `PUT` to the session.
A 429/503 or a dropped connection is retried after a short pause, a bounded
number of times.
"""

import argparse
import hashlib
import ipaddress
import json
import multiprocessing
import os
import random
import socket
import sys
import threading
import time

from keepalive import KeepAlive

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
RETRIES = 30
TENANTS = 10
BLOCK = 100  # tags per app repository block (90 of them in the app repo)
EPOCH = 1_760_000_000  # "created" of tag 0; tag k was built k seconds later


# ---------------------------------------------------------------- layout

def repo_of(k):
    if k % 10 == 0:
        return f"t{(k // 10) % TENANTS:02d}/big"
    j = k // BLOCK
    return f"t{j % TENANTS:02d}/app{j:05d}"


def tag_of(k):
    return f"v{k}"


def repos_of(n0, n1):
    """The repositories that tags n0..n1-1 put something in, in order of
    first appearance."""
    seen = {}
    for k in range(n0, min(n1, n0 + 100)):
        seen.setdefault(repo_of(k), None)
    for j in range(n0 // BLOCK, (n1 - 1) // BLOCK + 1):
        k = max(j * BLOCK + 1, n0)
        if k < n1:
            seen.setdefault(repo_of(k), None)
    return list(seen)


def existing_repos(n):
    """Every repository a store of n tags holds."""
    return repos_of(0, n)


def rand_bytes(seed, size):
    return random.Random(seed).randbytes(size)


BASE_LAYER = rand_bytes("wharf-scale base layer", 8192)


def repo_blobs(repo):
    """(config, [layers]) bodies of a repository: deterministic."""
    layers = [BASE_LAYER, rand_bytes(f"{repo} layer 1", 2048), rand_bytes(f"{repo} layer 2", 4096)]
    diff_ids = ["sha256:" + hashlib.sha256(b"diff " + l).hexdigest() for l in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Entrypoint": ["/usr/local/bin/app"], "WorkingDir": "/srv",
                   "Labels": {"org.example.repo": repo}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"build step {i}"}
                    for i in range(len(layers))],
    }, separators=(",", ":")).encode()
    return config, layers


def digest_of(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()


_descs = {}


def repo_descriptors(repo):
    d = _descs.get(repo)
    if d is None:
        config, layers = repo_blobs(repo)
        d = ({"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
             [{"mediaType": OCI_LAYER, "digest": digest_of(l), "size": len(l)} for l in layers])
        if len(_descs) > 20000:
            _descs.clear()
        _descs[repo] = d
    return d


def manifest_of(k):
    """(repo, tag, manifest bytes) of tag k."""
    repo, tag = repo_of(k), tag_of(k)
    config, layers = repo_descriptors(repo)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH + k))
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers,
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.revision": hashlib.sha1(f"rev {k}".encode()).hexdigest(),
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.source": f"https://git.example.com/{repo}",
            "org.opencontainers.image.title": repo.split("/")[-1],
        },
    }, separators=(",", ":")).encode()
    return repo, tag, body


# ---------------------------------------------------------------- client

class Client(KeepAlive):
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host, port):
        super().__init__(host, port, RETRIES)
        self.sessions = False  # the registry answered a monolithic POST with 202

    def upload(self, repo, body):
        """A blob into repo: monolithic, or POST then PUT where the
        registry opens a session instead. Returns (digest, ok, detail)."""
        d = digest_of(body)
        if self.sessions:
            st, data, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
        else:
            st, data, resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body,
                                          {"Content-Type": "application/octet-stream"})
        if st == 202:
            self.sessions = True
            loc = resp.getheader("location", "")
            if loc.startswith("http"):
                loc = "/" + loc.split("/", 3)[3]
            sep = "&" if "?" in loc else "?"
            st, data, _ = self.request("PUT", f"{loc}{sep}digest={d}", body,
                                       {"Content-Type": "application/octet-stream"})
        return d, st == 201, f"{st} {data[:200]!r}"

    def put_manifest(self, repo, ref, body):
        st, data, _ = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body,
                                   {"Content-Type": OCI_MANIFEST})
        return st == 201, f"{st} {data[:200]!r}"


def split_addr(addr):
    host, port = addr.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"scalefill: {host} is not a loopback address")
    return host, int(port)


# ---------------------------------------------------------------- fill

def run_threads(host, port, items, fn, threads, stats, lock):
    it = iter(items)
    it_lock = threading.Lock()

    def worker():
        cl = Client(host, port)
        while True:
            with it_lock:
                w = next(it, None)
            if w is None:
                return
            try:
                ok, what = fn(cl, w)
            except Exception as e:  # noqa: BLE001 - counted, the run goes on
                ok, what = False, f"{w}: {e}"
            if not ok:
                with lock:
                    stats["errors"] += 1
                    if len(stats["first_errors"]) < 5:
                        stats["first_errors"].append(what)

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def fill_part(args):
    """One process's share: items i with i % procs == part."""
    phase, addr, items, threads = args
    host, port = split_addr(addr)
    stats = {"errors": 0, "first_errors": [], "requests": 0}
    lock = threading.Lock()

    if phase == "blobs":
        def fn(cl, repo):
            config, layers = repo_blobs(repo)
            for body in [*layers, config]:
                _, ok, detail = cl.upload(repo, body)
                if not ok:
                    return False, f"upload {repo}: {detail}"
            with lock:
                stats["requests"] += 4
            return True, ""
    else:
        def fn(cl, k):
            repo, tag, body = manifest_of(k)
            ok, detail = cl.put_manifest(repo, tag, body)
            with lock:
                stats["requests"] += 1
            return ok, f"manifest {repo}:{tag}: {detail}"

    run_threads(host, port, items, fn, threads, stats, lock)
    return stats


def spread_order(n0, n1):
    """n0..n1-1 in a fixed shuffled order, which spreads consecutive pushes
    over the repositories and tenants (and inserts keys in random order)."""
    out = list(range(n0, n1))
    random.Random(n0 * 7919 + n1).shuffle(out)
    return out


def parallel(phase, addr, items, procs, threads):
    parts = [(phase, addr, items[i::procs], threads) for i in range(procs)]
    if procs == 1:
        results = [fill_part(parts[0])]
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            results = pool.map(fill_part, parts)
    total = {"errors": 0, "first_errors": [], "requests": 0}
    for r in results:
        total["errors"] += r["errors"]
        total["requests"] += r["requests"]
        total["first_errors"] += r["first_errors"][: 5 - len(total["first_errors"])]
    return total


def cmd_fill(a):
    if not 0 <= a.start < a.to:
        sys.exit("scalefill fill: needs 0 <= --from < --to")
    t0 = time.monotonic()
    repos = repos_of(a.start, a.to)
    blobs = parallel("blobs", a.addr, repos, a.procs, a.threads)
    t1 = time.monotonic()
    mans = parallel("manifests", a.addr, spread_order(a.start, a.to), a.procs, a.threads)
    t2 = time.monotonic()
    out = {
        "from": a.start, "to": a.to, "repos_touched": len(repos),
        "blob_requests": blobs["requests"], "manifest_puts": mans["requests"],
        "blob_seconds": round(t1 - t0, 2), "manifest_seconds": round(t2 - t1, 2),
        "manifests_per_sec": round(mans["requests"] / max(t2 - t1, 1e-9), 1),
        "errors": blobs["errors"] + mans["errors"],
        "first_errors": (blobs["first_errors"] + mans["first_errors"])[:5],
        "procs": a.procs, "threads": a.threads,
    }
    print(json.dumps(out))
    return 1 if out["errors"] else 0


# ---------------------------------------------------------------- paths

def cmd_paths(a):
    n, rng = a.size, random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    m = min(a.samples, n)
    ks = rng.sample(range(n), m)
    with open(os.path.join(a.out, "tag-paths"), "w") as ft, \
            open(os.path.join(a.out, "digest-paths"), "w") as fd:
        for k in ks:
            repo, tag, body = manifest_of(k)
            ft.write(f"/v2/{repo}/manifests/{tag}\n")
            fd.write(f"/v2/{repo}/manifests/{digest_of(body)}\n")
    # The hot set: the same 1,000 tags at every size (all of them exist from
    # 10^3 on), few enough to stay in the node's caches.
    hot = list(range(min(n, 1000)))
    rng.shuffle(hot)
    with open(os.path.join(a.out, "hot-paths"), "w") as f:
        for k in hot:
            f.write(f"/v2/{repo_of(k)}/manifests/{tag_of(k)}\n")
    with open(os.path.join(a.out, "taglist-paths"), "w") as f:
        for _ in range(a.pages):
            t = rng.randrange(TENANTS)
            big = [k for k in (rng.randrange(max(1, n // 100)) * 100 + 10 * t,) if k < n]
            if rng.random() < 0.5 or not big:
                f.write(f"/v2/t{t:02d}/big/tags/list?n=100\n")
            else:
                f.write(f"/v2/t{t:02d}/big/tags/list?n=100&last={tag_of(big[0])}\n")
    repos = existing_repos(n)
    with open(os.path.join(a.out, "catalog-paths"), "w") as f:
        for _ in range(a.pages):
            if rng.random() < 0.5:
                f.write("/v2/_catalog?n=100\n")
            else:
                f.write(f"/v2/_catalog?n=100&last={rng.choice(repos)}\n")
    print(json.dumps({"size": n, "samples": m, "repos": len(repos)}))
    return 0


# ---------------------------------------------------------------- push

def cmd_push(a):
    host, port = split_addr(a.addr)
    cl = Client(host, port)
    rng = random.Random(a.seed)
    secs, errors = [], []
    for i in range(a.count):
        if i and a.gap_ms:
            time.sleep(a.gap_ms / 1000)
        t0 = time.perf_counter()
        layers = [rng.randbytes(4096) for _ in range(3)]
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [digest_of(l) for l in layers]},
                             "config": {"Labels": {"probe": f"{a.seed}-{i}"}}}).encode()
        ok = True
        descs = []
        for body in layers + [config]:
            d, good, detail = cl.upload(a.repo, body)
            ok &= good
            if not good:
                errors.append(detail)
            descs.append({"mediaType": OCI_LAYER, "digest": d, "size": len(body)})
        cfg = descs.pop()
        cfg["mediaType"] = OCI_CONFIG
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                        "layers": descs}, separators=(",", ":")).encode()
        good, detail = cl.put_manifest(a.repo, f"probe-{a.seed}-{i}", m)
        if not good:
            errors.append(detail)
        elif ok:
            secs.append(time.perf_counter() - t0)
    secs_sorted = sorted(secs)

    def pct(p):
        if not secs_sorted:
            return None
        return secs_sorted[min(len(secs_sorted) - 1, int(round(p / 100 * (len(secs_sorted) - 1))))]

    print(json.dumps({"count": a.count, "ok": len(secs), "p50_ms": round(pct(50) * 1000, 2) if secs else None,
                      "p99_ms": round(pct(99) * 1000, 2) if secs else None,
                      "max_ms": round(secs_sorted[-1] * 1000, 2) if secs else None,
                      "seconds": [round(s, 5) for s in secs], "errors": errors[:5]}))
    return 1 if errors else 0


# ---------------------------------------------------------------- ready

def cmd_ready(a):
    host, port = split_addr(a.addr)
    deadline = time.monotonic() + a.timeout
    req = f"GET {a.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                    print(f"{time.time():.4f}")
                    return 0
        except OSError:
            pass
        time.sleep(0.005)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--addr", required=True)
    f.add_argument("--from", dest="start", type=int, required=True)
    f.add_argument("--to", type=int, required=True)
    f.add_argument("--procs", type=int, default=2)
    f.add_argument("--threads", type=int, default=16)
    p = sub.add_parser("paths")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=100000)
    p.add_argument("--pages", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    u = sub.add_parser("push")
    u.add_argument("--addr", required=True)
    u.add_argument("--repo", required=True)
    u.add_argument("--count", type=int, default=50)
    u.add_argument("--seed", type=int, default=1)
    u.add_argument("--gap-ms", type=float, default=0,
                   help="pause before each push after the first (not timed)")
    r = sub.add_parser("ready")
    r.add_argument("--addr", required=True)
    r.add_argument("--path", default="/v2/")
    r.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    return {"fill": cmd_fill, "paths": cmd_paths, "push": cmd_push, "ready": cmd_ready}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
