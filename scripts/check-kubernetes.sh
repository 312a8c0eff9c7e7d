#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes, offline:
#
# - every manifest against the Kubernetes API schemas with
#   `kubernetes-validate --strict` (PyPI; its schemas ship inside the
#   package, so nothing is fetched): a misspelt or misplaced field fails;
# - the three kinds it has no schema for (Kustomization, and the
#   Prometheus Operator's ServiceMonitor and PrometheusRule) by what they
#   must hold: the Kustomization lists files that exist (and every manifest
#   but the example Secret); each PrometheusRule's groups pass
#   `promtool check rules`; the ServiceMonitor selects the Service's labels
#   and names one of its ports;
# - that the manifests give a protected registry: the ConfigMap's
#   wharf.toml sets `auth = "token"` and an `admin_token_file`, whose
#   directory (and the signing key's) is mounted from a Secret, and every
#   key it sets is one `wharf serve` accepts (docs/wharf.example.toml);
# - that the checker catches a typo: a copy of the Deployment with one
#   field misspelt must fail;
# - that the image the manifests name is the one scripts/image.sh builds:
#   the kustomization's tag is the workspace version, and the containers
#   run its binary path as its user, with its ports and volume.
#
#   bash scripts/check-kubernetes.sh
#
# Needs kubernetes-validate (scripts/install-deps.sh installs it into
# $WHARF_TOOLS_DIR/kubernetes-validate, default ~/.local/share/wharf-tools)
# and promtool. Ends with `kubernetes: N passed, M failed`; exits non-zero
# on any failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

TOOLS=${WHARF_TOOLS_DIR:-$HOME/.local/share/wharf-tools}
KV=$TOOLS/kubernetes-validate/bin/kubernetes-validate
PY=$TOOLS/kubernetes-validate/bin/python
DIR=deploy/kubernetes
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 ($2)"; }

