# deploy/image/lib.sh — sourced by base.sh, build.sh and smoke.sh: names, logging, and
# the podman settings this machine needs.
# shellcheck shell=bash disable=SC2034 # the names are for the scripts that source it

IMAGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BASE_IMAGE="${SECKILL_BASE_IMAGE:-localhost/seckill-base:bookworm}"
IMAGE_REPO="${SECKILL_IMAGE_REPO:-localhost/seckill}"
IMAGE_RUN="$IMAGE_ROOT/.run/image"

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

# podman with a project-local containers.conf ($IMAGE_RUN/containers.conf, exported as
# CONTAINERS_CONF; podman then reads it instead of the machine's, whose files are left as
# they are). It holds only what podman's built-in defaults lack on this machine, found
# each time, so a fresh machine gets the same:
# - rootful podman asks the runtime for nofile and nproc limits of 1048576. Without
#   CAP_SYS_RESOURCE (a sandboxed root) raising a hard limit is refused, and every
#   container fails with "setrlimit RLIMIT_NOFILE: Operation not permitted": the limits
#   are then the ones this shell has (nproc at most kernel.pid_max: more was refused
#   here too).
# - crun refuses a hybrid cgroup layout (cgroup v1 controllers, with a controller on the
#   v2 mount as well: "cgroups in hybrid mode not supported"); runc accepts it.
# Overlay storage works as it is on this machine's ext4 root, so storage is left to podman.
podman_conf() {
  command -v podman >/dev/null || die "podman is missing (./dev image installs it: apt-get install podman debootstrap)"
  mkdir -p "$IMAGE_RUN"
  local conf="$IMAGE_RUN/containers.conf" ulimits="" runtime="" why=""
  local capeff
  capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  if (((0x$capeff >> 24 & 1) == 0)); then # CAP_SYS_RESOURCE
    local nofile nproc pidmax
    nofile=$(ulimit -Hn) nproc=$(ulimit -Hu) pidmax=$(cat /proc/sys/kernel/pid_max)
    [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
    [[ $nproc == unlimited || $nproc -gt $pidmax ]] && nproc=$pidmax
    ulimits="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    why="no CAP_SYS_RESOURCE: the limits of this shell"
  fi
  if [[ -n $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null) ]]; then
    command -v runc >/dev/null || die "this machine's cgroups are hybrid (v1 and v2), which crun refuses: runc is needed (./dev image installs it: apt-get install runc)"
    runtime='runtime = "runc"'
    why="${why:+$why; }hybrid cgroups: runc"
  fi
  {
    echo "# Written by deploy/image/lib.sh for this machine; podman reads it through"
    echo "# CONTAINERS_CONF (${why:-no setting beyond the defaults of podman is needed})."
    echo "[containers]"
    [[ -n $ulimits ]] && echo "$ulimits"
    echo "[engine]"
    [[ -n $runtime ]] && echo "$runtime"
    true
  } >"$conf.$$"
  mv "$conf.$$" "$conf"
  export CONTAINERS_CONF="$conf"
}

# The workspace's version (Cargo.toml, [workspace.package]).
workspace_version() {
  awk '/^\[workspace.package\]/ {on=1; next} /^\[/ {on=0} on && $1 == "version" {gsub(/"/, "", $3); print $3; exit}' \
    "$IMAGE_ROOT/Cargo.toml"
}
