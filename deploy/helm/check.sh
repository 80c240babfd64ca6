#!/usr/bin/env bash
# deploy/helm/check.sh — the Helm chart's check (`./dev chart`; `./dev test` runs it).
#
# 1. Helm (helm.sh/helm/v4, pinned with its go.sum by deploy/helm/tool/go.mod) is built
#    once from the Go module proxy into the cache, ${SECKILL_CACHE_DIR:-<repo>/.run/cache}/
#    helm-<version>/ (a `complete` marker holds the pin's hash: a changed pin rebuilds it;
#    a few minutes on two cores).
# 2. `helm lint --strict` of deploy/helm/seckill with its default values, and with
#    deploy/helm/ci-values.yaml (TLS, secrets from existing Secrets, tracing, monitoring,
#    network policy).
# 3. `helm template` of both into ${SECKILL_RUN_DIR:-<repo>/.run}/helm-check/.
# 4. The manifest test (manifest_test.py) on each rendering, and its self-test: each
#    check is run against a broken copy of the rendering and must fail.
#
# Exit status 1 on any failure. Needs go (building Helm the first time) and Python 3 with
# PyYAML (Debian's python3-yaml: `./dev setup`); no cluster, no registry.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="$HERE/seckill"
CACHE="${SECKILL_CACHE_DIR:-$ROOT/.run/cache}"
OUT="${SECKILL_RUN_DIR:-$ROOT/.run}/helm-check"
# The pinned release: the version of helm.sh/helm/v4 that tool/go.mod requires.
HELM_VERSION="$(awk '$1 == "helm.sh/helm/v4" { print $2 }' "$HERE/tool/go.mod")"

log() { printf '[chart] %s\n' "$*" >&2; }
die() { printf '[chart] error: %s\n' "$*" >&2; exit 1; }

[[ -n $HELM_VERSION ]] || die "deploy/helm/tool/go.mod requires no helm.sh/helm/v4"

# The helm binary, built the first time (and again when the pin changes).
# shellcheck source=../go-tool.sh
source "$HERE/../go-tool.sh"
build_helm() {
  go_tool "$HERE/tool" helm.sh/helm/v4/cmd/helm helm "$HELM_VERSION" \
    "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    || die "could not build Helm $HELM_VERSION"
  HELM="$GO_TOOL"
}

# Python 3 with PyYAML: python3 if it has it, else Debian's (python3-yaml, ./dev setup).
pick_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if "$py" -c 'import yaml' 2>/dev/null; then
      PY="$py"
      return 0
    fi
  done
  die "no Python 3 with PyYAML: ./dev setup installs Debian's python3-yaml"
}

build_helm
pick_python
log "helm $("$HELM" version --short), $("$PY" --version)"

# Helm keeps its own files (repositories, plugins, cache) out of the home directory.
mkdir -p "$OUT"
export HELM_CACHE_HOME="$OUT/home/cache" HELM_CONFIG_HOME="$OUT/home/config" \
  HELM_DATA_HOME="$OUT/home/data"

passed=0 failed=0
step() {
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$what"
    return 1
  fi
}

# render OUTPUT [helm template flags]
render() {
  local out="$1"
  shift
  "$HELM" template seckill "$CHART" --namespace seckill "$@" >"$out" || { rm -f "$out"; return 1; }
}

# Each rendering: its name, then its values files after the chart's values.yaml.
check_rendering() {
  local name="$1"
  shift
  local flags=() f
  for f in "$@"; do flags+=(-f "$f"); done
  step "helm lint --strict ($name)" "$HELM" lint --strict "$CHART" "${flags[@]}" || true
  if step "helm template ($name) > $OUT/$name.yaml" render "$OUT/$name.yaml" "${flags[@]}"; then
    local vals=()
    for f in "$@"; do vals+=(--values "$f"); done
    printf -- '--- manifest test (%s)\n' "$name"
    step "manifest test ($name)" "$PY" "$HERE/manifest_test.py" --repo "$ROOT" --chart "$CHART" \
      "${vals[@]}" "$OUT/$name.yaml" || true
  fi
}

check_rendering default
check_rendering ci-values "$HERE/ci-values.yaml"
# Each check must be able to fail: run on broken copies of the fullest rendering.
if [[ -s $OUT/ci-values.yaml ]]; then
  printf -- '--- self-test\n'
  step "manifest test self-test (each check fails on a broken rendering)" \
    "$PY" "$HERE/manifest_test.py" --repo "$ROOT" --chart "$CHART" \
    --values "$HERE/ci-values.yaml" --self-test "$OUT/ci-values.yaml" || true
fi

printf 'chart: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
