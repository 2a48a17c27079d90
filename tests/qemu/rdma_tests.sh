#!/bin/busybox sh
# RDMA tests of the QEMU tier, run by init.sh when the runner found
# memfed_rdma_test: soft-RoCE (rdma_rxe) on a dummy device (rdma_cm does not
# work over lo), then the RDMA transport's cases (tests/qemu/rdma_test.cc).
# The runner expects these markers:
# expect: rdma-rxe-up
# expect: rdma-connect
# expect: rdma-read-random
# expect: rdma-faults-before-bulk
# expect: rdma-read-outside-extent-refused
# expect: rdma-forged-key-refused
# expect: rdma-key-per-region
# expect: rdma-stale-key-after-delete
# expect: rdma-region-needs-read-right
# expect: rdma-bad-token-refused
# expect: rdma-auto-without-rdma
# expect: rdma-key-needs-authentication
# expect: rdma-torn-read
# expect: rdma-write-back
# expect: rdma-write-malformed-refused
# expect: rdma-write-fallback
# expect: rdma-write-fence-drops
# expect: rdma-channel-random-order
# expect: rdma-channel-errors
# expect: rdma-channel-damaged-page
# expect: rdma-channel-random-cuts
# expect: rdma-channel-destroy-completes
# and, when the daemon tests run too (memfedd, memfedctl and the shim are there):
# expect-with-daemons: rdma-program-sha256
# expect-with-daemons: rdma-program-module-restart
ADDR=10.77.0.1

. /bin/memfed_guest_lib.sh

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

if [ "${MEMFED_RDMA_BENCH:-0}" = 1 ]; then
	memfed_rdma_test $ADDR --bench
	[ -x /bin/memfed_rdma_program_tests.sh ] && /bin/memfed_rdma_program_tests.sh --bench
	exit 0
fi
memfed_rdma_test $ADDR

