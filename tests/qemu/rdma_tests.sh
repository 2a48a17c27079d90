#!/bin/busybox sh
# RDMA tests of the QEMU tier, run by init.sh when the runner found
# memfed_rdma_test: soft-RoCE (rdma_rxe) on a dummy device (rdma_cm does not
# work over lo), then the RDMA transport's cases (tests/qemu/rdma_test.cc).
# The runner expects these markers:
# expect: rdma-rxe-up
# expect: rdma-connect
# expect: rdma-read-random
# expect: rdma-read-outside-extent-refused
# expect: rdma-forged-key-refused
# expect: rdma-stale-region-refused
# expect: rdma-bad-token-refused
# expect: rdma-torn-read
ADDR=10.77.0.1

result() {
	if [ "$2" -eq 0 ]; then
		echo "MEMFED-TEST $1 PASS"
	else
		echo "MEMFED-TEST $1 FAIL"
	fi
}

ok=0
for m in configfs udp_tunnel ip6_udp_tunnel crc32_generic ib_core ib_uverbs iw_cm ib_cm \
	rdma_cm rdma_ucm rdma_rxe dummy; do
	if ! grep -q "^$m " /proc/modules; then
		insmod /rdma/$m.ko || { echo "MEMFED-DETAIL rdma: insmod $m failed"; ok=1; }
	fi
done
ip link set lo up
/usr/sbin/ip link add rdma0 type dummy &&
	/usr/sbin/ip addr add $ADDR/24 dev rdma0 &&
	/usr/sbin/ip link set rdma0 up &&
	/usr/bin/rdma link add rxe0 type rxe netdev rdma0 &&
	[ -e /dev/infiniband/rdma_cm ] && [ -e /dev/infiniband/uverbs0 ] || ok=1
if [ $ok -ne 0 ]; then
	echo "MEMFED-DETAIL rdma: $(/usr/bin/rdma link show 2>&1)"
	ls /dev/infiniband 2>&1 | sed 's/^/MEMFED-DETAIL rdma: dev: /'
fi
result rdma-rxe-up $ok

memfed_rdma_test $ADDR
