#!/usr/bin/env bash
# The Debian packages as an operator gets them: `make deb` builds memfed,
# libmemfedN, libmemfed-dev and memfed-dkms from the release tree; apt-get
# installs them on this machine; the demo runs against the installed
# /usr/sbin/memfedd and /usr/bin/memfedctl, a program is built against the
# installed libmemfed-dev with pkg-config and run; DKMS builds memfed.ko from
# the installed source for Debian's kernel (the QEMU tier's); then apt-get purge
# leaves no package and no file behind.
# It changes the system, so ctest runs it alone (RUN_SERIAL); the other tests
# name their binaries by path ($MEMFEDD, $MEMFEDCTL), never through PATH.
# Usage: deb_install_test.sh SOURCE_DIR RELEASE_DIR
set -euo pipefail
src=$1 release=$2
skip() { echo "SKIPPED: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "installing packages needs root"
for tool in dpkg-buildpackage apt-get lintian; do
	command -v $tool >/dev/null || skip "$tool is missing (make deps installs it)"
done
mapfile -t pkgs < <(sed -n "s/^Package: //p" "$src/debian/control") # libmemfedN follows the soname
installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^[ir]'; }
for p in "${pkgs[@]}"; do
	installed "$p" && skip "package $p is already on this machine; the test would purge it"
done

# DKMS builds for the kernel the QEMU tier boots: its headers are installed
# the way that tier installs them (and stay, for it), before the package
# list is taken.
source "$src/scripts/qemu/common.sh"
kver=$(memfed_kver) && memfed_ensure_headers "$kver" || kver=""

export MEMFEDD=/usr/sbin/memfedd MEMFEDCTL=/usr/bin/memfedctl
source "$src/tests/integration/lib.sh"
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q "$@"; }
dpkg-query -W -f='${Package}\n' | sort >"$T/before"
purge_new() { # every package the install brought, ours and their dependencies
	dpkg-query -W -f='${Package}\n' | sort | comm -13 "$T/before" - >"$T/new"
	[ -s "$T/new" ] && apt_get purge $(cat "$T/new") >"$T/purge.log" 2>&1
}
trap 'rc=$?; purge_new || true; (exit $rc); cleanup' EXIT

make -C "$src" deb RELEASE="$release" >"$T/deb.log" 2>&1 ||
	fail "make deb: $(tail -n 20 "$T/deb.log")"
debs=("$src"/build/deb/*.deb)
[ ${#debs[@]} -eq 4 ] || fail "expected 4 packages in build/deb, got: ${debs[*]}"
echo "lintian (errors fail make deb; warnings):"
grep -E '^[WE]: ' "$T/deb.log" | sed 's/^/  /' || echo "  none"
ok "make deb built ${#debs[@]} packages, lintian clean of errors"

# --no-install-recommends: dkms recommends the headers of the newest kernel.
apt_get install --no-install-recommends "${debs[@]}" >"$T/install.log" 2>&1 ||
	fail "apt-get install: $(tail -n 20 "$T/install.log")"
for p in "${pkgs[@]}"; do installed "$p" || fail "$p is not installed"; done
for f in /usr/sbin/memfedd /usr/bin/memfedctl /lib/systemd/system/memfedd.service \
	/usr/include/memfed.h /usr/lib/pkgconfig/memfed.pc /usr/src/memfed-0.1.0/dkms.conf; do
	[ -e "$f" ] || fail "$f not installed"
done
grep -qx 'ExecStart=/usr/sbin/memfedd' /lib/systemd/system/memfedd.service ||
	fail "the installed unit does not start /usr/sbin/memfedd"
dpkg -L "${pkgs[@]}" | sort -u >"$T/files"
ok "apt-get installed ${pkgs[*]}"

bash "$src/scripts/demo.sh" --installed >"$T/demo.log" 2>&1 || fail "demo: $(tail -n 20 "$T/demo.log")"
grep -q 'Memory is leaving the machine' "$T/demo.log" || fail "demo did not read its message back"
grep -qx 'ok' "$T/demo.log" || fail "demo's sqlite3 on remote memory did not pass integrity_check"
ok "the demo runs on the installed memfedd, memfedctl and preload shim"

mkdir -p "$T/d"
"$MEMFEDD" --state-dir "$T/d" --socket "$T/d/sock" --listen 127.0.0.1:0 --kmod off \
	--pool-size 64M >>"$T/d.log" 2>&1 &
DAEMON_PID[d]=$!
for _ in $(seq 1 200); do ctl d status >/dev/null 2>&1 && break; sleep 0.05; done
cc "$src/examples/map_region.c" $(pkg-config --cflags --libs memfed) -o "$T/map_region" ||
	fail "examples/map_region.c does not build against the installed libmemfed-dev"
libs=$(ldd "$T/map_region")
grep -Eq '=> (/usr)?/lib/libmemfed.so' <<<"$libs" || fail "map_region is not linked to the installed libmemfed: $libs"
"$T/map_region" "$T/d/sock" >"$T/map.log" 2>&1 || fail "map_region: $(cat "$T/map.log")"
stop_daemon d
ok "a program built with pkg-config against libmemfed-dev maps a region"

if [ -n "$kver" ]; then
	dkms build memfed/0.1.0 -k "$kver" >"$T/dkms.log" 2>&1 || fail "dkms build for $kver: $(tail -n 20 "$T/dkms.log")"
	ls /var/lib/dkms/memfed/0.1.0/"$kver"/*/module/memfed.ko* >/dev/null ||
		fail "dkms built no memfed.ko for $kver"
	ok "DKMS builds memfed.ko from the installed source for $kver"
else
	echo "NOTE: memfed-dkms is installed, but DKMS was NOT tested: the headers of Debian's kernel" >&2
	echo "NOTE: could not be installed (above), and the running $(uname -r) has none in Debian" >&2
fi

purge_new || fail "apt-get purge: $(tail -n 20 "$T/purge.log")"
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^[ir]' &&
		fail "$p is still known to dpkg after purge: $(dpkg -l "$p" | tail -n 1)"
done
left=()
while read -r f; do
	# Directories may be shared (/usr/lib, and /lib itself on merged-/usr).
	{ [ -e "$f" ] || [ -L "$f" ]; } && [ ! -d "$f" ] && left+=("$f")
done <"$T/files"
[ -e /usr/src/memfed-0.1.0 ] && left+=(/usr/src/memfed-0.1.0)
[ -e /var/lib/dkms/memfed ] && left+=(/var/lib/dkms/memfed)
# dkms keeps the module-signing key it generated at the first build, even on
# purge, so that a key enrolled in the firmware stays valid. When this test
# brought dkms, that key is its doing: removed, and said so.
if grep -qx dkms "$T/new" && [ -d /var/lib/dkms ]; then
	extra=$(ls /var/lib/dkms | grep -vx 'mok.key\|mok.pub' || true)
	[ -z "$extra" ] || left+=("/var/lib/dkms/{$extra}")
	echo "NOTE: removing /var/lib/dkms ($(ls /var/lib/dkms | tr '\n' ' ')), which dkms leaves after purge" >&2
	[ -n "$extra" ] || rm -rf /var/lib/dkms
fi
ls /etc/systemd/system/*/memfedd.service >/dev/null 2>&1 && left+=(/etc/systemd/system/*/memfedd.service)
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
ok "apt-get purge leaves no package and no file"
echo "deb_install: $PASSED passed"
