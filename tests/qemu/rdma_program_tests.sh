#!/bin/busybox sh
# Programs over RDMA in the QEMU guest, run by rdma_tests.sh after its own
# cases (soft-RoCE rxe0 on the dummy device rdma0 is up, the daemon tests'
# binaries are there): a module daemon serving one-sided reads and a pager
# node daemon with --transport rdma, then
#   rdma-program-python-heap  python3 hashes a dict on a heap larger than
#                             its budget (memfedctl run --heap-budget): the
#                             hash equals the native run's, and the node read
#                             pages over RDMA;
#   rdma-device-gone          the rxe device is deleted (rdma link delete)
#                             under a program's reads: the program's output
#                             is right (over RDMA or TCP: see below), both
#                             daemons keep running while the kernel's
#                             removal waits for them (below); stopped, the
#                             removal completes; with the device added
#                             again, restarted daemons read over RDMA again;
#   rdma-program-rmmod        the same, then rdma_rxe unloaded: daemons
#                             started again serve the program over TCP.
# The runner expects these markers when the daemon tests run:
# expect-with-daemons: rdma-program-python-heap
# expect-with-daemons: rdma-device-gone
# expect-with-daemons: rdma-program-rmmod
#
#   memfed_rdma_program_tests.sh [--bench]
# --bench: the benchmark of make bench instead (MEMFED-BENCH lines): fault
# p50 and sequential scan rate of a mapped region through a pager node over
# RDMA and one over TCP, against the same module daemon in the same boot, and
# the module daemon's CPU time per page served (/proc/PID/stat utime+stime).
ADDR=10.77.0.1
D=/tmp/rdma-programs
. /bin/memfed_guest_lib.sh

mkdir -p $D/mod $D/node $D/tnode
MOD_KEY=$(memfedctl key generate $D/mod.key)
NODE_KEY=$(memfedctl key generate $D/node.key)
TNODE_KEY=$(memfedctl key generate $D/tnode.key)

start_module() {
	rm -f $D/mod/sock
	memfedd --roles module --kmod off --state-dir $D/mod --socket $D/mod/sock \
		--key-file $D/mod.key --trust $NODE_KEY --trust $TNODE_KEY \
		--listen $ADDR:7720 --rdma-listen $ADDR:7820 --pool-size 160M >>$D/mod.log 2>&1 &
	MOD_PID=$!
	wait_for 60 memfedctl --socket $D/mod/sock status
}

# start_node DIR KEY TRANSPORT: a pager node daemon; its pid in NODE_PID.
start_node() {
	rm -f $1/sock
	memfedd --roles pager --kmod off --state-dir $1 --socket $1/sock \
		--key-file $2 --trust $MOD_KEY --peer $ADDR:7720 \
		--transport $3 >>$1.log 2>&1 &
	NODE_PID=$!
	wait_for 60 memfedctl --socket $1/sock status
}

stop() {
	kill $1 2>/dev/null
	wait $1 2>/dev/null
}

# rdma_connects LOG: how many times the node's channel set RDMA up.
rdma_connects() { grep -c 'page reads over RDMA from' $1; }

# cpu_ticks PID: utime + stime of PID, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }

if [ "${1:-}" = --bench ]; then
	# Two pager nodes on the same module: one over RDMA, one over TCP.
	# Each maps a 16 MiB region of its own; the probe faults in half of
	# it in random order and scans the other half.
	start_module || { echo "MEMFED-BENCH module daemon did not start: $(tail -3 $D/mod.log)"; exit 1; }
	start_node $D/node $D/node.key rdma || { echo "MEMFED-BENCH rdma node did not start"; exit 1; }
	RNODE=$NODE_PID
	start_node $D/tnode $D/tnode.key tcp || { echo "MEMFED-BENCH tcp node did not start"; exit 1; }
	TNODE=$NODE_PID
	head -c 16777216 /dev/urandom >$D/bench.in
	for t in rdma tcp; do
		s=$D/node/sock
		[ $t = tcp ] && s=$D/tnode/sock
		memfedctl --socket $s region create b$t 16M >/dev/null &&
			memfedctl --socket $s region write b$t <$D/bench.in &&
			memfedctl --socket $s region create w$t 64K >/dev/null &&
			head -c 65536 $D/bench.in | memfedctl --socket $s region write w$t ||
			{ echo "MEMFED-BENCH regions b$t, w$t not written"; exit 1; }
		# A run on a small region first sets up what the measured run must
		# not pay for (the RDMA connection); the measured region's pages
		# are cold: every first touch is a fault served from the module.
		memfedctl --socket $s run --map w$t=$D/w$t.bin -- memfed_fault_probe $D/w$t.bin >/dev/null 2>&1
		before=$(cpu_ticks $MOD_PID)
		out=$(memfedctl --socket $s run --map b$t=$D/b$t.bin -- memfed_fault_probe $D/b$t.bin 2>$D/probe.err)
		after=$(cpu_ticks $MOD_PID)
		echo "MEMFED-DETAIL probe $t: $out $(cat $D/probe.err)"
		echo "$out" | awk -v t=$t -v ticks=$((after - before)) -v hz=100 '
			/^fault_probe:/ {
				pages = $3 + $11
				printf "MEMFED-BENCH %-5s mapped region: fault p50 %8.1f us  p99 %8.1f us  scan %8.0f pages/s  module CPU %6.1f us/page (%d ticks, %d pages)\n",
					t, $5, $8, $15, ticks * 1e6 / hz / pages, ticks, pages
			}'
	done
	grep 'rdma' $D/node.log | sed 's/^/MEMFED-DETAIL rdma node: /'
	stop $RNODE
	stop $TNODE
	grep 'pages over RDMA' $D/node.log | sed 's/^/MEMFED-BENCH (rdma node: /; s/$/)/'
	stop $MOD_PID
	exit 0
