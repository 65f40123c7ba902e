#!/usr/bin/env bash
# Make a stand-in for a Docker Hub base image from Debian's own packages, for hosts
# that cannot reach Docker Hub (as root, with debootstrap):
#
#   bash deploy/debian-base.sh debian:bookworm-slim          # plain Debian 12 (db, orthanc)
#   bash deploy/debian-base.sh python:3.11-slim-bookworm     # + Debian's Python 3.11 (the app)
#
# It is `debootstrap --variant=minbase bookworm ROOTFS` (about 50 s here), the security
# and updates suites added to apt's sources, a policy-rc.d that keeps package scripts
# from starting services (as in Docker's official Debian images), then
# `tar -C ROOTFS -c . | docker import - TAG`. The python flavour adds python3.11,
# python3-venv, python3-pip and ca-certificates, `python`/`pip` in /usr/local/bin and
# this host's extra CA certificates (so pip reaches PyPI through an egress proxy).
# The image is labelled pneumo.stand-in=debootstrap. Mirror: $DEBIAN_MIRROR.
set -euo pipefail
TAG=${1:?usage: $0 debian:bookworm-slim|python:3.11-slim-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
case $TAG in
  debian:*) FLAVOUR=plain; INCLUDE="" ;;
  python:*) FLAVOUR=python; INCLUDE="--include=python3.11,python3-venv,python3-pip,ca-certificates" ;;
  *) echo "$0: no recipe for $TAG" >&2; exit 64 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "$0: apt-get install debootstrap" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/debian-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
# shellcheck disable=SC2086  # INCLUDE is one option or nothing
debootstrap --variant=minbase $INCLUDE bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log" >&2; echo "$0: debootstrap failed" >&2; exit 1; }

cat >"$ROOT/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
SOURCES
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

if [ "$FLAVOUR" = python ]; then
  ln -sf /usr/bin/python3 "$ROOT/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$ROOT/usr/local/bin/pip"
  rm -f "$ROOT"/usr/lib/python3*/EXTERNALLY-MANAGED
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  fi
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOT/etc/pip.conf"
  CMD='CMD ["python3"]'
else
  CMD='CMD ["bash"]'
fi
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'LABEL pneumo.stand-in=debootstrap' \
  --change "$CMD" - "$TAG" >/dev/null
echo "$TAG: stand-in built from Debian bookworm packages ($MIRROR)"
