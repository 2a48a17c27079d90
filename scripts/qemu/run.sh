#!/usr/bin/env bash
# Runs memfed's QEMU tier: builds memfed.ko against Debian's packaged kernel,
# boots that kernel under TCG with an initramfs holding the module and the
# guest test programs, and decides pass/fail from the markers the guest
# prints (tests/qemu/init.sh), never from QEMU's exit code.
#
#   scripts/qemu/run.sh --bin-dir DIR [--fuzz N] [--seed S] [--timeout SECONDS]
#
#   --bin-dir   where memfed_kmod_test and memfed_nl_fuzz are (the CMake
#               build's bin/); the daemon tests (tests/qemu/daemon_tests.sh)
#               run when memfedd, memfedctl, memfed_eva_test and
#               ../lib/libmemfed-preload.so are there too, the RDMA tests
#               (tests/qemu/rdma_tests.sh, soft-RoCE) when memfed_rdma_test is,
#               the mesh tests (tests/qemu/mesh_tests.sh) with the daemon
#               tests when babeld is installed
#   --fuzz      random netlink messages in the fuzz test (default 20000)
#   --seed      fuzz seed (default: from the clock; printed in the log)
#   --timeout   host-side limit for the boot (default 240)
#   --rdma-bench  boot for the RDMA benchmark only (make bench): prints its
#               MEMFED-BENCH lines, 4 KiB and 64 KiB READ latency over RDMA
#               and over TCP in the same boot, and a mapped region's fault
#               p50, scan rate and the module daemon's CPU per page through
#               a pager node over each (TCG: functional figures only)
#
# Installs what it needs (scripts/deps.sh, linux-headers-$KVER) and caches
# the kernel under build/qemu-cache/. MEMFED_QEMU_KVER overrides the kernel
# ABI (default: what linux-image-amd64 depends on). Exit status 0 only if
# every expected marker says PASS and the final marker arrived.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=""
fuzz=20000
seed=$(date +%s)
timeout_s=240
rdma_bench=0
while [ $# -gt 0 ]; do
	case "$1" in
	--bin-dir) bin_dir=$2; shift 2 ;;
	--fuzz) fuzz=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--rdma-bench) rdma_bench=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/memfed_kmod_test" ] || [ ! -x "$bin_dir/memfed_nl_fuzz" ]; then
	echo "run.sh: --bin-dir must name the build's bin/ holding memfed_kmod_test and memfed_nl_fuzz (build them with make)" >&2
	exit 2
fi
bin_dir=$(cd "$bin_dir" && pwd)

cache=${MEMFED_QEMU_CACHE:-$root/build/qemu-cache}
mkdir -p "$cache"
t0=$(date +%s.%N)
phase() { awk -v t0="$t0" -v now="$(date +%s.%N)" -v what="$1" 'BEGIN { printf "qemu: %-28s %6.1f s\n", what, now - t0 }'; }

# 1. Host tools.
for tool in qemu-system-x86_64 cpio; do
	command -v "$tool" >/dev/null || need_deps=1
done
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need_deps=1
if [ -n "${need_deps:-}" ]; then
	"$root/scripts/deps.sh"
fi

# 2. The kernel the tests boot: Debian's packaged one, never the host's.
. "$root/scripts/qemu/common.sh"
exec 9>"$cache/.lock"
flock 9
kver=$(memfed_kver)
kdir=$cache/$kver
# With it, soft-RoCE's modules (and what they need) for the RDMA tests, and
# veth for the mesh tests.
rdma_mods="configfs udp_tunnel ip6_udp_tunnel crc32_generic ib_core ib_uverbs iw_cm ib_cm rdma_cm rdma_ucm rdma_rxe dummy veth"
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/rdma/.complete" ] || [ ! -f "$kdir/rdma/veth.ko" ]; then
	rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
	(cd "$kdir.tmp" && apt-get download -q "linux-image-$kver" 2>&1 |
		grep -v '^W: Download is performed unsandboxed' || true)
	deb=$(ls "$kdir.tmp"/linux-image-"$kver"_*.deb)
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir.tmp" --wildcards "./boot/vmlinuz-$kver" \
		$(for m in $rdma_mods; do echo "*/$m.ko"; done)
	mkdir -p "$kdir/rdma"
	for m in $rdma_mods; do
		find "$kdir.tmp/lib" -name "$m.ko" -exec cp {} "$kdir/rdma/" \;
		[ -f "$kdir/rdma/$m.ko" ] || { echo "run.sh: $m.ko is not in linux-image-$kver" >&2; exit 1; }
	done
	touch "$kdir/rdma/.complete"
	mv "$kdir.tmp/boot/vmlinuz-$kver" "$kdir/vmlinuz"
	rm -rf "$kdir.tmp"
