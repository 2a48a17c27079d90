#!/usr/bin/env bash
# make bench: every benchmark, each with its baseline measured in the same run.
# Not a test: numbers vary with the machine's load; ratios are what to read.
# Usage: scripts/bench.sh [BUILD_DIR]; BENCH=swap runs scripts/bench_swap.sh alone,
# BENCH=replication scripts/bench_replication.sh, BENCH=mesh scripts/bench_mesh.sh,
# BENCH=qos scripts/bench_qos.sh, BENCH=car scripts/bench_car.sh,
# BENCH=meshscale scripts/bench_meshscale.sh, BENCH=stream scripts/bench_stream.sh,
# BENCH=fork scripts/bench_fork.sh.
# Each section's table is kept as RESULTS/<section>.txt and drawn as
# RESULTS/<section>.png (scripts/bench_plot.py); RESULTS is build/bench
# beside BUILD_DIR unless MEMFED_BENCH_RESULTS names another directory.
set -euo pipefail
BUILD=${1:-build/release}
BIN=$(cd "$BUILD/bin" && pwd)
RESULTS=${MEMFED_BENCH_RESULTS:-$(dirname "$BUILD")/bench}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
# BENCH=swap (make bench BENCH=swap): that section alone, other tables kept.
if [ "${BENCH:-}" = swap ] || [ "${BENCH:-}" = replication ] || [ "${BENCH:-}" = mesh ] ||
	[ "${BENCH:-}" = qos ] || [ "${BENCH:-}" = car ] || [ "${BENCH:-}" = meshscale ] ||
	[ "${BENCH:-}" = stream ] || [ "${BENCH:-}" = fork ]; then
	bash "$(dirname "$0")/bench_$BENCH.sh" "$BUILD" "$RESULTS"
	exec python3 "$(dirname "$0")/bench_plot.py" "$RESULTS"
fi
rm -f "$RESULTS"/*.txt "$RESULTS"/*.png
echo "bench: tables and plots go to $RESULTS"
source "$(dirname "$0")/bench_lib.sh"
bench_scratch /tmp/memfed-bench.XXXXXX
say() { printf '\n== %s\n' "$*"; }

# A module daemon on vCPU 0, where the benchmark clients also run: a request
# and its answer then never wait for the other vCPU to wake (notes/limits.md).
start_module() {
	local name=$1; shift
	mkdir -p "$WORK/$name"
	taskset -c 0 "$BIN/memfedd" --state-dir "$WORK/$name" --socket "$WORK/$name/sock" \
		--listen 127.0.0.1:0 --kmod off --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 1 100); do
		"$BIN/memfedctl" --socket "$WORK/$name/sock" status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "memfedd did not start: $(cat "$WORK/$name.log")" >&2
	exit 1
}
ctl() { local name=$1; shift; "$BIN/memfedctl" --socket "$WORK/$name/sock" "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "wire: 4 KiB READ from a memfedd module (TLS 1.3) vs raw io_uring ping-pong (loopback)"
# memfedd speaks only TLS with keys it trusts: the benchmark has its own.
BENCH_KEY=$("$BIN/memfedctl" key generate "$WORK/bench.key")
start_module wire --roles module --pool-size 512M --trust "$BENCH_KEY"
WIRE_TLS=(--key-file "$WORK/bench.key" --trust "$(ctl wire key show)")
ctl wire region create bench 64M >/dev/null
head -c 64M /dev/urandom | ctl wire region write bench
REGION_ID=$(ctl wire -j region show bench | field '["id"]')
FA=$(ctl wire -j region show bench | field '["fa"]')
EP=$(ctl wire -j status | field '["listen"]')
"$BIN/memfed-bench-wire" --target "$EP" "${WIRE_TLS[@]}" --region-id "$REGION_ID" --fa-offset "0x${FA##*/0x}" \
	--span 16384 --seconds 2 --repeat 5 | tee "$RESULTS/wire.txt"

say "wire, two vCPUs: the module (and the raw server) on vCPU 1, the client on vCPU 0, as on two nodes"
taskset -a -p -c 1 "${PIDS[-1]}" >/dev/null
"$BIN/memfed-bench-wire" --target "$EP" "${WIRE_TLS[@]}" --region-id "$REGION_ID" --fa-offset "0x${FA##*/0x}" \
	--span 16384 --seconds 2 --repeat 5 --depth 64 --server-cpu 1 --client-cpu 0 |
	tee "$RESULTS/wire-2cpu.txt"

# --realtime (SCHED_FIFO, where permitted): on a machine shared with builds
# the pinned threads were otherwise preempted for milliseconds at a time,
# and the two-vCPU depth-64 ratio ranged from 0.04 to 0.8 between runs.
say "wire over TLS 1.3 vs plaintext, one vCPU (targets: depth-1 p50 <= 1.15x, depth-64 pages/s >= 0.7x)"
"$BIN/memfed-bench-wire" --self-serve --tls --realtime --span 256 --seconds 1 --repeat 3 |
	tee "$RESULTS/wire-tls.txt"