fi

# 1. python3's heap over RDMA.
ok=0
start_module || { detail "rdma module daemon did not start: $(tail -3 $D/mod.log)"; ok=1; }
start_node $D/node $D/node.key rdma || { detail "rdma node did not start: $(tail -3 $D/node.log)"; ok=1; }
N=20000
if [ -x /usr/bin/python3 ]; then
	want=$(/usr/bin/python3 -I -S /bin/memfed_heap_hash.py $N)
	t0=$(date +%s)
	got=$(memfedctl --socket $D/node/sock run --heap-budget 4M --heap-size 64M -- \
		/usr/bin/python3 -I -S /bin/memfed_heap_hash.py $N 2>$D/py.err)
	echo "MEMFED-INFO rdma-program-python-heap: $N entries, took $(($(date +%s) - t0)) s"
	[ -n "$want" ] && [ "$got" = "$want" ] ||
		{ detail "python3 hash over RDMA '$got' ($(tail -3 $D/py.err)), native '$want'"; ok=1; }
else
	detail "no /usr/bin/python3 in the initramfs (scripts/qemu/run.sh copies the host's)"
	ok=1
fi
stop $NODE_PID
[ "$(rdma_connects $D/node.log)" -ge 1 ] || { detail "the node never read over RDMA: $(grep rdma $D/node.log)"; ok=1; }
# One summary line per RdmaChannel: a pager has two per module (class_channel.h).
pages=$(sed -n 's/.* reads, \([0-9]*\) pages over RDMA.*/\1/p' $D/node.log | awk '{n += $1} END {print n + 0}')
[ "${pages:-0}" -gt 0 ] || { detail "no pages over RDMA: $(grep rdma $D/node.log)"; ok=1; }
grep 'pages over RDMA' $D/node.log | sed 's/^/MEMFED-INFO rdma-program-python-heap: /'
result rdma-program-python-heap $ok

# A program that reads an 8 MiB region for a while, in the background: its
# sha256sum must equal the native one whatever happens to the device.
head -c 8388608 /dev/urandom >$D/big.in
BWANT=$(sha256sum <$D/big.in | cut -d' ' -f1)
start_reader() {
	memfedctl --socket $D/node/sock run --map big=$D/big.bin -- /usr/bin/sha256sum $D/big.bin \
		>$D/big.out 2>$D/big.err &
	RUN_PID=$!
}
reader_right() {
	wait_for 120 sh -c "! kill -0 $RUN_PID" || { detail "$1: program still running"; kill -9 $RUN_PID; }
	wait $RUN_PID
	[ "$(cut -d' ' -f1 $D/big.out)" = "$BWANT" ] ||
		{ detail "$1: sha256sum '$(cat $D/big.out)' $(cat $D/big.err), want $BWANT"; return 1; }
}

