#!/usr/bin/env bash
# Run HERE (Debian 12, with network) before building on a lent GPU machine, which
# has the CUDA toolkit, CMake, ninja, a C++ compiler and a CUDA torch but none of
# the Debian -dev packages moescale builds against, and no network. Downloads those
# packages and the libraries they need at run time as .deb files into .gpu/debs
# (ignored by git; carry .gpu along), where scripts/gpu-build.sh unpacks them with
# `dpkg -x`. The .deb files are what travels: unpacked, OpenBLAS alone is larger
# than the transfer limit.
#
# The package set is the -dev packages below and everything they depend on,
# recursively, as installed here (one consistent choice among alternatives), less
# the base system every machine with a C++ compiler already has.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV_PACKAGES=(
  libceres-dev libeigen3-dev libsqlite3-dev libcli11-dev libfmt-dev libtomlplusplus-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev zlib1g-dev libopenblas0-pthread
)
# The C library, compiler runtime and system libraries: the GPU machine's own.
BASE='^(gcc-[0-9]+-base|libc6|libc6-dev|libc-dev-bin|libcrypt1|libcrypt-dev|libgcc-s1|libstdc\+\+6|linux-libc-dev|libssl3|libkrb5-3|libkrb5support0|libgssapi-krb5-2|libk5crypto3|libkeyutils1|libcom-err2|libnsl2|libnsl-dev|libtirpc3|libtirpc-dev|libtirpc-common|rpcsvc-proto|libgomp1|libgmp10|libmpfr6|liblzma5|pkg-config|pkgconf|pkgconf-bin|libpkgconf3|libselinux1|libpcre2-8-0|debconf|dpkg|tar|perl-base)$'

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

for p in "${DEV_PACKAGES[@]}"; do
  installed "$p" || { echo "error: $p is not installed here: run scripts/setup.sh first" >&2; exit 1; }
done

mapfile -t packages < <(
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${DEV_PACKAGES[@]}" 2>/dev/null |
    grep -v '^ ' | grep -v '<' | sort -u |
    while read -r p; do installed "$p" && echo "$p"; done |
    grep -Ev "$BASE" || true
)

mkdir -p .gpu/debs
rm -f .gpu/debs/*.deb
echo "downloading ${#packages[@]} packages into .gpu/debs" >&2
# The version installed here where the archive still has it, else the current one.
for p in "${packages[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$p")
  (cd .gpu/debs && { apt-get download -q "$p=$v" >/dev/null 2>&1 || apt-get download -q "$p" >/dev/null; }) ||
    { echo "error: cannot download $p (try: apt-get update)" >&2; exit 1; }
done
(cd .gpu/debs && ls *.deb) >.gpu/debs/PACKAGES
echo "ready: .gpu/debs ($(du -sh .gpu/debs | cut -f1)); carry .gpu to run scripts/gpu-build.sh there" >&2