say "wire over TLS 1.3 vs plaintext, two vCPUs: the module on vCPU 1, the client on vCPU 0"
"$BIN/memfed-bench-wire" --self-serve --tls --realtime --span 256 --seconds 1 --repeat 3 \
	--server-cpu 1 --client-cpu 0 | tee "$RESULTS/wire-tls-2cpu.txt"

say "store: write_pages / read_pages vs pwrite+fdatasync / memcpy"
"$BIN/memfed-bench-store" --dir "$WORK" | tee "$RESULTS/store.txt"

if [ -x "$BIN/memfed-bench-pager" ]; then
	say "pager: demand faults and scans through memfedd vs raw userfaultfd + io_uring limits"
	# Five pairs per row, as the wire rows: this machine's speed drifts
	# within seconds, and three pairs let one slow spell move a median.
	"$BIN/memfed-bench-pager" --memfedd "$BIN/memfedd" --memfedctl "$BIN/memfedctl" --work "$WORK" \
		--repeat 5 | tee "$RESULTS/pager.txt"
	say "pager: the same rows with eviction (budgets 50 % and 10 %) by UFFDIO_MOVE into a staging area"
	"$BIN/memfed-bench-pager" --memfedd "$BIN/memfedd" --memfedctl "$BIN/memfedctl" --work "$WORK" \
		--repeat 5 --budget 50 --budget 10 --evict-by move | tee "$RESULTS/pager-move.txt"
	say "pager: the same, with first writes found by WP_ASYNC + PAGEMAP_SCAN instead of a write-protect fault each"
	"$BIN/memfed-bench-pager" --memfedd "$BIN/memfedd" --memfedctl "$BIN/memfedctl" --work "$WORK" \
		--repeat 5 --budget 50 --budget 10 --evict-by move-async | tee "$RESULTS/pager-move-async.txt"
fi

if [ -x "$BIN/memfed-bench-evict" ]; then
	say "evict: write-protect + copy + client drop vs the client's UFFDIO_MOVE into staging + copy, per page; PAGEMAP_SCAN's write scan of 1 GiB"
	"$BIN/memfed-bench-evict" --repeat 5 | tee "$RESULTS/evict.txt"
fi

say "swap: sort, stress-ng, redis at 1/3 and 1/6 of their footprint, memfed vs kernel swap on zram"
bash "$(dirname "$0")/bench_swap.sh" "$BUILD" "$RESULTS"

say "fork: three fork()s of a 200 MiB python heap, native vs memfed (copy-on-write clones)"
bash "$(dirname "$0")/bench_fork.sh" "$BUILD" "$RESULTS"

if [ -x "$BIN/memfed_rdma_test" ]; then
	say "rdma: READ latency over soft-RoCE (one-sided) vs TCP (TLS), and a mapped region's fault p50, scan rate and module CPU per page through a pager node over each, in the QEMU guest (TCG: functional figures, not performance)"
	"$(dirname "$0")/qemu/run.sh" --bin-dir "$BIN" --rdma-bench --timeout 400 | grep '^MEMFED-BENCH' |
		sed 's/^MEMFED-BENCH //' | tee "$RESULTS/rdma-guest.txt"
fi

say "stream: a 1 GiB scan at a 64 MiB budget vs LLNL umap, a 256 MiB lazy load vs CRIU lazy-pages"
bash "$(dirname "$0")/bench_stream.sh" "$BUILD" "$RESULTS"

say "replication: K = 1, 2, 3 copies, a lost copy noticed and caught up, vs region copy"
bash "$(dirname "$0")/bench_replication.sh" "$BUILD" "$RESULTS"

say "mesh: a demand fault at 1-4 hops vs raw TCP over the same hops; convergence after a link down"
bash "$(dirname "$0")/bench_mesh.sh" "$BUILD" "$RESULTS"

say "qos: demand-fault p99 over 3 shaped hops, idle and during a write-back storm, DSCP priority qdisc on and off"
bash "$(dirname "$0")/bench_qos.sh" "$BUILD" "$RESULTS"

say "car: reads of obstacle records from lamp posts by a car driving past at 6-120 km/h"
bash "$(dirname "$0")/bench_car.sh" "$BUILD" "$RESULTS"

say "mesh at 64 nodes: babeld's route table and CPU in an 8 x 8 grid"
bash "$(dirname "$0")/bench_meshscale.sh" "$BUILD" "$RESULTS"

say "plots of the tables above"
python3 "$(dirname "$0")/bench_plot.py" "$RESULTS"
echo "bench: tables (*.txt) and plots (*.png) are in $RESULTS"
