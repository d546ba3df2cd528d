#!/usr/bin/env bash
# Build the Dockerfile with buildah, with no Docker daemon and no registry to pull a base from:
# a Debian bookworm root filesystem made by debootstrap (python3, venv, pip, CA certificates)
# stands in for python:3.11-slim-bookworm through the Dockerfile's BASE argument.
#
#   deploy/offline-build.sh [build] [IMAGE]    build IMAGE (default localhost/bgremove:latest)
#   deploy/offline-build.sh buildah ARGS...    run buildah on the same storage (run, from, images, rmi...)
#
# Everything lives under $BUILDAH_DIR (default .buildah/ in the repository, git-ignored): the
# containers storage, and in it the base image, made once and then reused, and the build's layer
# cache. Needs root (debootstrap, chroot isolation) and Debian's `buildah` and `debootstrap`; the
# network reaches only the package indexes: deb.debian.org for the base, PyPI for `RUN pip`.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILDAH_DIR=${BUILDAH_DIR:-$REPO/.buildah}
BASE_IMAGE=${BASE_IMAGE:-localhost/bgremove-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

mkdir -p "$BUILDAH_DIR"
BUILDAH_DIR=$(cd "$BUILDAH_DIR" && pwd)
# chroot isolation: no runc/crun and no user namespaces needed.
export BUILDAH_ISOLATION=chroot

# overlay where the kernel and file system allow it (a cached rebuild takes seconds); vfs, which
# copies every layer whole (slow, gigabytes), everywhere else. Each driver has its own storage.
storage_driver() {
    if [ -n "${STORAGE_DRIVER:-}" ]; then echo "$STORAGE_DRIVER"; return; fi
    if command buildah --root "$BUILDAH_DIR/overlay/storage" --runroot "$BUILDAH_DIR/overlay/run" \
        --storage-driver overlay images >/dev/null 2>&1; then
        echo overlay
    else
        echo vfs
    fi
}
DRIVER=$(storage_driver)
buildah() {
    command buildah --root "$BUILDAH_DIR/$DRIVER/storage" --runroot "$BUILDAH_DIR/$DRIVER/run" \
        --storage-driver "$DRIVER" "$@"
}

make_base() {
    local rootfs="$BUILDAH_DIR/rootfs"
    echo "offline-build: debootstrapping Debian bookworm for $BASE_IMAGE" >&2
    rm -rf "$rootfs" "$rootfs.tar"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$BUILDAH_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$BUILDAH_DIR/debootstrap.log" >&2; exit 1; }
    # What the official slim images leave out as well: package caches and lists, docs, locales.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$rootfs.tar" .
    local container
    container=$(buildah from scratch)
    buildah add --quiet "$container" "$rootfs.tar" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd '["python3"]' "$container"
    buildah commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$rootfs.tar"
}

build() {
    local image=${1:-localhost/bgremove:latest}
    buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || make_base
    # The build's pip trusts what this machine trusts (a TLS-inspecting proxy's CA, say), through
    # a build secret that no layer keeps.
    local secret=()
    [ -f "$CA_BUNDLE" ] && secret=(--secret "id=ca-certificates,src=$CA_BUNDLE")
    # --format docker keeps HEALTHCHECK (the OCI format has no such field); --layers caches each step.
    buildah bud --quiet --layers --format docker --network host --pull-never "${secret[@]}" \
        --build-arg "BASE=$BASE_IMAGE" --tag "$image" --file "$REPO/Dockerfile" "$REPO" >/dev/null
    echo "offline-build: $image $(buildah images --noheading --format '{{.Size}}' "$image" | head -n 1) ($DRIVER storage)" >&2
}

case "${1:-build}" in
    buildah) shift; buildah "$@" ;;
    build) shift $(( $# > 0 ? 1 : 0 )); build "$@" ;;
    *) build "$@" ;;
esac
