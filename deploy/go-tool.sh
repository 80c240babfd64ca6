# deploy/go-tool.sh — sourced by the checks that need a Go program pinned by a module of
# the repository (Helm for the chart, promtool for the alert rules).
#
# go_tool DIR PACKAGE NAME VERSION [LDFLAGS]: sets GO_TOOL to NAME built from PACKAGE of
# the module in DIR (its go.mod and go.sum are the pin) into
# ${SECKILL_CACHE_DIR:-<repo>/.run/cache}/NAME-VERSION/, once: a `complete` marker holds
# the pin's hash, so a changed pin rebuilds. GOFLAGS=-mod=readonly keeps go.mod and go.sum
# as they are, GOTOOLCHAIN=local never fetches another Go. A few minutes on two cores.
go_tool() {
  local dir="$1" package="$2" name="$3" version="$4" ldflags="${5:-}"
  local root cache home pin
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  cache="${SECKILL_CACHE_DIR:-$root/.run/cache}"
  home="$cache/$name-$version"
  pin="$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)"
  GO_TOOL="$home/$name"
  if [[ -x $GO_TOOL && -f $home/complete && "$(<"$home/complete")" == "$pin" ]]; then
    return 0
  fi
  command -v go >/dev/null || { echo "go is needed to build $name $version (from the Go module proxy)" >&2; return 1; }
  mkdir -p "$home"
  rm -f "$home/complete"
  echo "[go-tool] building $name $version from the Go module proxy into $home (once; a few minutes)" >&2
  (cd "$dir" &&
    GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0 \
      go build -trimpath -ldflags "-s -w $ldflags" -o "$home/$name.partial" "$package" </dev/null) \
    || { echo "go build of $name $version failed" >&2; return 1; }
  mv "$home/$name.partial" "$GO_TOOL"
  printf '%s\n' "$pin" >"$home/complete"
}
