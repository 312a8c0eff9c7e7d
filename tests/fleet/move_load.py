#!/usr/bin/env python3
"""Client load for the tenant-move test (tests/fleet/run.sh, case tenant-move).

Talks the registry API only (Python's standard library; no client tools),
through the fleet's router, with Docker bearer tokens from /auth/token.

  move_load.py seed   --router URL --tenant T --auth USER:PASSFILE --images N --out seed.json
  move_load.py run    --router URL --tenant T --other O --auth USER:PASSFILE \
                      --seed seed.json --other-seed other.json --stop FILE \
                      --max-secs S --out report.json
  move_load.py verify --registry URL --tenant T --auth USER:PASSFILE \
                      --seed seed.json --report report.json --out verify.json
  move_load.py login  --router URL --user U --password-file F --scope S --out tokens.json
  move_load.py watch  --router URL --tenant T --service URL --service-token FILE \
                      --move ID --nodes URL,URL --node-token FILE --stop FILE \
                      --max-secs S [--kill-pid PID | --cancel] --out timeline.json
  move_load.py grow   --router URL --tenant T --auth USER:PASSFILE --images N \
                      --layer-bytes B --seed seed.json

seed: pushes N images into T (one layer shared by all, one of each image's
own, a config), an OCI index over the first two, and a referrer (an
artifact whose subject is the first image). Writes what it pushed.

run: until FILE exists (or S seconds), pullers fetch seeded images of T
(manifest by tag, digest checked, then a layer, bytes checked) and of the
other tenant O, and a pusher pushes new tags into T. A push refused `503`
is retried after its Retry-After; one refused without Retry-After, or any
other failure, is counted as failed. Every failed pull is counted. Writes
the counts, every acknowledged push (tag, digest) and the 503 windows:
the first 503 and the first 201 after it, as the tenant saw its fence.
With --user-token, one more puller uses a tenant user's access token
taken before the move (from `login`) and never asks for another.

grow: pushes N more images into T/grow, each with an own layer of B
pseudo-random bytes (for the growth case: a cell filled until it crosses
its threshold), and adds them to the seed file, so that `run` pulls them
and `verify` checks them too.

verify: every seeded image and every acknowledged push is read from URL
(a node of the destination cell, directly) and must match byte for byte.

login: a password login of a tenant user through the router asking for a
refresh token (`POST /auth/token`, `access_type=offline`); writes both.

watch: follows one move from outside: every ~20 ms the fence on the source
cell (its nodes' admin `GET /admin/v1/tenants/T/fence`), the move's record
(the fleet service's `GET /fleet/v1/moves/ID`, which fails while the
service is down) and where the router sends the tenant (`X-Wharf-Route` of
an unauthenticated `GET /v2/T/...`). As soon as the record's step is
`fenced`, it kills PID (SIGKILL) or cancels the move, once. Writes the
timeline: when the fence went up and came down on the nodes, when the
route flipped, each step, and the action with the step and route then.

Every loop is bounded in time; every request has a timeout.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import sys
import threading
import time
import signal
import urllib.error
import urllib.parse
import urllib.request

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
ACCEPT = ", ".join([MANIFEST, INDEX])
TIMEOUT = 15


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Http:
    """A tiny registry client with a token per repository."""

    def __init__(self, base, user, password):
        self.base = base.rstrip("/")
        self.user = user
        self.password = password
        self.tokens = {}

    def token(self, repo):
        t = self.tokens.get(repo)
        if t and t[1] > time.time():
            return t[0]
        scope = f"repository:{repo}:pull,push"
        url = f"{self.base}/auth/token?service=wharf&scope={scope}"
        req = urllib.request.Request(url)
        cred = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", "Basic " + cred)
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            tok = json.loads(r.read())["token"]
        self.tokens[repo] = (tok, time.time() + 120)
        return tok

    def call(self, method, repo, path, body=None, headers=None):
        """(status, headers, body) of one request; never raises on HTTP errors.
        The headers are an http.client.HTTPMessage: `get` ignores case."""
        req = urllib.request.Request(f"{self.base}/v2/{repo}/{path}", data=body, method=method)
        req.add_header("Authorization", "Bearer " + self.token(repo))
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()


class FixedToken(Http):
    """A client that holds one bearer token and never asks for another."""

    def __init__(self, base, token):
        super().__init__(base, "", "")
        self.fixed = token

    def token(self, repo):
        return self.fixed


class Refused(Exception):
    """A write refused with 503; `retry_after` is None if the header was missing."""

    def __init__(self, status, retry_after, what):
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after


def push_blob(h, repo, data):
    d = sha(data)
    st, _, _ = h.call("HEAD", repo, f"blobs/{d}")
    if st == 200:
        return d
    st, hd, body = h.call(
        "POST", repo, f"blobs/uploads/?digest={d}", data, {"Content-Type": "application/octet-stream"}
    )
    if st == 503:
        raise Refused(st, hd.get("Retry-After"), f"blob upload {repo}: 503 {body[:200]!r}")
    if st != 201:
        raise RuntimeError(f"blob upload {repo} {d}: {st} {body[:200]!r}")
    return d


def push_manifest(h, repo, ref, doc, media_type):
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    st, hd, body = h.call("PUT", repo, f"manifests/{ref}", raw, {"Content-Type": media_type})
    if st == 503:
        raise Refused(st, hd.get("Retry-After"), f"manifest {repo}:{ref}: 503 {body[:200]!r}")
    if st != 201:
        raise RuntimeError(f"manifest {repo}:{ref}: {st} {body[:200]!r}")
    d = sha(raw)
    if hd.get("Docker-Content-Digest") not in (None, d):
        raise RuntimeError(f"manifest {repo}:{ref}: digest {hd.get('Docker-Content-Digest')} != {d}")
    return d, raw


def image(h, repo, tag, shared, own):
    """Pushes one image (shared layer, own layer, config); its record."""
    layers = [shared, own]
    for b in layers:
        push_blob(h, repo, b)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    push_blob(h, repo, cfg)
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": LAYER, "digest": sha(b), "size": len(b)} for b in layers],
    }
    d, raw = push_manifest(h, repo, tag, doc, MANIFEST)
    return {"repo": repo, "tag": tag, "digest": d, "layer": sha(own), "blobs": [sha(b) for b in layers] + [sha(cfg)]}


def cmd_seed(a):
    user, pw = auth(a.auth)
    h = Http(a.router, user, pw)
    rnd = random.Random(a.tenant)
    shared = rnd.randbytes(4096)
    images = []
    for i in range(a.images):
        repo = f"{a.tenant}/app{i % 5}"
        images.append(image(h, repo, f"v{i}", shared, rnd.randbytes(2048 + i)))
    # An index over the first two images of app0 (both in that repository).
    members = [m for m in images if m["repo"] == f"{a.tenant}/app0"][:2]
    idx = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": MANIFEST, "digest": m["digest"], "size": len(manifest_bytes(h, m)),
             "platform": {"architecture": arch, "os": "linux"}}
            for m, arch in zip(members, ["amd64", "arm64"])
        ],
    }
    idx_digest, _ = push_manifest(h, f"{a.tenant}/app0", "multi", idx, INDEX)
    # A referrer of the first image: an artifact with a subject.
    push_blob(h, f"{a.tenant}/app0", b"{}")
    sig = rnd.randbytes(512)
    push_blob(h, f"{a.tenant}/app0", sig)
    ref = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": EMPTY, "digest": sha(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha(sig), "size": len(sig)}],
        "subject": {"mediaType": MANIFEST, "digest": members[0]["digest"],
                    "size": len(manifest_bytes(h, members[0]))},
    }
    ref_digest, _ = push_manifest(h, f"{a.tenant}/app0", sha_ref_tag(members[0]["digest"]), ref, MANIFEST)
    out = {"images": images, "index": {"repo": f"{a.tenant}/app0", "tag": "multi", "digest": idx_digest},
           "referrer": {"repo": f"{a.tenant}/app0", "digest": ref_digest, "subject": members[0]["digest"]}}
    write(a.out, out)
    print(f"seeded {len(images)} images, an index and a referrer into {a.tenant}")


def cmd_grow(a):
    user, pw = auth(a.auth)
    h = Http(a.router, user, pw)
    with open(a.seed) as f:
        seed = json.load(f)
    first = sum(1 for m in seed["images"] if m["repo"] == f"{a.tenant}/grow")
    shared = random.Random(a.tenant).randbytes(4096)
    t0 = time.time()
    for i in range(first, first + a.images):
        own = random.Random(f"{a.tenant}-grow-{i}").randbytes(a.layer_bytes)
        seed["images"].append(image(h, f"{a.tenant}/grow", f"g{i}", shared, own))
        write(a.seed, seed)
    print(f"grew {a.tenant} by {a.images} images of {a.layer_bytes} bytes in {time.time() - t0:.1f}s")


def sha_ref_tag(digest):
    return "sig-" + digest.split(":")[1][:16]


def manifest_bytes(h, m):
    st, _, body = h.call("GET", m["repo"], f"manifests/{m['digest']}", headers={"Accept": ACCEPT})
    if st != 200:
        raise RuntimeError(f"GET manifest {m['repo']}@{m['digest']}: {st}")
    return body


def auth(spec):
    user, path = spec.split(":", 1)
    with open(path) as f:
        return user, f.readline().strip()


def write(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.samples = []

    def add(self, k, n=1, sample=None):
        with self.lock:
            self.c[k] = self.c.get(k, 0) + n
            if sample and len(self.samples) < 20:
                self.samples.append(sample)


def puller(router, user, pw, images, stop, deadline, counts, name, fixed=None):
    h = FixedToken(router, fixed) if fixed else Http(router, user, pw)
    rnd = random.Random(name)
    while not os.path.exists(stop) and time.time() < deadline:
        m = rnd.choice(images)
        try:
            st, _, body = h.call("GET", m["repo"], f"manifests/{m['tag']}", headers={"Accept": ACCEPT})
            if st != 200 or sha(body) != m["digest"]:
                counts.add(f"{name}_failed", sample=f"{name}: manifest {m['repo']}:{m['tag']} -> {st}")
                continue
            st, _, blob = h.call("GET", m["repo"], f"blobs/{m['layer']}")
            if st != 200 or sha(blob) != m["layer"]:
                counts.add(f"{name}_failed", sample=f"{name}: blob {m['repo']}@{m['layer']} -> {st}")
                continue
            counts.add(f"{name}_ok")
        except Exception as e:  # connection errors, timeouts: a failed pull
            counts.add(f"{name}_failed", sample=f"{name}: {e!r}")
        time.sleep(0.02)


def pusher(router, user, pw, tenant, stop, deadline, counts, acked, refusals, acks):
    h = Http(router, user, pw)
    rnd = random.Random("pusher")
    shared = random.Random(tenant).randbytes(4096)
    n = 0
    while not os.path.exists(stop) and time.time() < deadline:
        n += 1
        tag = f"live{n}"
        own = rnd.randbytes(1024 + n)
        tries = 0
        while time.time() < deadline:
            tries += 1
            try:
                rec = image(h, f"{tenant}/live", tag, shared, own)
                acks.append(time.time())
                acked.append(rec)
                counts.add("pushes_acked")
                if tries > 1:
                    counts.add("pushes_acked_after_503")
                break
            except Refused as r:
                now = time.time()
                refusals.append(now)
                if r.retry_after is None:
                    counts.add("pushes_503_without_retry_after", sample=str(r))
                    time.sleep(1)
                else:
                    counts.add("pushes_503_with_retry_after")
                    time.sleep(float(r.retry_after))
            except Exception as e:
                counts.add("pushes_failed", sample=f"push {tag}: {e!r}")
                break
        time.sleep(0.05)


def fence_windows(refusals, acks):
    """The pushes' 503 windows: runs of refusals with no acknowledged push
    between them. Each: its first and last 503, the first 201 after it,
    `refused_secs` (last minus first 503: the fence stood at least that
    long) and `until_201_secs` (first 503 to the next 201: at most that
    long, give or take a Retry-After)."""
    acks = sorted(acks)
    windows = []
    for r in sorted(refusals):
        w = windows[-1] if windows else None
        if w is None or any(w["last_503"] < t < r for t in acks):
            w = {"first_503": r, "last_503": r}
            windows.append(w)
        w["last_503"] = r
    for w in windows:
        after = [t for t in acks if t > w["last_503"]]
        w["first_201_after"] = round(after[0], 3) if after else None
        w["refused_secs"] = round(w["last_503"] - w["first_503"], 2)
        w["until_201_secs"] = round(after[0] - w["first_503"], 2) if after else None
        w["first_503"] = round(w["first_503"], 3)
        w["last_503"] = round(w["last_503"], 3)
    return windows


def cmd_run(a):
    user, pw = auth(a.auth)
    with open(a.seed) as f:
        mine = json.load(f)["images"]
    with open(a.other_seed) as f:
        other = json.load(f)["images"]
    deadline = time.time() + a.max_secs
    counts, acked, refusals, acks = Counter(), [], [], []
    threads = [
        threading.Thread(target=puller, args=(a.router, user, pw, mine, a.stop, deadline, counts, "pulls")),
        threading.Thread(target=puller, args=(a.router, user, pw, mine, a.stop, deadline, counts, "pulls")),
        threading.Thread(target=puller, args=(a.router, user, pw, other, a.stop, deadline, counts, "other_pulls")),
        threading.Thread(
            target=pusher, args=(a.router, user, pw, a.tenant, a.stop, deadline, counts, acked, refusals, acks)
        ),
    ]
    if a.user_token:
        with open(a.user_token) as f:
            fixed = json.load(f)["access_token"]
        # The images of the repositories the token grants (its `access`).
        claims = json.loads(base64.urlsafe_b64decode(fixed.split(".")[1] + "=="))
        granted = {x["name"] for x in claims.get("access", []) if "pull" in x.get("actions", [])}
        theirs = [m for m in mine if m["repo"] in granted]
        if not theirs:
            sys.exit(f"the user token grants none of the seeded repositories ({sorted(granted)})")
        threads.append(
            threading.Thread(
                target=puller, args=(a.router, "", "", theirs, a.stop, deadline, counts, "user_pulls", fixed)
            )
        )
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=a.max_secs + 60)
    c = counts.c
    report = {
        "secs": round(time.time() - started, 1),
        "pulls_ok": c.get("pulls_ok", 0),
        "pulls_failed": c.get("pulls_failed", 0),
        "other_pulls_ok": c.get("other_pulls_ok", 0),
        "other_pulls_failed": c.get("other_pulls_failed", 0),
        "pushes_acked": c.get("pushes_acked", 0),
        "pushes_acked_after_503": c.get("pushes_acked_after_503", 0),
        "pushes_503_with_retry_after": c.get("pushes_503_with_retry_after", 0),
        "pushes_503_without_retry_after": c.get("pushes_503_without_retry_after", 0),
        "pushes_failed": c.get("pushes_failed", 0),
        "refusal_window_secs": round(max(refusals) - min(refusals), 2) if refusals else 0,
        "user_pulls_ok": c.get("user_pulls_ok", 0),
        "user_pulls_failed": c.get("user_pulls_failed", 0),
        "samples": counts.samples,
        "acked": acked,
    }
    if refusals:
        first = min(refusals)
        after = [t for t in acks if t > first]
        report["first_503_at"] = round(first, 3)
        report["last_503_at"] = round(max(refusals), 3)
        report["first_201_after_503_at"] = round(min(after), 3) if after else None
        report["fence_seen_secs"] = round(min(after) - first, 2) if after else None
    report["fence_windows"] = fence_windows(refusals, acks)
    report["longest_refusal_secs"] = max((w["refused_secs"] for w in report["fence_windows"]), default=0)
    write(a.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "acked"}))


def cmd_verify(a):
    user, pw = auth(a.auth)
    h = Http(a.registry, user, pw)
    with open(a.seed) as f:
        seed = json.load(f)
    with open(a.report) as f:
        report = json.load(f)
    wanted = seed["images"] + report["acked"]
    ok, bad = 0, []
    for m in wanted:
        st, _, body = h.call("GET", m["repo"], f"manifests/{m['tag']}", headers={"Accept": ACCEPT})
        if st != 200 or sha(body) != m["digest"]:
            bad.append(f"{m['repo']}:{m['tag']} -> {st}")
            continue
        good = True
        for d in m["blobs"]:
            st, _, blob = h.call("GET", m["repo"], f"blobs/{d}")
            if st != 200 or sha(blob) != d:
                bad.append(f"{m['repo']}@{d} -> {st}")
                good = False
        ok += good
    idx = seed["index"]
    st, _, body = h.call("GET", idx["repo"], f"manifests/{idx['tag']}", headers={"Accept": ACCEPT})
    if st != 200 or sha(body) != idx["digest"]:
        bad.append(f"index {idx['repo']}:{idx['tag']} -> {st}")
    r = seed["referrer"]
    st, _, body = h.call("GET", r["repo"], f"referrers/{r['subject']}")
    listed = [m["digest"] for m in json.loads(body).get("manifests", [])] if st == 200 else []
    if r["digest"] not in listed:
        bad.append(f"referrer {r['digest']} not listed for {r['subject']} ({st})")
    out = {"images": len(wanted), "identical": ok, "problems": bad}
    write(a.out, out)
    print(json.dumps(out)[:2000])
    sys.exit(0 if not bad and ok == len(wanted) else 1)


def cmd_login(a):
    with open(a.password_file) as f:
        pw = f.readline().strip()
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "username": a.user,
            "password": pw,
            "access_type": "offline",
            "service": "wharf",
            "client_id": "move-test",
            "scope": a.scope,
        }
    ).encode()
    req = urllib.request.Request(f"{a.router.rstrip('/')}/auth/token", data=form, method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        v = json.loads(r.read())
        route = r.headers.get("X-Wharf-Route")
    out = {"user": a.user, "access_token": v["access_token"], "refresh_token": v.get("refresh_token"), "route": route}
    write(a.out, out)
    print(json.dumps({"user": a.user, "route": route, "refresh_token": bool(out["refresh_token"])}))


def get_json(url, token, timeout=2, method="GET"):
    """(status, JSON or None) of one call; status 0 when nothing answered."""
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    req.add_header("Authorization", "Bearer " + token)
    if method == "POST":
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return 0, None


def route_of(router, tenant):
    """The backend the router sends the tenant's registry requests to."""
    req = urllib.request.Request(f"{router.rstrip('/')}/v2/{tenant}/watch/tags/list")
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            h = r.headers.get("X-Wharf-Route")
    except urllib.error.HTTPError as e:
        h = e.headers.get("X-Wharf-Route")
    except OSError:
        return None
    return (h or "").split("/")[0] or None


