#!/usr/bin/env bash
# Builds kmod/memfed.ko against the headers of Debian's packaged kernel (the
# one the QEMU tier boots), installing linux-headers-$KVER when missing.
#
#   scripts/qemu/build-kmod.sh [OUTDIR]     default build/kmod/<kver>
#
# Prints the path of memfed.ko. MEMFED_QEMU_KVER selects another kernel
# (any with headers installed, e.g. a newer one to check compatibility).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/qemu/common.sh"

kver=$(memfed_kver)
out=${1:-$root/build/kmod/$kver}
memfed_ensure_headers "$kver"
memfed_build_kmod "$root" "$kver" "$out"
echo "$out/memfed.ko"
