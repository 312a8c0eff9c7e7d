#!/usr/bin/env python3
"""Mixed push/pull load and its bookkeeping, for tests/faults/run.sh.

Talks the OCI distribution API over plain HTTP/1.1 (Python's standard
library only: a small asyncio client, one connection per request, each
request bounded by --deadline as a whole, connecting included).

  load.py seed    --lb URL --nodes URL,URL,.. --images N --out seed.json
  load.py run     --lb URL --seed seed.json --case NAME --pushers P --pullers Q
                  --deadline S --stop FILE --max-secs S --max-requests N
                  --events OUT.jsonl --acked ACKED.jsonl
  load.py recover --nodes URL,.. --admins URL,.. --haproxy-sock PATH
                  --seed seed.json --since EPOCH --max-secs S --out rec.json
  load.py verify  --lb URL --acked ACKED.jsonl[,..] --deadline S --out verify.json
  load.py report  --case NAME --events OUT.jsonl --acked ACKED.jsonl
                  --marks MARKS --verify verify.json --recover rec.json
                  --deadline S --out figures.json

seed: pushes N images through the load balancer and pulls each once
through every node directly, so that every node has seen them.

run: until FILE exists, S seconds have passed or N requests were sent,
pushers push new images (one config, one or two layers of pseudo-random
bytes; every fourth image also has a 300 KiB layer, past the nodes'
small-blob memory, so its pulls go to the object store), alternating a
monolithic upload (POST ?digest=) and a session (POST, then PUT ?digest=,
which HAProxy may send to another node), then PUT the manifest by a tag of
its own. A push is acknowledged when the manifest PUT answers 201 with
the digest the client computed; until then a failed step (5xx, 429,
timeout, connection error) is tried again after Retry-After (at most
1 s), at most 6 times. Pullers pull (manifest by tag, digest checked,
then every blob, bytes checked) seeded images and images this run
acknowledged, each request tried at most 3 times. Every request is one
event (start, duration, step, status, attempt, the content's
acknowledgement time); every acknowledged push goes to ACKED (written
with the events when the load ends).

recover: after a fault is healed, sweeps every 0.25 s until, in one sweep,
every node's /readyz answers 200, HAProxy shows every server UP, and
through every node directly a new blob is pushed (201), a seeded manifest
is pulled by tag (digest checked) and a seeded layer past the small-blob
memory is read (bytes checked), and every sweep for --stable seconds more
does too. Writes how many seconds after --since the first of those good
sweeps began (a good sweep followed by a bad one does not count).

verify: every acknowledged push through the load balancer: manifest by
tag and by digest, then every blob; each body must hash to its digest (so
it is byte-identical to what was pushed). A 5xx is asked again at most 3
times (the cluster is healed by then); anything else is a failure.

report: the figures of one case from the events, the marks (lines
`fault EPOCH`, `heal EPOCH`), verify and recover, and from the nodes' own
access logs (--node-logs) the slowest answer any node gave while the load
ran (a client's time includes HAProxy's retries on other nodes; a node's
is its own).

Owns: nothing but its own files. Must never: wait without a bound (every
request has a deadline, every loop a count or a clock), or reuse a tag
(each push has its own, so "present afterwards" has one meaning).
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import random
import socket
import sys
import time
import urllib.parse

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT = MANIFEST + ", application/vnd.oci.image.index.v1+json"
RETRY_STATUS = {429, 500, 502, 503, 504}
BIG_LAYER = 300 * 1024  # past the nodes' small-blob memory (256 KiB)


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def now():
    return time.time()


# ---------------------------------------------------------------- HTTP


class Resp:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body


async def _read_body(r, method, status, headers):
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await r.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await r.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += await r.readexactly(size)
            await r.readexactly(2)
    if "content-length" in headers:
        return await r.readexactly(int(headers["content-length"]))
    return await r.read()


async def _request(method, url, headers, body):
    u = urllib.parse.urlsplit(url)
    r, w = await asyncio.open_connection(u.hostname, u.port or 80)
    try:
        path = u.path + ("?" + u.query if u.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {u.netloc}", "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        w.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body:
            w.write(body)
        await w.drain()
        line = await r.readline()
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ConnectionError(f"no status line ({line[:40]!r})")
        status = int(parts[1])
        hdrs = {}
        while True:
            h = await r.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        data = await _read_body(r, method, status, hdrs)
        return Resp(status, hdrs, data)
    finally:
        w.close()


async def request(method, url, deadline, headers=None, body=None):
    """(Resp or None, outcome, seconds): outcome is the status as a string,
    `timeout` when the deadline passed, or `error:<kind>`."""
    t0 = time.monotonic()
    try:
        resp = await asyncio.wait_for(_request(method, url, headers, body), deadline)
        return resp, str(resp.status), time.monotonic() - t0
    except asyncio.TimeoutError:
        return None, "timeout", time.monotonic() - t0
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
        return None, "error:" + type(e).__name__, time.monotonic() - t0


def retry_after(resp):
    try:
        return min(1.0, max(0.05, float(resp.headers.get("retry-after", "0.2"))))
    except (AttributeError, ValueError):
        return 0.2


# ---------------------------------------------------------------- images


def make_image(rng, label, big):
    """(manifest bytes, digest, {digest: bytes}) of a new image."""
    blobs = {}
    layers = []
    sizes = [rng.randint(1024, 32 * 1024)]
    if rng.random() < 0.4:
        sizes.append(rng.randint(1024, 16 * 1024))
    if big:
        sizes.append(BIG_LAYER)
    for n in sizes:
        data = rng.randbytes(n)
        d = sha(data)
        blobs[d] = data
        layers.append({"mediaType": LAYER, "digest": d, "size": n})
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"org.wharf.faults": label}},
         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}},
        separators=(",", ":"), sort_keys=True).encode()
    cd = sha(config)
    blobs[cd] = config
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST,
         "config": {"mediaType": CONFIG, "digest": cd, "size": len(config)}, "layers": layers},
        separators=(",", ":"), sort_keys=True).encode()
    return manifest, sha(manifest), blobs


class Load:
    def __init__(self, a):
        self.a = a
        self.events = []
        self.sent = 0
        self.t_end = now() + a.max_secs
        self.acked = []  # this run's acknowledged images
        self.seed = json.load(open(a.seed))["images"] if getattr(a, "seed", None) else []

    def stopping(self):
        return (now() >= self.t_end or self.sent >= self.a.max_requests
                or os.path.exists(self.a.stop))

    async def req(self, op, step, method, url, attempt, content_acked, headers=None, body=None,
                  worker="", src=None):
        self.sent += 1
        t = now()
        resp, outcome, secs = await request(method, url, self.a.deadline, headers, body)
        e = {"t": round(t, 4), "s": round(secs, 4), "op": op, "step": step, "out": outcome,
             "try": attempt, "acked_at": content_acked, "w": worker}
        if src:
            e["src"] = src
        self.events.append(e)
        return resp, outcome

    # ---- push

    async def upload_blob(self, repo, d, data, mono, w):
        lb = self.a.lb
        for attempt in range(1, 7):
            if mono:
                resp, out = await self.req("push", "blob-mono", "POST",
                                           f"{lb}/v2/{repo}/blobs/uploads/?digest={d}", attempt,
                                           None, {"Content-Type": "application/octet-stream"},
                                           data, w)
                if out == "201":
                    return True
            else:
                resp, out = await self.req("push", "blob-post", "POST",
                                           f"{lb}/v2/{repo}/blobs/uploads/", attempt, None,
                                           None, b"", w)
                if out == "202":
                    loc = resp.headers.get("location", "")
                    if loc.startswith("/"):
                        loc = lb + loc
                    sep = "&" if "?" in loc else "?"
                    resp, out = await self.req("push", "blob-put", "PUT",
                                               f"{loc}{sep}digest={d}", attempt, None,
                                               {"Content-Type": "application/octet-stream"},
                                               data, w)
                    if out == "201":
                        return True
            if resp is not None and resp.status not in RETRY_STATUS and resp.status != 404:
                return False
            await asyncio.sleep(retry_after(resp) + random.random() * 0.1)
        return False

    async def push_one(self, rng, w, n):
        repo = f"faults/{self.a.case}"
        tag = f"w{w}-{n}"
        manifest, md, blobs = make_image(rng, f"{self.a.case}/{tag}", n % 4 == 3)
        mono = n % 2 == 0
        for d, data in blobs.items():
            if not await self.upload_blob(repo, d, data, mono, f"push{w}"):
                return
        for attempt in range(1, 7):
            resp, out = await self.req("push", "manifest-put", "PUT",
                                       f"{self.a.lb}/v2/{repo}/manifests/{tag}", attempt, None,
                                       {"Content-Type": MANIFEST}, manifest, f"push{w}")
            if out == "201":
                got = resp.headers.get("docker-content-digest", "")
                rec = {"repo": repo, "tag": tag, "manifest": md, "blobs": list(blobs),
                       "acked_at": round(now(), 4), "digest_header_ok": got == md}
                self.acked.append(rec)
                return
            if resp is not None and resp.status not in RETRY_STATUS:
                return
            await asyncio.sleep(retry_after(resp) + random.random() * 0.1)

    async def pusher(self, w):
        rng = random.Random(f"{self.a.case}/{w}/{os.getpid()}")
        n = 0
        while not self.stopping():
            await self.push_one(rng, w, n)
            n += 1

    # ---- pull

    async def fetch(self, step, url, want, acked_at, w, src, headers=None):
        """True when some attempt got 200 with bytes hashing to `want`."""
        for attempt in range(1, 4):
            resp, out = await self.req("pull", step, "GET", url, attempt, acked_at, headers,
                                       None, w, src)
            if out == "200":
                if sha(resp.body) == want:
                    return True
                self.events[-1]["out"] = "corrupt"
                return False
            if resp is not None and resp.status not in RETRY_STATUS:
                return False
            await asyncio.sleep(retry_after(resp) + random.random() * 0.1)
        return False

    async def pull_one(self, rng, w):
        seeded = not self.acked or rng.random() < 0.5
        img = rng.choice(self.seed if seeded else self.acked)
        src = "seed" if seeded else "run"
        acked_at = img["acked_at"]
        base = f"{self.a.lb}/v2/{img['repo']}"
        if not await self.fetch("manifest-get", f"{base}/manifests/{img['tag']}",
                                img["manifest"], acked_at, w, src, {"Accept": ACCEPT}):
            return
        for d in img["blobs"]:
            if not await self.fetch("blob-get", f"{base}/blobs/{d}", d, acked_at, w, src):
                return

    async def puller(self, w):
        rng = random.Random(f"pull/{self.a.case}/{w}/{os.getpid()}")
        while not self.stopping():
            await self.pull_one(rng, f"pull{w}")


async def cmd_run(a):
    load = Load(a)
    tasks = [load.pusher(i) for i in range(a.pushers)]
    tasks += [load.puller(i) for i in range(a.pullers)]
    t0 = now()
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(r, BaseException):
            print(f"load {a.case}: a worker failed: {r!r}", file=sys.stderr)
    # Written once, at the end: no file I/O on the event loop while the
    # load runs (a write stalled by the disk would stall every worker).
    with open(a.events, "w") as f:
        for e in load.events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    with open(a.acked, "a") as f:
        for rec in load.acked:
            f.write(json.dumps(rec) + "\n")
    print(f"load {a.case}: {len(load.events)} requests in {now() - t0:.1f}s, "
          f"{len(load.acked)} pushes acknowledged", flush=True)


# ---------------------------------------------------------------- seed


async def cmd_seed(a):
    rng = random.Random(f"seed/{os.getpid()}/{now()}")
    images = []
    for n in range(a.images):
        repo, tag = "faults/seed", f"s{n}"
        manifest, md, blobs = make_image(rng, f"seed/{tag}", n % 2 == 1)
        for d, data in blobs.items():
            resp, out, _ = await request("POST", f"{a.lb}/v2/{repo}/blobs/uploads/?digest={d}", 30,
                                         {"Content-Type": "application/octet-stream"}, data)
            if out != "201":
                sys.exit(f"seed: blob upload {d} -> {out}")
        resp, out, _ = await request("PUT", f"{a.lb}/v2/{repo}/manifests/{tag}", 30,
                                     {"Content-Type": MANIFEST}, manifest)
        if out != "201":
            sys.exit(f"seed: manifest PUT {repo}:{tag} -> {out}")
        images.append({"repo": repo, "tag": tag, "manifest": md, "blobs": list(blobs),
                       "acked_at": round(now(), 4),
                       "big": [d for d, b in blobs.items() if len(b) > 256 * 1024]})
    # Every node sees every seeded image once (tag, manifest, blobs).
    for node in a.nodes.split(","):
        for img in images:
            base = f"{node}/v2/{img['repo']}"
            for url, want, h in [(f"{base}/manifests/{img['tag']}", img["manifest"], {"Accept": ACCEPT}),
                                 (f"{base}/manifests/{img['manifest']}", img["manifest"], {"Accept": ACCEPT})] + \
                                [(f"{base}/blobs/{d}", d, None) for d in img["blobs"]]:
                resp, out, _ = await request("GET", url, 30, h)
                if out != "200" or sha(resp.body) != want:
                    sys.exit(f"seed: GET {url} -> {out}")
    json.dump({"images": images}, open(a.out, "w"), indent=1)
    print(f"seeded {len(images)} images, each pulled once through {len(a.nodes.split(','))} nodes")


# ---------------------------------------------------------------- recover


def haproxy_states(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(sock_path)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    lines = data.decode(errors="replace").splitlines()
    cols = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        f = line.split(",")
        if len(f) == len(cols) and f[0] == "wharf" and f[1] not in ("BACKEND", "FRONTEND"):
            out[f[1]] = f[cols.index("status")]
    return out


async def sweep(a, seed, n):
    """None when everything serves, else what did not (first found)."""
    try:
        states = haproxy_states(a.haproxy_sock)
    except OSError as e:
        return f"haproxy stats: {e}"
    bad = [f"{k} {v}" for k, v in sorted(states.items()) if v != "UP"]
    if bad or len(states) != len(a.nodes.split(",")):
        return "haproxy: " + ", ".join(bad or [str(states)])
    img = seed[n % len(seed)]
    big = next((i for i in seed if i.get("big")), img)
    for i, (node, admin) in enumerate(zip(a.nodes.split(","), a.admins.split(","))):
        _, out, _ = await request("GET", f"{admin}/readyz", 2)
        if out != "200":
            return f"node{i + 1} /readyz {out}"
        data = f"recover {os.getpid()} {n} {i} {now()}".encode()
        _, out, _ = await request("POST", f"{node}/v2/faults/recover/blobs/uploads/?digest={sha(data)}",
                                  2, {"Content-Type": "application/octet-stream"}, data)
        if out != "201":
            return f"node{i + 1} push {out}"
        resp, out, _ = await request("GET", f"{node}/v2/{img['repo']}/manifests/{img['tag']}", 2,
                                     {"Accept": ACCEPT})
        if out != "200" or sha(resp.body) != img["manifest"]:
            return f"node{i + 1} manifest {out}"
        d = big["big"][0] if big.get("big") else big["blobs"][0]
        resp, out, _ = await request("GET", f"{node}/v2/{big['repo']}/blobs/{d}", 3)
        if out != "200" or sha(resp.body) != d:
            return f"node{i + 1} blob {out}"
    return None


async def cmd_recover(a):
    seed = json.load(open(a.seed))["images"]
    t_end = a.since + a.max_secs + a.stable
    n = 0
    last = None
    good_since = None  # start of the current run of good sweeps
    while True:
        t = now()
        why = await sweep(a, seed, n)
        n += 1
        if why is None:
            if good_since is None:
                good_since = t
            if now() - good_since >= a.stable:
                rec = {"recovered": True, "seconds": round(max(0.0, good_since - a.since), 2),
                       "sweeps": n, "last_failure": last}
                break
        else:
            good_since = None
            last = why
        if now() >= t_end or (good_since is None and now() >= a.since + a.max_secs):
            rec = {"recovered": False, "seconds": None, "sweeps": n, "last_failure": last,
                   "waited": round(now() - a.since, 2)}
            break
        await asyncio.sleep(0.25)
    json.dump(rec, open(a.out, "w"))
    print(json.dumps(rec))
    sys.exit(0 if rec["recovered"] else 1)


# ---------------------------------------------------------------- verify


async def verify_one(a, img, sem):
    async with sem:
        base = f"{a.lb}/v2/{img['repo']}"
        checks = [(f"{base}/manifests/{img['tag']}", img["manifest"], {"Accept": ACCEPT}),
                  (f"{base}/manifests/{img['manifest']}", img["manifest"], {"Accept": ACCEPT})]
        checks += [(f"{base}/blobs/{d}", d, None) for d in img["blobs"]]
        for url, want, h in checks:
            for attempt in range(1, 4):
                resp, out, _ = await request("GET", url, a.deadline, h)
                if (resp is None or resp.status in RETRY_STATUS) and attempt < 3:
                    await asyncio.sleep(0.5)
                    continue
                break
            if out != "200":
                return f"{img['repo']}:{img['tag']} GET {url.split('/v2/')[1]} -> {out}"
            if sha(resp.body) != want:
                return f"{img['repo']}:{img['tag']} GET {url.split('/v2/')[1]}: bytes hash to {sha(resp.body)}"
        return None


async def cmd_verify(a):
    imgs = []
    for path in a.acked.split(","):
        if os.path.exists(path):
            imgs += [json.loads(l) for l in open(path) if l.strip()]
    sem = asyncio.Semaphore(8)
    results = await asyncio.gather(*(verify_one(a, i, sem) for i in imgs))
    bad = [r for r in results if r]
    header_bad = [f"{i['repo']}:{i['tag']}" for i in imgs if not i.get("digest_header_ok", True)]
    out = {"acknowledged": len(imgs), "identical": len(imgs) - len(bad), "failures": bad[:20],
           "digest_header_mismatch": header_bad[:20]}
    json.dump(out, open(a.out, "w"))
    print(f"verify: {out['identical']} of {out['acknowledged']} acknowledged pushes present and "
          f"byte-identical" + (f"; first failure: {bad[0]}" if bad else ""))
    sys.exit(0 if not bad and not header_bad else 1)


# ---------------------------------------------------------------- report


def pct(xs, q):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def node_answers(paths, since, until):
    """The slowest answer in the nodes' access logs between since and until:
    (seconds, description), and how many answers were read."""
    worst, n = (0.0, None), 0
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            continue
        for line in open(path, errors="replace"):
            if "wharf::access" not in line or "duration_ms=" not in line:
                continue
            try:
                t = datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
            except ValueError:
                continue
            t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
            if not since <= t <= until:
                continue
            n += 1
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            secs = float(f.get("duration_ms", "0")) / 1000
            if secs > worst[0]:
                worst = (secs, f"node{i + 1} {f.get('method')} {f.get('path', '')[:60]} -> "
                               f"{f.get('status')}")
    return worst, n


def cmd_report(a):
    ev = [json.loads(l) for l in open(a.events) if l.strip()]
    marks = {}
    for line in open(a.marks):
        k, _, v = line.strip().partition(" ")
        if k:
            marks[k] = float(v)
    fault, heal = marks["fault"], marks["heal"]
    verify = json.load(open(a.verify)) if a.verify and os.path.exists(a.verify) else {}
    rec = json.load(open(a.recover)) if a.recover and os.path.exists(a.recover) else {}
    acked = [json.loads(l) for l in open(a.acked) if l.strip()] if os.path.exists(a.acked) else []

    def ok(e):
        return e["out"] in ("200", "201", "202")

    # Pulls of content acknowledged before the fault began, sent from the
    # fault's start on (the fault, the recovery and after).
    pre = [e for e in ev if e["op"] == "pull" and e["acked_at"] is not None
           and e["acked_at"] < fault and e["t"] >= fault]
    pre_first = [e for e in pre if e["try"] == 1]
    # Of those, the content every node had served before (seeded).
    seen = [e for e in pre if e.get("src") == "seed"]
    during = [e for e in ev if fault <= e["t"] < heal]
    lat = [e["s"] for e in ev]
    late = [e for e in ev if e["out"] == "timeout" or e["s"] >= a.deadline]
    after_heal_bad = [e for e in ev if e["t"] >= heal and not ok(e)]
    last_bad_end = max((e["t"] + e["s"] - heal for e in after_heal_bad), default=0.0)
    probe_s = rec.get("seconds")
    full_s = round(max(probe_s, last_bad_end), 2) if rec.get("recovered") else None
    statuses = {}
    for e in during:
        statuses[e["out"]] = statuses.get(e["out"], 0) + 1
    pushes_during = [x for x in acked if fault <= x["acked_at"] < heal]
    (node_max, node_slowest), node_n = node_answers(
        a.node_logs.split(",") if a.node_logs else [],
        min(e["t"] for e in ev) if ev else fault, max(e["t"] + e["s"] for e in ev) + 1 if ev else heal)
    # Pull operations: a manifest GET starts one; it succeeded if its last
    # attempt of every step got 200 (approximated by: no step gave up).
    fig = {
        "case": a.case,
        "requests": len(ev),
        "requests_during_fault": len(during),
        "fault_secs": round(heal - fault, 1),
        "pushes_acknowledged": len(acked),
        "pushes_acknowledged_during_fault": len(pushes_during),
        "verified_identical": verify.get("identical"),
        "verified_of": verify.get("acknowledged"),
        "prefault_pull_requests": len(pre),
        "prefault_pull_ok": sum(1 for e in pre if ok(e)),
        "prefault_pull_share": round(100.0 * sum(1 for e in pre if ok(e)) / len(pre), 2) if pre else None,
        "prefault_first_try_share": round(100.0 * sum(1 for e in pre_first if ok(e)) / len(pre_first), 2) if pre_first else None,
        "seen_pull_requests": len(seen),
        "seen_pull_ok": sum(1 for e in seen if ok(e)),
        "seen_pull_share": round(100.0 * sum(1 for e in seen if ok(e)) / len(seen), 2) if seen else None,
        "prefault_corrupt": sum(1 for e in pre if e["out"] == "corrupt"),
        "max_latency_s": round(max(lat), 3) if lat else None,
        "p99_latency_s": round(pct(lat, 0.99), 3),
        "deadline_s": a.deadline,
        "over_deadline": len(late),
        "node_max_answer_s": round(node_max, 3),
        "node_slowest": node_slowest,
        "node_answers": node_n,
        "recovered": rec.get("recovered"),
        # Full service: the later of the probes' stable success and the end
        # of the load's last failed request sent after the heal.
        "recovery_s": full_s,
        "recovery_probe_s": probe_s,
        "recovery_last_failure": rec.get("last_failure"),
        "failed_after_heal": len(after_heal_bad),
        "last_failure_after_heal_s": round(last_bad_end, 2) if after_heal_bad else None,
        "statuses_during_fault": dict(sorted(statuses.items(), key=lambda kv: -kv[1])),
        "prefault_failures": [f"{e.get('src')} {e['step']} try {e['try']} -> {e['out']} at "
                              f"+{e['t'] - fault:.1f}s after {e['s']:.2f}s"
                              for e in pre if not ok(e)][:8],
        "failures_after_heal": [f"{e['op']} {e['step']} try {e['try']} -> {e['out']} at "
                                f"heal+{e['t'] - heal:.2f}s after {e['s']:.2f}s"
                                for e in after_heal_bad][:8],
    }
    json.dump(fig, open(a.out, "w"), indent=1)
    print(json.dumps(fig))


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--lb", required=True)
    s.add_argument("--nodes", required=True)
    s.add_argument("--images", type=int, default=8)
    s.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--lb", required=True)
    r.add_argument("--seed", required=True)
    r.add_argument("--case", required=True)
    r.add_argument("--pushers", type=int, default=3)
    r.add_argument("--pullers", type=int, default=3)
    r.add_argument("--deadline", type=float, default=15)
    r.add_argument("--stop", required=True)
    r.add_argument("--max-secs", type=float, default=120)
    r.add_argument("--max-requests", type=int, default=100000)
    r.add_argument("--events", required=True)
    r.add_argument("--acked", required=True)
    c = sub.add_parser("recover")
    c.add_argument("--nodes", required=True)
    c.add_argument("--admins", required=True)
    c.add_argument("--haproxy-sock", required=True)
    c.add_argument("--seed", required=True)
    c.add_argument("--since", type=float, required=True)
    c.add_argument("--max-secs", type=float, default=60)
    c.add_argument("--stable", type=float, default=3)
    c.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--lb", required=True)
    v.add_argument("--acked", required=True)
    v.add_argument("--deadline", type=float, default=15)
    v.add_argument("--out", required=True)
    o = sub.add_parser("report")
    o.add_argument("--case", required=True)
    o.add_argument("--events", required=True)
    o.add_argument("--acked", required=True)
    o.add_argument("--marks", required=True)
    o.add_argument("--verify")
    o.add_argument("--recover")
    o.add_argument("--deadline", type=float, default=15)
    o.add_argument("--node-logs", help="the nodes' logs, comma-separated, node1 first")
    o.add_argument("--out", required=True)
    a = p.parse_args()
    if a.cmd == "report":
        cmd_report(a)
        return
    fn = {"seed": cmd_seed, "run": cmd_run, "recover": cmd_recover, "verify": cmd_verify}[a.cmd]
    asyncio.run(fn(a))


if __name__ == "__main__":
    main()
