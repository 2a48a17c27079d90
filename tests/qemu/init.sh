#!/bin/busybox sh
# /init of memfed's QEMU guest: loads memfed.ko, runs the kernel tests and
# prints one "MEMFED-TEST <name> PASS|FAIL" line per test, then
# "MEMFED-QEMU-DONE" and powers off. The host (scripts/qemu/run.sh) decides
# from these lines alone. Settings come from the kernel command line as
# environment variables: MEMFED_FUZZ (messages), MEMFED_SEED,
# MEMFED_RDMA_BENCH (1: only the RDMA benchmark).
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "MEMFED-QEMU-BOOTED $(uname -r)"

# make bench: only the RDMA benchmark (scripts/qemu/run.sh --rdma-bench).
if [ "${MEMFED_RDMA_BENCH:-0}" = 1 ]; then
	/bin/memfed_rdma_tests.sh
	echo MEMFED-QEMU-DONE
	poweroff -f
fi

. /bin/memfed_guest_lib.sh

gone() {
	for p in "$@"; do
		if [ -e "$p" ]; then
			echo "MEMFED-DETAIL still present: $p"
			return 1
		fi
	done
	return 0
}

insmod /memfed.ko && [ -d /sys/kernel/memfed/layout ] &&
	[ "$(cat /sys/kernel/memfed/counters/objects)" = 0 ]
result insmod $?

memfed_kmod_test basic
unshare -n memfed_kmod_test absent
memfed_nl_fuzz "${MEMFED_FUZZ:-20000}" "${MEMFED_SEED:-1}"
changes=$(cat /sys/kernel/memfed/counters/changes)
memfed_nl_fuzz "$((${MEMFED_FUZZ:-20000} / 4))" "${MEMFED_SEED:-1}" unprivileged
[ "$(cat /sys/kernel/memfed/counters/changes)" = "$changes" ]
result unprivileged-fuzz-changed-nothing $?
memfed_kmod_test empty

if [ -x /bin/memfed_daemon_tests.sh ]; then
	/bin/memfed_daemon_tests.sh
fi

if [ -x /bin/memfed_mesh_tests.sh ]; then
	/bin/memfed_mesh_tests.sh
fi

if [ -x /bin/memfed_rdma_tests.sh ]; then
	/bin/memfed_rdma_tests.sh
fi

# rmmod with entries in every table: the module's exit path frees them (and
# WARNs, which panics here, if its object count does not reach zero).
memfed_kmod_test populate
rmmod memfed && gone /sys/kernel/memfed /sys/module/memfed \
	/sys/kernel/debug/memfed && ! grep -q '^memfed ' /proc/modules
result rmmod-clean $?

# A second load must find no trace of the first.
insmod /memfed.ko && [ "$(cat /sys/kernel/memfed/counters/objects)" = 0 ] &&
	[ -z "$(ls -A /sys/kernel/memfed/modules)$(ls -A /sys/kernel/memfed/windows)" ] &&
	rmmod memfed
result reload $?

bad=$(dmesg | grep -E 'WARNING:|BUG[: ]|Oops|UBSAN|general protection|Call Trace|refcount_t|list_(add|del) corruption')
if [ -n "$bad" ]; then
	echo "$bad" | sed 's/^/MEMFED-DETAIL kernel log: /'
	# The first report whole (object, allocation and free stacks, call
	# trace): the lines above say only that something went wrong.
	dmesg | sed -n '/WARNING:\|BUG[: ]\|Oops\|UBSAN\|general protection/,$p' |
		grep -v ' Redzone \| Object \| Padding ' | head -n 80 |
		sed 's/^/MEMFED-DETAIL first report: /'
fi
[ -z "$bad" ]
result kernel-log-clean $?

echo MEMFED-QEMU-DONE
poweroff -f