fi
memfed_ensure_headers "$kver"
flock -u 9
phase "kernel $kver ready"

# 3. memfed.ko, built out of the source tree.
work=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
memfed_build_kmod "$root" "$kver" "$work/kmod"
phase "memfed.ko built"

# 4. The initramfs: busybox, the test programs and their shared libraries.
rd=$work/root
mkdir -p "$rd"/{bin,proc,sys,dev,tmp,run,etc,var/lib}
cp /bin/busybox "$rd/bin/"
cp "$root/tests/qemu/init.sh" "$rd/init"
cp "$work/kmod/memfed.ko" "$rd/memfed.ko"
echo 'root:x:0:0:root:/:/bin/sh' >"$rd/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$rd/etc/passwd"
echo 'root:x:0:' >"$rd/etc/group"
echo 'nogroup:x:65534:' >>"$rd/etc/group"

# copy_with_libs FILE [DEST]: FILE into the initramfs at DEST (default
# /bin/), with every shared library ldd names at its own path.
multiarch=$(gcc -print-multiarch)
copy_with_libs() {
	local bin=$1 dest=${2:-/bin/} lib
	mkdir -p "$rd$(dirname "$dest/x")"
	cp "$bin" "$rd$dest"
	for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*'); do
		case $lib in
		/lib/* | /lib64/* | /usr/*) ;;
		# A library of the build tree (libmemfed) goes where libc is: its own
		# path may be under /tmp, which the guest's init mounts over.
		*) lib_dest=/lib/$multiarch/$(basename "$lib")
		   mkdir -p "$rd/lib/$multiarch"
		   [ -e "$rd$lib_dest" ] || cp -L "$lib" "$rd$lib_dest"
		   continue ;;
		esac
		[ -e "$rd$lib" ] && continue
		mkdir -p "$rd$(dirname "$lib")"
		cp -L "$lib" "$rd$lib"
	done
}
progs=(memfed_kmod_test memfed_nl_fuzz)
daemon_tests=1
for p in memfedd memfedctl memfed_eva_test ../lib/libmemfed-preload.so; do
	if [ -e "$bin_dir/$p" ]; then
		[[ $p == */* ]] || progs+=("$p")
	else
		daemon_tests=0
	fi
done
for p in "${progs[@]}"; do
	copy_with_libs "$bin_dir/$p"
done
if [ "$daemon_tests" -eq 1 ]; then
	# memfedctl run finds the shim in ../lib; the unmodified programs are
	# coreutils' sha256sum and dd (dynamically linked, unlike busybox).
	copy_with_libs "$bin_dir/../lib/libmemfed-preload.so" /lib/
	copy_with_libs /usr/bin/sha256sum /usr/bin/
	copy_with_libs /usr/bin/dd /usr/bin/ # writes through the shim (rdma_tests.sh)
fi
# Threads abort at exit without libgcc_s (pthread_exit unwinds through it).
gcc_s=$(ldconfig -p | sed -n 's/.*libgcc_s.so.1 (libc6,x86-64) => //p' | head -1)
mkdir -p "$rd$(dirname "$gcc_s")" && cp -L "$gcc_s" "$rd$gcc_s"
cp "$root/tests/qemu/guest_lib.sh" "$rd/bin/memfed_guest_lib.sh"
if [ "$daemon_tests" -eq 1 ]; then
	cp "$root/tests/qemu/daemon_tests.sh" "$rd/bin/memfed_daemon_tests.sh"
