#!/usr/bin/env bash
# build-test-base-image.sh - build a local stand-in for python:3.12-slim.
#
# Docker Hub is not reachable from our dev/CI machines, so the pipe's
# Dockerfile (`ARG BASE_IMAGE=python:3.12-slim` / `FROM ${BASE_IMAGE}`) is
# built in tests with --build-arg BASE_IMAGE=<this image>. The image is a
# Debian minbase rootfs made with debootstrap from the host's Debian mirror,
# with python3, pip, ca-certificates and passwd (useradd), then `docker import`ed.
#
# Usage: scripts/build-test-base-image.sh [TAG]
#   TAG               image tag (default: $TEST_BASE_IMAGE or ssm-deploy-test-base:bookworm)
# Environment:
#   FORCE=1           rebuild even if the image already exists
#   DEBIAN_SUITE      suite to bootstrap (default bookworm)
#   DEBIAN_MIRROR     mirror URL (default: taken from the host's apt sources)
#   SKIP_ENSURE_DOCKER=1  do not run scripts/ensure-docker.sh first
#   WORK_PARENT       where the temporary rootfs is made (default /var/tmp)
#
# Note: the interpreter is Debian's python3 (3.11 on bookworm), not 3.12; pip
# installs go to /usr/local/lib/python3.*/dist-packages.
set -euo pipefail

TAG="${1:-${TEST_BASE_IMAGE:-ssm-deploy-test-base:bookworm}}"
FORCE="${FORCE:-0}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
WORK_PARENT="${WORK_PARENT:-/var/tmp}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
START=$SECONDS

log() { printf '[build-test-base-image %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { printf '[build-test-base-image] ERROR: %s\n' "$*" >&2; exit 1; }
on_err() { printf '[build-test-base-image] ERROR: command failed (exit %s) at line %s: %s\n' \
               "$1" "$2" "$3" >&2; }
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap needs it)"

# ----------------------------------------------------------------- engine
if [ "${SKIP_ENSURE_DOCKER:-0}" != 1 ]; then
    "$SCRIPT_DIR/ensure-docker.sh" >&2 || die "Docker engine is not available (scripts/ensure-docker.sh failed)"
fi
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not installed (run scripts/ensure-docker.sh)"

