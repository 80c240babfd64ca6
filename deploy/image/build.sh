#!/usr/bin/env bash
# deploy/image/build.sh [--rebuild-base] — the seckill image (deploy/image/Containerfile):
#   1. cargo builds the release gateway and order-writer (CARGO_TARGET_DIR, else the
#      workspace's target/, which may be a link);
#   2. .run/image-context/ gets those two binaries and nothing else (the build context);
#   3. the base localhost/seckill-base:bookworm is made if it is missing (base.sh;
#      --rebuild-base makes it again);
#   4. podman build tags localhost/seckill:<version>-<short revision> (with -dirty when
#      tracked files differ from the commit) and localhost/seckill:latest, then prints
#      the image's size; the build stage is kept as localhost/seckill-build:cache (the
#      next build's cache) and what earlier builds left untagged is removed.
# The tag built is written to .run/image/last-tag (smoke.sh runs it). Needs root and
# podman (`./dev image` installs what is missing).
#
# SECKILL_IMAGE_REPO    [localhost/seckill]
# SECKILL_IMAGE_SOURCE  the org.opencontainers.image.source label [the git remote
#                       `origin`'s URL; none without one]
set -euo pipefail

# shellcheck source=deploy/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$IMAGE_ROOT"

base_args=()
case "${1:-}" in
  --rebuild-base) base_args=(--rebuild) ;;
  "") ;;
  *) die "usage: $0 [--rebuild-base]" ;;
esac

started=$(date +%s)
podman_conf

log "cargo build --release -p gateway -p order-writer --bins"
# The binaries name the commit in seckill_build_info (./dev exports it too).
export SECKILL_REVISION="${SECKILL_REVISION:-$(git -C "$IMAGE_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
cargo build --release -q -p gateway -p order-writer --bins
target="${CARGO_TARGET_DIR:-$IMAGE_ROOT/target}"
context="$IMAGE_ROOT/.run/image-context"
rm -rf "$context"
mkdir -p "$context"
for bin in gateway order-writer; do
  [[ -x $target/release/$bin ]] || die "$target/release/$bin was not built"
  cp "$target/release/$bin" "$context/$bin"
done

"$IMAGE_ROOT/deploy/image/base.sh" "${base_args[@]}"

version=$(workspace_version)
revision=$(git rev-parse HEAD)
tag="$version-$(git rev-parse --short=12 HEAD)"
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
  tag="$tag-dirty"
  revision="$revision-dirty"
fi
# As --label, not build arguments: buildah's cache would keep a LABEL step's old values.
labels=(--label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision"
  --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
source_url="${SECKILL_IMAGE_SOURCE:-$(git config --get remote.origin.url || true)}"
if [[ -n $source_url ]]; then
  labels+=(--label "org.opencontainers.image.source=$source_url")
else
  log "no git remote origin and no SECKILL_IMAGE_SOURCE: the image has no source label"
fi

log "podman build $IMAGE_REPO:$tag"
podman build \
  --file "$IMAGE_ROOT/deploy/image/Containerfile" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  "${labels[@]}" \
  --tag "$IMAGE_REPO:$tag" \
  --tag "$IMAGE_REPO:latest" \
  "$context"
echo "$IMAGE_REPO:$tag" >"$IMAGE_RUN/last-tag"
# The build stage gets a tag of its own (all cached: no work), so that it stays the cache
# of the next build, while what earlier builds left untagged (their build stages, a final
# image whose tag moved on) is removed: the unstripped binaries and binutils would pile up
# with every change. Only untagged images with this project's title labels are pruned.
podman build -q --file "$IMAGE_ROOT/deploy/image/Containerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  "${labels[@]}" --target build --tag "$IMAGE_REPO-build:cache" "$context" >/dev/null
for title in seckill seckill-base; do
  podman image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null
done

size=$(podman image inspect --format '{{.Size}}' "$IMAGE_REPO:$tag")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
log "built $IMAGE_REPO:$tag (and :latest) in $(($(date +%s) - started)) s: $(numfmt --to=iec "$size") ($(numfmt --to=iec "$base_size") of it the base)"
podman image ls --filter "reference=$IMAGE_REPO" >&2
