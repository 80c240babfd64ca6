#!/usr/bin/env bash
# runbooks/check-rules.sh — the alert rules' check (`./dev rules`; `./dev test` runs it):
# `promtool check rules` on alerts.yml (syntax, expressions, every alert with a
# `runbook_url` annotation naming a page that exists), then `promtool test rules` on
# alerts.test.yml (the rules' unit tests). promtool (Prometheus, pinned with its go.sum
# by runbooks/promtool/go.mod) is built once from the Go module proxy into the cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="$(awk '$1 == "github.com/prometheus/prometheus" { print $2 }' "$HERE/promtool/go.mod")"
# shellcheck source=../deploy/go-tool.sh
source "$HERE/../deploy/go-tool.sh"
go_tool "$HERE/promtool" github.com/prometheus/prometheus/cmd/promtool promtool "$VERSION"
PROMTOOL="$GO_TOOL"

cd "$HERE"
"$PROMTOOL" check rules alerts.yml
# Every alert carries its runbook page, and the page exists.
python3 - <<'PY'
import re, sys
text = open("alerts.yml").read()
alerts = re.split(r"\n\s+- alert: ", text)[1:]
bad = []
for a in alerts:
    name = a.split("\n", 1)[0].strip()
    m = re.search(r"runbook_url: (\S+)", a)
    if not m:
        bad.append(f"{name}: no runbook_url")
    elif not __import__("os").path.isfile("../" + m.group(1)):
        bad.append(f"{name}: {m.group(1)} does not exist")
print(f"{len(alerts)} alerts, each with a runbook_url naming a page" if not bad else "\n".join(bad))
sys.exit(1 if bad else 0)
PY
"$PROMTOOL" test rules alerts.test.yml