def cmd_watch(a):
    with open(a.service_token) as f:
        stok = f.readline().strip()
    with open(a.node_token) as f:
        ntok = f.readline().strip()
    nodes = [n.rstrip("/") for n in a.nodes.split(",") if n]
    start = time.time()
    deadline = start + a.max_secs
    t = {"move": a.move, "tenant": a.tenant, "steps": [], "action": None}
    fence_up = fence_down = None
    route0 = route_of(a.router, a.tenant)
    t["route_at_start"] = route0
    flip = None
    last_step = None
    state = None
    while time.time() < deadline and not os.path.exists(a.stop):
        now = time.time()
        fenced = []
        for n in nodes:
            st, v = get_json(f"{n}/admin/v1/tenants/{a.tenant}/fence", ntok)
            fenced.append(bool(v and v.get("fenced")) if st == 200 else (False if st == 404 else None))
        if fence_up is None and any(f is True for f in fenced):
            fence_up = now
        if fence_up is not None and fence_down is None and all(f is False for f in fenced):
            fence_down = now
        route = route_of(a.router, a.tenant)
        if flip is None and route and route0 and route != route0:
            flip = {"at": now, "route": route}
        st, m = get_json(f"{a.service.rstrip('/')}/fleet/v1/moves/{a.move}", stok)
        if st == 200 and m:
            state = m.get("state")
            step = f"{state}/{m.get('step')}"
            if step != last_step:
                t["steps"].append({"at": round(now, 3), "step": step})
                last_step = step
            if t["action"] is None and m.get("step") == "fenced" and (a.kill_pid or a.cancel):
                if a.kill_pid:
                    os.kill(a.kill_pid, signal.SIGKILL)
                    what = f"SIGKILL {a.kill_pid}"
                else:
                    cst, cv = get_json(f"{a.service.rstrip('/')}/fleet/v1/moves/{a.move}/cancel", stok, method="POST")
                    what = f"cancel -> {cst} {json.dumps(cv)[:300]}"
                t["action"] = {
                    "at": round(time.time(), 3),
                    "what": what,
                    "step": m.get("step"),
                    "fence_start": m.get("fence_start"),
                    "route": route_of(a.router, a.tenant),
                    "fenced_on_nodes": fenced,
                }
            if state in ("done", "failed", "cancelled") and (state != "cancelled" or m.get("step") == "rolled-back"):
                if fence_down is not None or state != "done":
                    break
        time.sleep(0.02)
    r = lambda x: round(x, 3) if x else None
    t.update(
        {
            "state": state,
            "step": last_step,
            "fence_up_at": r(fence_up),
            "fence_down_at": r(fence_down),
            "route_flip": {"at": r(flip["at"]), "route": flip["route"]} if flip else None,
            "fence_up_to_flip_secs": round(flip["at"] - fence_up, 2) if flip and fence_up else None,
            "fence_up_to_down_secs": round(fence_down - fence_up, 2) if fence_down and fence_up else None,
            "secs": round(time.time() - start, 1),
        }
    )
    write(a.out, t)
    print(json.dumps(t))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--router", required=True)
    s.add_argument("--tenant", required=True)
    s.add_argument("--auth", required=True)
    s.add_argument("--images", type=int, default=50)
    s.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--router", required=True)
    r.add_argument("--tenant", required=True)
    r.add_argument("--other", required=True)
    r.add_argument("--auth", required=True)
    r.add_argument("--seed", required=True)
    r.add_argument("--other-seed", required=True)
    r.add_argument("--stop", required=True)
    r.add_argument("--max-secs", type=float, default=300)
    r.add_argument("--out", required=True)
    r.add_argument("--user-token", help="JSON from `login`: one more puller with that access token")
    v = sub.add_parser("verify")
    v.add_argument("--registry", required=True)
    v.add_argument("--tenant", required=True)
    v.add_argument("--auth", required=True)
    v.add_argument("--seed", required=True)
    v.add_argument("--report", required=True)
    v.add_argument("--out", required=True)
    li = sub.add_parser("login")
    li.add_argument("--router", required=True)
    li.add_argument("--user", required=True)
    li.add_argument("--password-file", required=True)
    li.add_argument("--scope", required=True)
    li.add_argument("--out", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--router", required=True)
    w.add_argument("--tenant", required=True)
    w.add_argument("--service", required=True)
    w.add_argument("--service-token", required=True)
    w.add_argument("--move", required=True)
    w.add_argument("--nodes", required=True, help="the source cell's node admin URLs, comma-separated")
    w.add_argument("--node-token", required=True)
    w.add_argument("--stop", required=True)
    w.add_argument("--max-secs", type=float, default=120)
    w.add_argument("--kill-pid", type=int)
    w.add_argument("--cancel", action="store_true")
    w.add_argument("--out", required=True)
    g = sub.add_parser("grow")
    g.add_argument("--router", required=True)
    g.add_argument("--tenant", required=True)
    g.add_argument("--auth", required=True)
    g.add_argument("--images", type=int, required=True)
    g.add_argument("--layer-bytes", type=int, required=True)
    g.add_argument("--seed", required=True)
    a = p.parse_args()
    {"seed": cmd_seed, "run": cmd_run, "verify": cmd_verify, "login": cmd_login, "watch": cmd_watch, "grow": cmd_grow}[a.cmd](a)


if __name__ == "__main__":
    main()
