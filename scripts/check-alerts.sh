#!/usr/bin/env bash
# Checks Wharf's Prometheus alert rules: `promtool check rules` (syntax and
# PromQL), `promtool test rules` (the unit tests: each alert fires at its
# threshold and duration and not just below), and that every runbook link
# points at a heading that exists in its doc: the node's rules
# (wharf-alerts.yml) into docs/operations.md, the fleet service's
# (wharf-fleet-alerts.yml) into docs/fleet.md.
#
#   bash scripts/check-alerts.sh
#
# Needs promtool (Debian package `prometheus`; scripts/install-deps.sh
# installs it). Ends with `alerts: N passed, M failed`, where N counts the
# assertions (`eval_time` entries) in both test files; exits non-zero on any
# failure. A rule may link into another doc than its set's (the
# notification alerts link into docs/notifications.md): every
# `docs/NAME.md#anchor` link is checked against the doc it names.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each rules file, its unit tests, and the doc most of its runbook links
# point into (each link is checked against the doc it names).
SETS=(
  "deploy/prometheus/wharf-alerts.yml deploy/prometheus/wharf-alerts.test.yml docs/operations.md"
  "deploy/prometheus/wharf-fleet-alerts.yml deploy/prometheus/wharf-fleet-alerts.test.yml docs/fleet.md"
)

if ! command -v promtool >/dev/null 2>&1; then
  echo "check-alerts: promtool not found; run scripts/install-deps.sh (Debian package prometheus)" >&2
  exit 1
fi

status=0
all_passed=0
all_failed=0
for set in "${SETS[@]}"; do
  read -r RULES TESTS DOCS <<<"$set"
  # Every assertion in the test file (alert_rule_test and promql_expr_test
  # entries alike) starts with its own `- eval_time:` line.
  total=$(grep -cE '^[[:space:]]*-[[:space:]]+eval_time:' "$TESTS" || true)
  groups=$(grep -cE '^[[:space:]]*-[[:space:]]+name:' "$TESTS" || true)

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

  echo "--- runbook links in $RULES (mostly into $DOCS)"
  # GitHub-style heading anchors: lower case, punctuation dropped, spaces to '-'.
  anchors_of() {
    grep -E '^#{1,6} ' "$1" | sed -E 's/^#+ +//' | tr '[:upper:]' '[:lower:]' |
      sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
  }
  links=$(grep -oE 'docs/[A-Za-z0-9_-]+\.md#[A-Za-z0-9_-]+' "$RULES" | sort -u)
  missing=0
  for link in $links; do
    doc=${link%%#*}
    a=${link#*#}
    if [ ! -f "$doc" ]; then
      echo "check-alerts: runbook link $link names a doc that does not exist" >&2
      missing=$((missing + 1))
    elif ! anchors_of "$doc" | grep -qxF "$a"; then
      echo "check-alerts: runbook link #$a has no heading in $doc" >&2
      missing=$((missing + 1))
    fi
  done
  if [ "$missing" -gt 0 ]; then
    status=1
  else
    echo "all $(wc -w <<<"$links") runbook anchors found"
  fi
  echo "$groups test groups in $TESTS: $passed passed, $failed failed"
  all_passed=$((all_passed + passed))
  all_failed=$((all_failed + failed))
done

echo "alerts: $all_passed passed, $all_failed failed"
exit "$status"