# 2. The device goes away under a program's reads, and comes back. On rxe
# (no disassociate_ucontext) the kernel's removal waits in
# ib_uverbs_remove_one until every process that opened the device has let
# go of it; librdmacm keeps a process's device context open until the
# process exits, so the removal completes only once both daemons stop. While
# it waits, programs read the right bytes and both daemons keep running;
# the node's READs go on working or fail (it then falls back to TCP),
# depending on how far the removal got. After the device is added again,
# restarted daemons read over RDMA again.
wait_more() { # wait_more N PATTERN FILE: more than N lines match in FILE
	wait_for 30 sh -c "[ \$(grep -c '$2' $3) -gt $1 ]"
}
# fell_back WHAT N: says whether the node's channel fell back to TCP (more
# than N "RDMA off" lines). Not asserted: while the removal waits for the
# processes, their queue pairs may go on working, and whether a READ fails
# before the program is done depends on timing.
fell_back() {
	if [ "$(grep -c 'RDMA off, reads over TCP' $D/node.log)" -gt "$2" ]; then
		echo "MEMFED-INFO $1: the node fell back to TCP: $(grep 'RDMA off' $D/node.log | tail -1)"
	else
		echo "MEMFED-INFO $1: the node's RDMA reads kept working while the removal waited"
	fi
}
ok=0
: >$D/node.log
start_node $D/node $D/node.key rdma || { detail "node did not start: $(tail -3 $D/node.log)"; ok=1; }
ctl region create big 8M >/dev/null && ctl region write big <$D/big.in || { detail "region 'big' not written"; ok=1; }
# RDMA up first: the removal meets a connected channel, not a connect.
start_reader
reader_right "before the removal" || ok=1
wait_more 0 'page reads over RDMA from' $D/node.log || { detail "RDMA never came up"; ok=1; }
start_reader
sleep 1
/usr/bin/rdma link delete rxe0 >$D/del.out 2>&1 &
DEL_PID=$!
reader_right "device being deleted" || ok=1
fell_back "device being deleted" 0
start_reader
reader_right "device being deleted, second run" || ok=1
kill -0 $MOD_PID && kill -0 $NODE_PID || { detail "a daemon died: $(tail -3 $D/mod.log) $(tail -3 $D/node.log)"; ok=1; }
kill -0 $DEL_PID 2>/dev/null &&
	echo "MEMFED-INFO rdma-device-gone: rdma link delete waits in $(cat /proc/$DEL_PID/wchan 2>/dev/null) while the daemons run"
stop $NODE_PID
stop $MOD_PID
wait_for 30 sh -c "! kill -0 $DEL_PID" || { detail "rdma link delete still blocked with the daemons stopped"; ok=1; }
/usr/bin/rdma link add rxe0 type rxe netdev rdma0 || { detail "rdma link add failed"; ok=1; }
before=$(rdma_connects $D/node.log)
start_module || { detail "module daemon did not restart: $(tail -3 $D/mod.log)"; ok=1; }
start_node $D/node $D/node.key rdma || { detail "node did not restart: $(tail -3 $D/node.log)"; ok=1; }
start_reader
reader_right "device back" || ok=1
[ "$(rdma_connects $D/node.log)" -gt "$before" ] ||
	{ detail "RDMA not used again after the device came back: $(grep rdma $D/node.log | tail -3)"; ok=1; }
result rdma-device-gone $ok

# 3. rdma_rxe unloaded under a program's reads: as above, the device's
# removal completes once the daemons stop; then the module unloads, and
# daemons started again serve the program over TCP (the node, still
# --transport rdma, logs that the module offers no RDMA).
ok=0
offs=$(grep -c 'RDMA off, reads over TCP' $D/node.log)
wait_more 0 'page reads over RDMA from' $D/node.log || { detail "RDMA not up"; ok=1; }
start_reader
sleep 1
/usr/bin/rdma link delete rxe0 >/dev/null 2>&1 &
DEL_PID=$!
reader_right "device being deleted" || ok=1
fell_back "rdma_rxe being unloaded" $offs
kill -0 $MOD_PID && kill -0 $NODE_PID || { detail "a daemon died: $(tail -3 $D/mod.log) $(tail -3 $D/node.log)"; ok=1; }
stop $NODE_PID
stop $MOD_PID
wait_for 30 sh -c "! kill -0 $DEL_PID" || { detail "rdma link delete still blocked"; ok=1; }
rmmod rdma_rxe 2>$D/rmmod.err || { detail "rmmod rdma_rxe: $(cat $D/rmmod.err)"; ok=1; }
grep -q '^rdma_rxe ' /proc/modules && { detail "rdma_rxe still loaded"; ok=1; }
rm -f $D/mod/sock
memfedd --roles module --kmod off --state-dir $D/mod --socket $D/mod/sock \
	--key-file $D/mod.key --trust $NODE_KEY --trust $TNODE_KEY \
	--listen $ADDR:7720 --pool-size 160M >>$D/mod.log 2>&1 &
MOD_PID=$!
wait_for 60 memfedctl --socket $D/mod/sock status || { detail "module daemon did not restart without RDMA: $(tail -3 $D/mod.log)"; ok=1; }
start_node $D/node $D/node.key rdma || { detail "node did not restart: $(tail -3 $D/node.log)"; ok=1; }
start_reader
reader_right "rdma_rxe unloaded" || ok=1
kill -0 $MOD_PID && kill -0 $NODE_PID || { detail "a daemon died: $(tail -3 $D/mod.log) $(tail -3 $D/node.log)"; ok=1; }
stop $NODE_PID
stop $MOD_PID
grep -i 'rdma' $D/node.log | tail -2 | sed 's/^/MEMFED-INFO rdma-program-rmmod: /'
result rdma-program-rmmod $ok