if [ ! -x "$KV" ] || ! command -v promtool >/dev/null 2>&1; then
  echo "check-kubernetes: kubernetes-validate ($KV) or promtool missing; run scripts/install-deps.sh" >&2
  echo "kubernetes: 0 passed, 1 failed"
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. The API schemas.
for f in "$DIR"/*.yaml; do
  out=$(timeout 120 "$KV" --strict "$f" 2>&1)
  rc=$?
  # Only the kinds the schemas cannot know may lack a schema.
  unknown=$(grep "Couldn't find schema" <<<"$out" |
    grep -vE 'kind (Kustomization|ServiceMonitor|PrometheusRule) ' || true)
  if [ "$rc" -ne 0 ] || grep -qE '^ERROR|failed' <<<"$out" || [ -n "$unknown" ]; then
    fail "schema $f" "$(grep -vE '^INFO' <<<"$out" | head -n 3 | tr '\n' ' ')"
  else
    pass "schema $f"
  fi
done

# 2. A typo must be caught.
sed 's/^  replicas: 3$/  replica: 3/' "$DIR/deployment.yaml" >"$TMP/typo.yaml"
if cmp -s "$DIR/deployment.yaml" "$TMP/typo.yaml"; then
  fail "typo caught" "deployment.yaml has no '  replicas: 3' line to misspell"
elif timeout 120 "$KV" --strict "$TMP/typo.yaml" >"$TMP/typo.out" 2>&1; then
  fail "typo caught" "a Deployment with 'replica:' passed the schema check"
else
  pass "typo caught"
fi

# 3 and 4. The kinds without schemas, and a protected configuration.
if "$PY" - "$DIR" "$TMP" docs/wharf.example.toml >"$TMP/crd.out" 2>&1 <<'PYEOF'
import os, re, subprocess, sys, tomllib, yaml

d, tmp, example = sys.argv[1], sys.argv[2], sys.argv[3]
problems = []
def load(name):
    with open(os.path.join(d, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]

kust = load("kustomization.yaml")[0]
listed = kust.get("resources", [])
for r in listed:
    if not os.path.exists(os.path.join(d, r)):
        problems.append(f"kustomization lists {r}, which does not exist")
for f in sorted(os.listdir(d)):
    if f.endswith(".yaml") and f not in listed and f not in ("kustomization.yaml", "secret.example.yaml"):
        problems.append(f"{f} is not listed in kustomization.yaml")

for f in ("prometheusrule.yaml", "prometheusrule-placement.yaml"):
    for doc in load(f):
        groups = doc.get("spec", {}).get("groups")
        if not groups:
            problems.append(f"{f}: spec.groups is empty")
            continue
        rules = os.path.join(tmp, f + ".rules.yml")
        with open(rules, "w") as out:
            yaml.safe_dump({"groups": groups}, out)
        r = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            problems.append(f"{f}: promtool check rules: {r.stdout.strip()} {r.stderr.strip()}")

svc = load("service.yaml")
sm = load("servicemonitor.yaml")[0]
ports = {p.get("name") for s in svc for p in s["spec"].get("ports", [])}
labels = [s["metadata"].get("labels", {}) for s in svc]
want = sm["spec"]["selector"].get("matchLabels", {})
if not any(all(l.get(k) == v for k, v in want.items()) for l in labels):
    problems.append(f"servicemonitor selects {want}, which no Service carries")
for e in sm["spec"].get("endpoints", []):
    if e.get("port") not in ports:
        problems.append(f"servicemonitor scrapes port {e.get('port')!r}, not a port of the Service ({sorted(ports)})")

cm = load("configmap.yaml")[0]
conf = tomllib.loads(cm["data"]["wharf.toml"])
with open(example) as f:
    known = {m.group(1) for m in re.finditer(r"^# ([a-z0-9_]+) = ", f.read(), re.M)}
for k in conf:
    if k not in known:
        problems.append(f"configmap sets {k}, a key wharf serve does not accept")
if conf.get("auth") != "token":
    problems.append(f"configmap: auth is {conf.get('auth')!r}, not \"token\"")
dep = load("deployment.yaml")[0]
pod = dep["spec"]["template"]["spec"]
secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
def from_secret(key):
    path = conf.get(key)
    if not path:
        problems.append(f"configmap sets no {key}")
        return
    p = path
    while p not in mounts and p not in ("/", ""):
        p = os.path.dirname(p)
    if mounts.get(p) not in secret_volumes:
        problems.append(f"{key} = {path!r} is not on a volume from a Secret")
for key in ("admin_token_file", "token_signing_key", "token_keys"):
    from_secret(key)
print("\n".join(problems))
sys.exit(1 if problems else 0)
PYEOF
then
  pass "kustomization, prometheus operator kinds, protected configuration"
else
  fail "kustomization, prometheus operator kinds, protected configuration" "$(tr '\n' ';' <"$TMP/crd.out" | cut -c1-400)"
fi

# 5. The image the manifests name is the one scripts/image.sh builds: the
# kustomization maps `wharf` to the workspace version's tag, and both
# containers run its binary path as its user, on its ports and volume.
if "$PY" - "$DIR" scripts/image.sh Cargo.toml >"$TMP/image.out" 2>&1 <<'PYEOF'
import os, re, sys, tomllib, yaml

d, script, cargo = sys.argv[1], sys.argv[2], sys.argv[3]
problems = []
def load(name):
    with open(os.path.join(d, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]
with open(cargo, "rb") as f:
    version = tomllib.load(f)["workspace"]["package"]["version"]
with open(script) as f:
    text = f.read()
m = re.search(r"^UID_WHARF=(\d+)$", text, re.M)
uid = int(m.group(1)) if m else None
if uid is None:
    problems.append(f"{script} sets no UID_WHARF")
binary = "/usr/local/bin/wharf"
if f'"$RFS{binary}"' not in text:
    problems.append(f"{script} does not install the binary at {binary}")
ports = {int(p) for p in re.findall(r"--config\.exposedports (\d+)/tcp", text)}
volumes = set(re.findall(r"--config\.volume (\S+)", text))

images = [i for i in load("kustomization.yaml")[0].get("images", []) if i.get("name") == "wharf"]
if len(images) != 1:
    problems.append("kustomization.yaml does not map the image `wharf` exactly once")
elif str(images[0].get("newTag")) != version:
    problems.append(f"kustomization.yaml tags the image {images[0].get('newTag')!r}, scripts/image.sh tags {version!r}")
pod = load("deployment.yaml")[0]["spec"]["template"]["spec"]
sc = pod.get("securityContext", {})
if sc.get("runAsUser") != uid or sc.get("runAsGroup") != uid:
    problems.append(f"the pod runs as {sc.get('runAsUser')}:{sc.get('runAsGroup')}, the image's user is {uid}:{uid}")
for c in pod.get("initContainers", []) + pod["containers"]:
    if c.get("image") != "wharf":
        problems.append(f"container {c['name']} runs image {c.get('image')!r}, not `wharf` (the name kustomization maps)")
    if (c.get("command") or [None])[0] != binary:
        problems.append(f"container {c['name']} runs {c.get('command')}, not {binary}")
node = [c for c in pod["containers"] if c["name"] == "wharf"][0]
if not ports or {p["containerPort"] for p in node.get("ports", [])} != ports:
    problems.append(f"the node's ports are not the image's {sorted(ports)}")
mounted = {m["mountPath"] for m in node.get("volumeMounts", [])}
if not volumes or not volumes <= mounted:
    problems.append(f"the image's volumes {sorted(volumes)} are not all mounted ({sorted(mounted)})")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PYEOF
then
  pass "the image the manifests name (scripts/image.sh)"
else
  fail "the image the manifests name (scripts/image.sh)" "$(tr '\n' ';' <"$TMP/image.out" | cut -c1-400)"
fi

echo "kubernetes: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
