#!/usr/bin/env bash
# Installs every Debian package memfed needs to build, test, benchmark and run
# its QEMU tier (with the argument "bench": what only `make bench` adds). Non-interactive and idempotent: packages already present are
# skipped, so a warm machine pays one dpkg query.
set -euo pipefail

packages=(
	# build
	build-essential cmake pkg-config clang clang-format libclang-rt-14-dev scdoc
	# libraries
	liburing-dev libpmem2-dev libpmem2 libnl-3-dev libnl-genl-3-dev libnl-route-3-dev
	nlohmann-json3-dev catch2 libmimalloc-dev libisal-dev libibverbs-dev librdmacm-dev
	libmicrohttpd-dev libxxhash-dev
	libsystemd-dev
	# node keys and TLS between nodes
	libssl-dev
	# Debian packages (make deb) and the unit's check (systemd-analyze)
	debhelper dh-dkms dpkg-dev lintian fakeroot systemd
	# test clients and tools
	stress-ng sqlite3 python3 iproute2 procps util-linux kmod
	# the mesh
	babeld
	# metrics and pictures: the Prometheus text parser, gnuplot for PNGs
	python3-prometheus-client gnuplot-nox
	# QEMU tier
	qemu-system-x86 busybox-static cpio rdma-core ibverbs-providers
	ibverbs-utils
)

# `scripts/deps.sh bench` (make bench): the programs only the benchmarks run,
# kept out of `make test`'s install. Debian's redis-server also enables its
# own service on 127.0.0.1:6379; the benchmark starts a server of its own.
if [ "${1:-}" = bench ]; then
	packages=(redis-server redis-tools)
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#packages[@]} packages present"
	exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
