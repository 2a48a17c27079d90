# Shared by scripts/qemu/*.sh (sourced, not run): which kernel the QEMU tier
# boots and how to get its headers.

# The ABI of Debian's packaged kernel (e.g. 6.1.0-56-amd64): what
# linux-image-amd64 depends on, never the host's `uname -r`.
# MEMFED_QEMU_KVER overrides it.
memfed_kver() {
	if [ -n "${MEMFED_QEMU_KVER:-}" ]; then
		echo "$MEMFED_QEMU_KVER"
		return
	fi
	local v
	v=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/.*Depends: linux-image-\([0-9].*\)$/\1/p' | head -1)
	if [ -z "$v" ]; then
		echo "cannot resolve the kernel version from 'apt-cache depends linux-image-amd64': run apt-get update, or set MEMFED_QEMU_KVER" >&2
		return 1
	fi
	echo "$v"
}

# Installs linux-headers-$1 unless its build tree is already there.
memfed_ensure_headers() {
	local kver=$1 sudo=""
	[ -f "/lib/modules/$kver/build/Makefile" ] && return 0
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "installing linux-headers-$kver" >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		"linux-headers-$kver" >/dev/null
}

# Builds memfed.ko from the source tree $1 against kernel $2 in directory $3
# (a copy, so the source tree stays clean). Fails on any compiler warning.
memfed_build_kmod() {
	local src=$1 kver=$2 out=$3
	rm -rf "$out" && mkdir -p "$out"
	cp -r "$src"/kmod/Kbuild "$src"/kmod/*.c "$src"/kmod/*.h "$src"/kmod/uapi "$out/"
	if ! make -s -C "/lib/modules/$kver/build" M="$out" modules -j2 >"$out/kbuild.log" 2>&1; then
		cat "$out/kbuild.log" >&2
		echo "memfed.ko does not build against $kver" >&2
		return 1
	fi
	if grep -q 'warning:' "$out/kbuild.log"; then
		cat "$out/kbuild.log" >&2
		echo "memfed.ko builds with warnings against $kver" >&2
		return 1
	fi
}