# An unmodified program on a region over RDMA: a module daemon serving RDMA
# on the rxe device and a pager node daemon with --transport rdma; coreutils'
# sha256sum of a region file through the preload shim equals the native sum,
# and the node's channel says the pages came over RDMA.
if [ -x /bin/memfedd ] && [ -x /bin/memfedctl ]; then
	D=/tmp/rdma-daemons
	mkdir -p $D/mod $D/node
	ok=0
	MOD_KEY=$(memfedctl key generate $D/mod.key)
	NODE_KEY=$(memfedctl key generate $D/node.key)
	start_rdma_module() {
		rm -f $D/mod/sock
		memfedd --roles module --kmod off --state-dir $D/mod --socket $D/mod/sock \
			--key-file $D/mod.key --trust $NODE_KEY --listen $ADDR:7710 \
			--rdma-listen $ADDR:7810 --pool-size 64M >>$D/mod.log 2>&1 &
		MOD_PID=$!
	}
	start_rdma_module
	wait_for 60 memfedctl --socket $D/mod/sock status || { detail "rdma module daemon did not start: $(tail -3 $D/mod.log)"; ok=1; }
	memfedd --roles pager --kmod off --state-dir $D/node --socket $D/node/sock \
		--key-file $D/node.key --trust $MOD_KEY --peer $ADDR:7710 \
		--transport rdma >$D/node.log 2>&1 &
	NODE_PID=$!
	wait_for 60 ctl status || { detail "rdma node daemon did not start: $(tail -3 $D/node.log)"; ok=1; }
	head -c 1048576 /dev/urandom >$D/file.in
	wait_for 30 ctl region create file 1M && ctl region write file <$D/file.in ||
		{ detail "region 'file' not written"; ok=1; }
	want=$(sha256sum <$D/file.in | cut -d' ' -f1)
	got=$(ctl run --map file=$D/file.bin -- /usr/bin/sha256sum $D/file.bin 2>$D/run.err | cut -d' ' -f1)
	[ "$got" = "$want" ] || { detail "sha256sum over RDMA: '$got' $(cat $D/run.err), want $want"; ok=1; }
	# The node says so itself: module ls shows the transport in use, and
	# stats count the pages read by RDMA.
	ctl -j module ls | grep -q '"transport": *"rdma"' ||
		{ detail "module ls does not show transport rdma: $(ctl module ls)"; ok=1; }
	rpages=$(ctl stats | sed -n 's/^rdma\.pages //p')
	[ "${rpages:-0}" -gt 0 ] ||
		{ detail "stats count ${rpages:-no} pages over RDMA: $(ctl stats | grep '^rdma')"; ok=1; }

	# SIGKILL the module under a program reading over RDMA, start it again:
	# the program finishes with the right sum (over RDMA again, or TCP).
	rok=0
	head -c 8388608 /dev/urandom >$D/big.in
	ctl region create big 8M >/dev/null && ctl region write big <$D/big.in ||
		{ detail "region 'big' not written"; rok=1; }
	bwant=$(sha256sum <$D/big.in | cut -d' ' -f1)
	ctl run --map big=$D/big.bin -- /usr/bin/sha256sum $D/big.bin >$D/big.out 2>$D/big.err &
	RUN_PID=$!
	# Kill only once the program is reading: a kill before `memfedctl run`
	# has mapped the region tests start-up, not a restart under reads.
	big_faulting() { ctl stats 2>/dev/null | grep -q '^pager\.regions\.big\.faults [1-9]'; }
	wait_for 60 big_faulting || { detail "the program never faulted on 'big': $(cat $D/big.err)"; rok=1; }
	kill -9 $MOD_PID
	wait $MOD_PID 2>/dev/null
	start_rdma_module
	wait_for 60 memfedctl --socket $D/mod/sock status || { detail "module did not restart: $(tail -3 $D/mod.log)"; rok=1; }
	wait_for 120 sh -c "! kill -0 $RUN_PID" || { detail "program still running"; kill -9 $RUN_PID; rok=1; }
	wait $RUN_PID
	bgot=$(cut -d' ' -f1 $D/big.out)
	[ "$bgot" = "$bwant" ] || { detail "sha256sum across a module SIGKILL: '$bgot' $(cat $D/big.err), want $bwant"; rok=1;
		tail -25 $D/node.log | sed 's/^/MEMFED-INFO rdma node log: /'; }
	result rdma-program-module-restart $rok

	# Write-back over RDMA (after the restart, on the new connection):
	# coreutils' dd writes a region file through the shim; the node's pager
	# writes the pages back (counted below), and the module's copy, read
	# over TLS, holds them.
	head -c 1048576 /dev/urandom >$D/wb.in
	if ctl region create wb 1M >/dev/null; then
		ctl run --map wb=$D/wb.bin -- /usr/bin/dd if=$D/wb.in of=$D/wb.bin bs=65536 \
			conv=notrunc,fsync 2>$D/wb.err ||
			{ detail "dd over RDMA failed: $(tail -2 $D/wb.err)"; ok=1; }
		wbgot=$(ctl region read wb | sha256sum | cut -d' ' -f1)
		wbwant=$(sha256sum <$D/wb.in | cut -d' ' -f1)
		[ "$wbgot" = "$wbwant" ] || { detail "region written by dd: '$wbgot', want $wbwant"; ok=1; }
	else
		detail "region 'wb' not created"; ok=1
	fi
	wst=$(ctl stats | sed -n 's/^rdma\.pages_written //p')
	[ "${wst:-0}" -gt 0 ] ||
		{ detail "stats count ${wst:-no} pages written over RDMA: $(ctl stats | grep '^rdma')"; ok=1; }

	kill $NODE_PID
	wait $NODE_PID 2>/dev/null
	grep -q 'page reads over RDMA from' $D/node.log ||
		{ detail "the node never read over RDMA: $(grep rdma $D/node.log)"; ok=1; }
	# One summary line per RdmaChannel: a pager has two per module (class_channel.h).
	pages=$(sed -n 's/.* reads, \([0-9]*\) pages over RDMA.*/\1/p' $D/node.log | awk '{n += $1} END {print n + 0}')
	[ "${pages:-0}" -gt 0 ] || { detail "no pages over RDMA: $(grep rdma $D/node.log)"; ok=1; }
	wpages=$(sed -n 's/.* writes, \([0-9]*\) pages written over RDMA.*/\1/p' $D/node.log |
		awk '{ n += $1 } END { print n + 0 }')
	[ "${wpages:-0}" -gt 0 ] || { detail "no pages written back over RDMA: $(grep rdma $D/node.log)"; ok=1; }
	grep 'rdma' $D/node.log | sed 's/^/MEMFED-INFO rdma node: /'
	kill $MOD_PID
	wait $MOD_PID 2>/dev/null
	result rdma-program-sha256 $ok
fi

# Programs over RDMA, the device removed and rdma_rxe unloaded (last: it
# takes soft-RoCE down).
[ -x /bin/memfed_rdma_program_tests.sh ] && /bin/memfed_rdma_program_tests.sh
