#!/usr/bin/env bash
# Checks Wharf's Prometheus alert rules: `promtool check rules` (syntax and
# PromQL), `promtool test rules` (the unit tests: each alert fires at its
# threshold and duration and not just below), and that every runbook link
# points at a heading that exists in docs/operations.md.
#
#   bash scripts/check-alerts.sh
#
# Needs promtool (Debian package `prometheus`; scripts/install-deps.sh
# installs it). Ends with `alerts: N passed, M failed`, where N counts the
# assertions (`eval_time` entries) in the test file; exits non-zero on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=deploy/prometheus/wharf-alerts.yml
TESTS=deploy/prometheus/wharf-alerts.test.yml
DOCS=docs/operations.md

if ! command -v promtool >/dev/null 2>&1; then
  echo "check-alerts: promtool not found; run scripts/install-deps.sh (Debian package prometheus)" >&2
  exit 1
fi

# Every assertion in the test file (alert_rule_test and promql_expr_test
# entries alike) starts with its own `- eval_time:` line.
total=$(grep -cE '^[[:space:]]*-[[:space:]]+eval_time:' "$TESTS" || true)
groups=$(grep -cE '^[[:space:]]*-[[:space:]]+name:' "$TESTS" || true)

status=0

echo "--- promtool check rules $RULES"
promtool check rules "$RULES" || status=1

echo "--- promtool test rules $TESTS"
set +e
out=$(promtool test rules "$TESTS" 2>&1)
rc=$?
set -e
printf '%s\n' "$out"

# promtool reports only pass/fail for the whole file; on failure it prints
# one `alertname: …, time: …` or `expr: …, time: …` line per failed assertion.
failed=$(grep -cE '^[[:space:]]+(alertname|expr): .*time: ' <<<"$out" || true)
if [ "$rc" -ne 0 ]; then
  status=1
  if [ "$failed" -eq 0 ]; then
    # promtool failed before evaluating assertions (bad file, load error):
    # none of them can count as passed.
    failed=$total
    echo "check-alerts: promtool could not run the tests; counting all $total as failed" >&2
  fi
elif ! grep -q 'SUCCESS' <<<"$out"; then
  status=1
  failed=$total
fi
passed=$((total - failed))

echo "--- runbook links into $DOCS"
# GitHub-style heading anchors: lower case, punctuation dropped, spaces to '-'.
anchors=$(grep -E '^#{1,6} ' "$DOCS" | sed -E 's/^#+ +//' | tr '[:upper:]' '[:lower:]' |
  sed -E 's/[^a-z0-9 _-]//g; s/ /-/g')
links=$(grep -oE 'docs/operations\.md#[A-Za-z0-9_-]+' "$RULES" | sed 's/.*#//' | sort -u)
missing=0
for a in $links; do
  if ! grep -qxF "$a" <<<"$anchors"; then
    echo "check-alerts: runbook link #$a has no heading in $DOCS" >&2
    missing=$((missing + 1))
  fi
done
if [ "$missing" -gt 0 ]; then
  status=1
else
  echo "all $(wc -w <<<"$links") runbook anchors found"
fi

echo "$groups test groups in $TESTS"
echo "alerts: $passed passed, $failed failed"
exit "$status"