if [ "$FORCE" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists; nothing to do (FORCE=1 to rebuild)"
    echo "$TAG"
    exit 0
fi

# ----------------------------------------------------------------- mirror
# First non-security Debian URI from the host's apt sources (deb822 or
# one-line format); falls back to deb.debian.org.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        while read -r uri; do
            case "$uri" in *security*|"") continue ;; esac
            echo "$uri"; return 0
        done < <(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) print $i }' "$f")
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        while read -r uri; do
            case "$uri" in *security*|"") continue ;; esac
            echo "$uri"; return 0
        done < <(awk '$1=="deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f")
    done
    echo "http://deb.debian.org/debian"
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"

# ----------------------------------------------------------------- workdir
mkdir -p "$WORK_PARENT"
WORKDIR="$(mktemp -d "$WORK_PARENT/ssm-deploy-test-base.XXXXXX")"
ROOTFS="$WORKDIR/rootfs"

cleanup() {
    local rc=$? mnt
    trap - EXIT ERR
    if [ -n "${WORKDIR:-}" ] && [ -d "$WORKDIR" ]; then
        # debootstrap mounts proc/sys (and may bind /dev) inside the target; a
        # failed run can leave them mounted. Unmount deepest-first before rm so
        # we never delete through a bind mount into the host.
        while read -r mnt; do
            umount -l "$mnt" 2>/dev/null || true
        done < <(awk -v p="$WORKDIR/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
        rm -rf --one-file-system "$WORKDIR" || log "warning: could not fully remove $WORKDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------- debootstrap
log "debootstrap $DEBIAN_SUITE (minbase) from $MIRROR into $ROOTFS"
INCLUDE="python3,python3-pip,python-is-python3,ca-certificates,passwd"
if ! debootstrap --variant=minbase --include="$INCLUDE" \
        "$DEBIAN_SUITE" "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1; then
    tail -n 40 "$WORKDIR/debootstrap.log" >&2 || true
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 40 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (see output above)"
fi
log "debootstrap done"

# ----------------------------------------------------------------- customise
log "configuring rootfs (CA bundle, pip config, PEP 668, apt sources, cleanup)"
# Host CA bundle: may contain extra CAs that the host needs to reach PyPI.
if [ -r "$CA_BUNDLE" ]; then
    mkdir -p "$ROOTFS/etc/ssl/certs"
    rm -f "$ROOTFS$CA_BUNDLE"
    cp -L "$CA_BUNDLE" "$ROOTFS$CA_BUNDLE"
else
    log "warning: host has no $CA_BUNDLE; keeping the rootfs' own bundle"
fi
# Host pip config (index / cert settings). /etc/xdg/pip is deliberately NOT
# copied: it may point at host-only constraint files / wheel dirs.
if [ -r /etc/pip.conf ]; then
    cp -L /etc/pip.conf "$ROOTFS/etc/pip.conf"
fi
# PEP 668: let pip install into the system interpreter like python:*-slim does.
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
# Same apt sources as the host (Debian repos only), so apt-get update works
# in images derived from this one.
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    cp -L /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/debian.sources"
    rm -f "$ROOTFS/etc/apt/sources.list"
fi
# Keep it small.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/var/log/* \
       "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/usr/share/lintian \
       "$ROOTFS"/debootstrap \
       "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
# Message translations (~30 MB); keep locale.alias, which glibc reads.
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
mkdir -p "$ROOTFS/var/lib/apt/lists/partial" "$ROOTFS/var/cache/apt/archives/partial"
# Docker provides these at run time.
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/resolv.conf" && : >"$ROOTFS/etc/resolv.conf"

# Sanity checks inside the rootfs (no network / mounts needed).
for bin in /usr/bin/python3 /usr/bin/pip /usr/bin/pip3 /usr/sbin/useradd /usr/sbin/groupadd; do
    [ -x "$ROOTFS$bin" ] || die "rootfs is missing $bin"
done
PYVER="$(chroot "$ROOTFS" /usr/bin/python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" \
    || die "python3 does not run inside the rootfs"
chroot "$ROOTFS" /usr/bin/python3 -m pip --version >/dev/null || die "pip does not run inside the rootfs"
log "rootfs ok: python $PYVER, size $(du -sh --one-file-system "$ROOTFS" | cut -f1)"

# ----------------------------------------------------------------- import
log "importing rootfs as $TAG"
tar --numeric-owner --xattrs -C "$ROOTFS" \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    -c . \
  | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "ENV PIP_CERT=$CA_BUNDLE" \
        --change "ENV REQUESTS_CA_BUNDLE=$CA_BUNDLE" \
        --change "ENV SSL_CERT_FILE=$CA_BUNDLE" \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
        --change "LABEL org.opencontainers.image.description=\"local stand-in for python:3.12-slim (debootstrap $DEBIAN_SUITE minbase, python $PYVER)\"" \
        --change 'CMD ["/bin/bash"]' \
        - "$TAG" >/dev/null \
  || die "docker import failed"

# ----------------------------------------------------------------- verify
log "verifying $TAG (python3, pip, useradd)"
docker run --rm --network none "$TAG" /bin/sh -ec '
    python3 --version
    python --version
    pip --version
    python3 -m pip --version
    python3 -c "import ssl, venv, sqlite3, json"
    useradd --create-home smoketest
    id smoketest
' >"$WORKDIR/verify.log" 2>&1 || { cat "$WORKDIR/verify.log" >&2; die "verification of $TAG failed"; }

size="$(docker image inspect --format '{{.Size}}' "$TAG")"
log "built $TAG: python $PYVER, $((size / 1024 / 1024)) MiB, in $((SECONDS - START))s"
echo "$TAG"