else
	echo "qemu: memfedd, memfedctl, memfed_eva_test or ../lib/libmemfed-preload.so missing in $bin_dir: daemon tests skipped"
fi
# The programs over RDMA (tests/qemu/rdma_program_tests.sh): the fault
# probe, and python3 with only the stdlib files the test's script loads
# (found with python3 -v), not the whole stdlib.
copy_rdma_program_tests() {
	cp "$root/tests/qemu/rdma_program_tests.sh" "$rd/bin/memfed_rdma_program_tests.sh"
	cp "$root/tests/heap_hash.py" "$rd/bin/memfed_heap_hash.py"
	copy_with_libs "$bin_dir/memfed_fault_probe"
	local py f
	py=$(readlink -f /usr/bin/python3 2>/dev/null) || return 0
	[ -x "$py" ] || return 0
	copy_with_libs "$py" /usr/bin/
	ln -sf "$(basename "$py")" "$rd/usr/bin/python3"
	for f in $("$py" -I -S -v "$root/tests/heap_hash.py" 1 2>&1 |
		sed -n "s/^# code object from '\(.*\)'\$/\1/p; s/^# extension module .* loaded from '\(.*\)'\$/\1/p") \
		"$("$py" -I -S -c 'import sys; print(sys.prefix)')/lib/$(basename "$py")/os.py"; do
		case $f in
		*.so) copy_with_libs "$f" "$(dirname "$f")/" ;;
		*/__pycache__/*.pyc) # the cached code and its source beside it
			mkdir -p "$rd$(dirname "$f")"
			cp "$f" "$rd$f"
			src=$(dirname "$(dirname "$f")")/$(basename "$f" | sed 's/\.cpython-[0-9]*\.pyc$/.py/')
			cp "$src" "$rd$src" ;;
		*) mkdir -p "$rd$(dirname "$f")" && cp "$f" "$rd$f" ;;
		esac
	done
}
rdma_tests=0
if [ -x "$bin_dir/memfed_rdma_test" ]; then
	# Soft-RoCE: its modules, iproute2's ip and rdma, and the rxe provider
	# that libibverbs dlopens (with the driver file that names it).
	rdma_tests=1
	copy_with_libs "$bin_dir/memfed_rdma_test"
	mkdir -p "$rd/rdma" "$rd/etc/libibverbs.d"
	cp "$kdir"/rdma/*.ko "$rd/rdma/"
	copy_with_libs /usr/sbin/ip /usr/sbin/
	copy_with_libs /usr/bin/rdma /usr/bin/
	copy_with_libs "/usr/lib/$multiarch/libibverbs/librxe-rdmav34.so" "/usr/lib/$multiarch/libibverbs/"
	cp /etc/libibverbs.d/rxe.driver "$rd/etc/libibverbs.d/"
	cp "$root/tests/qemu/rdma_tests.sh" "$rd/bin/memfed_rdma_tests.sh"
	if [ "$daemon_tests" -eq 1 ] && [ -x "$bin_dir/memfed_fault_probe" ]; then
		copy_rdma_program_tests
	fi
else
	echo "qemu: memfed_rdma_test missing in $bin_dir (rdma-core not installed when built?): RDMA tests skipped"
fi
# The mesh tests (tests/qemu/mesh_tests.sh): babeld, iproute2's ip for the
# namespaces and veth links, and veth.ko.
mesh_tests=0
babeld=$(command -v babeld || echo /usr/sbin/babeld)
if [ "$daemon_tests" -eq 1 ] && [ -x "$babeld" ]; then
	mesh_tests=1
	copy_with_libs "$babeld" /bin/
	copy_with_libs /usr/sbin/ip /usr/sbin/
	mkdir -p "$rd/rdma" "$rd/var/run"
	cp "$kdir/rdma/veth.ko" "$rd/rdma/"
	cp "$root/tests/qemu/mesh_tests.sh" "$rd/bin/memfed_mesh_tests.sh"
elif [ "$daemon_tests" -eq 1 ]; then
	echo "qemu: babeld is not installed (make deps installs it): mesh tests skipped"
fi
(cd "$rd" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"
phase "initramfs $(du -m "$work/initramfs.cpio" | cut -f1) MB"

# 5. Boot. Markers come back on the serial console.
log=$work/serial.log
last=$cache/last-serial.log
echo "qemu: fuzz seed $seed, log in $last"
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg,thread=multi -cpu max -smp 2 -m 1G \
	-no-reboot -display none -serial stdio -nodefaults \
	-kernel "$kdir/vmlinuz" -initrd "$work/initramfs.cpio" \
	-append "console=ttyS0 quiet panic=-1 oops=panic panic_on_warn=1 slub_debug=FZPU,kmalloc-* MEMFED_FUZZ=$fuzz MEMFED_SEED=$seed MEMFED_RDMA_BENCH=$rdma_bench" \
	</dev/null >"$log" 2>&1
qemu_rc=$?
set -e
cp "$log" "$last.$$" && mv "$last.$$" "$last"
phase "guest finished (qemu rc $qemu_rc)"

if [ "$rdma_bench" -eq 1 ]; then
	tr -d '\r' <"$log" | grep -E '^MEMFED-(BENCH|DETAIL)' || true
	tr -d '\r' <"$log" | grep -q '^MEMFED-BENCH tcp .*pages/s' || { echo "qemu: no RDMA benchmark figures (serial log: $last)"; exit 1; }
	exit 0
fi

# 6. Verdict from the markers alone.
expected=(insmod kmodlink-open layout netlink-modules netlink-routes netlink-windows
	netlink-invalid-values netlink-events sysfs unprivileged family-absent-in-other-netns
	netlink-malformed netlink-fuzz netlink-fuzz-unprivileged
	unprivileged-fuzz-changed-nothing tables-empty-no-leak populate rmmod-clean reload kernel-log-clean)
if [ "$daemon_tests" -eq 1 ]; then
	mapfile -t -O ${#expected[@]} expected < <(sed -n 's/^# expect: //p' "$root/tests/qemu/daemon_tests.sh")
fi
if [ "$mesh_tests" -eq 1 ]; then
	mapfile -t -O ${#expected[@]} expected < <(sed -n 's/^# expect: //p' "$root/tests/qemu/mesh_tests.sh")
fi
if [ "$rdma_tests" -eq 1 ]; then
	mapfile -t -O ${#expected[@]} expected < <(sed -n 's/^# expect: //p' "$root/tests/qemu/rdma_tests.sh")
	if [ "$daemon_tests" -eq 1 ]; then
		mapfile -t -O ${#expected[@]} expected < <(sed -n 's/^# expect-with-daemons: //p' "$root/tests/qemu/rdma_tests.sh")
		if [ -x "$bin_dir/memfed_fault_probe" ]; then
			mapfile -t -O ${#expected[@]} expected < <(sed -n 's/^# expect-with-daemons: //p' "$root/tests/qemu/rdma_program_tests.sh")
		fi
	fi
fi
serial=$work/serial.txt
tr -d '\r' <"$log" >"$serial"
grep -E '^MEMFED-(TEST|DETAIL|INFO)' "$serial" || true
fail=0
for t in "${expected[@]}"; do
	if ! grep -qx "MEMFED-TEST $t PASS" "$serial"; then
		grep -q "^MEMFED-TEST $t " "$serial" || echo "qemu: no marker for test '$t'"
		fail=1
	fi
done
if grep -q '^MEMFED-TEST .* FAIL$' "$serial"; then
	fail=1
fi
if ! grep -qx 'MEMFED-QEMU-DONE' "$serial"; then
	echo "qemu: the guest never printed MEMFED-QEMU-DONE (panic, hang or timeout); last lines:"
	tail -n 40 "$log"
	fail=1
fi
if [ "$fail" -ne 0 ]; then
	echo "qemu: FAIL (serial log: $last)"
	exit 1
fi
echo "qemu: PASS, ${#expected[@]} tests"
