#!/usr/bin/env bash
# deploy/image/base.sh [--rebuild] — the runtime base of the seckill image, made here:
# a minimal Debian bookworm root filesystem (debootstrap --variant=minbase, signed by the
# Debian archive keyring) with only what the release binaries need at run time besides
# the essential packages, imported into podman as localhost/seckill-base:bookworm.
#
#   libc6, libgcc-s1, zlib1g  in minbase already (ldd of gateway and order-writer:
#                             libc, libm, libgcc_s, libz)
#   libssl3                   librdkafka's TLS and SASL link OpenSSL 3 dynamically
#   ca-certificates           the system trust store, for TLS to managed services
#
# bookworm-updates and bookworm-security are applied on top (apt-get upgrade), then apt's
# lists and caches, documentation (but each package's copyright file), man pages, locales
# and logs are removed. An existing base is kept (build.sh reuses it); --rebuild makes it
# again. Needs root, debootstrap and podman (`./dev image` installs them).
#
# SECKILL_BASE_IMAGE       the tag   [localhost/seckill-base:bookworm]
# SECKILL_DEBIAN_MIRROR    the archive [http://deb.debian.org/debian]
# SECKILL_DEBIAN_SECURITY  the security archive [http://deb.debian.org/debian-security]
set -euo pipefail

# shellcheck source=deploy/image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$IMAGE_ROOT"
BASE="$BASE_IMAGE"
MIRROR="${SECKILL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SECKILL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SUITE=bookworm

rebuild=0
case "${1:-}" in
  --rebuild) rebuild=1 ;;
  "") ;;
  *) die "usage: $0 [--rebuild]" ;;
esac

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is missing (./dev image installs it: apt-get install podman debootstrap)"
podman_conf
[[ -f $KEYRING ]] || die "$KEYRING is missing (apt-get install debian-archive-keyring)"

old=""
if podman image exists "$BASE"; then
  if ((rebuild == 0)); then
    log "base $BASE exists ($(podman image inspect --format '{{.Id}}' "$BASE" | cut -c1-12)); --rebuild makes it again"
    exit 0
  fi
  old=$(podman image inspect --format '{{.Id}}' "$BASE")
fi

mkdir -p "$ROOT/.run"
work=$(mktemp -d "$ROOT/.run/image-base.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs="$work/rootfs"
started=$(date +%s)

log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
if ! debootstrap --variant=minbase --include=ca-certificates,libssl3 --keyring="$KEYRING" \
    "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi

# Debian's own sources (deb822) with the point-release updates and the security archive,
# for the upgrade below and for a build stage that installs tools.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# What a later `apt-get install` (a build stage) brings: no recommends, no documentation.
cat >"$rootfs/etc/apt/apt.conf.d/90seckill" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90seckill-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
DPKG

log "applying $SUITE-updates and $SUITE-security"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
if ! { chroot "$rootfs" apt-get -q update &&
       DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -q -y upgrade; } >"$work/upgrade.log" 2>&1; then
  tail -n 30 "$work/upgrade.log" >&2
  die "apt-get upgrade in the new root failed"
fi
grep -E '^[0-9]+ upgraded' "$work/upgrade.log" >&2 || true
chroot "$rootfs" apt-get clean

# What a container never needs: apt's lists and caches, documentation, logs, the host's
# name and resolver (podman provides both), device nodes (podman mounts /dev).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
  "$rootfs"/usr/share/lintian "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf "${rootfs:?}"/dev/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs/var/log" -type f -delete
: >"$rootfs/etc/machine-id"

# shellcheck disable=SC2016 # dpkg-query's own ${Package}
packages=$(chroot "$rootfs" dpkg-query -W -f '${Package}\n' | wc -l)
log "root filesystem: $(du -sh --apparent-size "$rootfs" | cut -f1), $packages packages"

created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
tar --numeric-owner --xattrs -C "$rootfs" -cf - . |
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.opencontainers.image.title=seckill-base" \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with ca-certificates and libssl3 (deploy/image/base.sh)\"" \
    --change "LABEL org.opencontainers.image.created=$created" \
    --message "debootstrap --variant=minbase $SUITE, upgraded $created" \
    - "$BASE" >/dev/null
new=$(podman image inspect --format '{{.Id}}' "$BASE")
if [[ -n $old && $old != "$new" ]]; then
  # The replaced base, unless images built on it still hold it.
  podman rmi "$old" >/dev/null 2>&1 || true
fi
log "base $BASE (${new:0:12}): $(podman image inspect --format '{{.Size}}' "$BASE" | numfmt --to=iec) in $(($(date +%s) - started)) s"
