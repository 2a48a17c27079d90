#!/usr/bin/env bash
# make bench, section "stream": bulk pages, memfed against two peers built on
# this machine (issue 17, item 7). Each part has two memfed rows:
#   loopback  a module memfedd and a pager memfedd federated over loopback TCP
#             with TLS 1.3: what two nodes pay (the peers do not encrypt);
#   local     one memfedd with roles module,pager, its pager reaching the pool
#             through the local module channel (no socket, no TLS): the
#             like-for-like row against umap's local tmpfs file, and against
#             CRIU, whose page server speaks plaintext on loopback.
#
#   scan   a 1 GiB region holding memfed-bench-pager's pattern, read one word
#          per 4 KiB page from start to end (each word checked), at a 64 MiB
#          budget with prefetch: memfed-bench-pager --scan-only --local-row
#          --evict-by move-async (the eviction libmemfed uses on a kernel with
#          UFFDIO_MOVE and WP_ASYNC, as a program under `memfedctl run` gets;
#          the pager section of make bench has the other paths' rows)
#          (no process pinned, as the peers are not: on a loaded machine a
#          pinned pipeline waits for its vCPU while the other is free; it
#          also prints the CPU all of memfed spent per GB, which moves
#          less with the machine's load than GB/s do, though it moves: 1.95
#          and 3.13 CPU-s per GB over loopback in two runs at load 13 and
#          16; for the loopback row, split by process, with the share of
#          the scan's wall time the pager's fault thread spent on a CPU:
#          near 100 % that thread sets the pace) against LLNL umap with 64 KiB pages and a 64 MiB buffer
#          (UMAP_PAGESIZE=65536 UMAP_BUFSIZE=1024) on a tmpfs file of the same
#          content (tools/bench/stream/umap_scan.cc). Loopback, local and umap
#          run in turn, run after run; GB/s medians and the medians of the
#          runs' ratios.
#   lazy   a 256 MiB lazy load plus checksum (tools/bench/stream/lazy_load.c,
#          the same program and checksum for both):
#            memfed: a memfedd holding region "lazy" (the module node, or the
#              module,pager node for the local row) and, for the loopback row,
#              a pager memfedd federated with it over loopback TCP (TLS 1.3)
#              runs `memfedctl run --map lazy=PATH -- lazy_load map PATH OUT`,
#              which mmaps the region and sums every 64-bit word. Timed: from
#              the start of `memfedctl run` to the checksum done (the
#              program writes CLOCK_REALTIME when done).
#            CRIU: lazy_load holds 256 MiB filled with the pattern (in a PID
#              namespace of its own); `criu dump --lazy-pages` freezes it and
#              serves its pages on loopback; `criu lazy-pages --page-server`
#              connects to that; then `criu restore --lazy-pages -d`, SIGUSR1
#              to the restored program, which sums every word. Timed: from
#              the start of `criu restore` to the checksum done, same clock.
#              Then the same again with `criu --tls` on the page server and
#              the lazy-pages daemon (GnuTLS; a CA and a certificate for
#              127.0.0.1 made with openssl): CRIU's pages encrypted as
#              memfed's always are. The target is the plaintext row; the
#              TLS row tells how much of the gap is the encryption.
#          Both checksums must equal the pattern's. Loopback, local and CRIU
#          run in turn, MEMFED_BENCH_STREAM_LAZY_REPEAT times (CRIU's time
#          varies several-fold from run to run here): medians, each row's
#          range and quartiles, the median of the runs' ratios and in how
#          many runs memfed was the faster.
#
# The peers are found through MEMFED_UMAP_DIR (an install prefix with
# include/umap/umap.h and lib/libumap.so; default /work/peers/umap/install)
# and MEMFED_CRIU (the criu binary; default /work/peers/criu/criu/criu).
# A missing peer is skipped, loudly, and memfed's side is still measured.
#
# Usage: scripts/bench_stream.sh BUILD_DIR RESULTS_DIR
# Environment: MEMFED_BENCH_STREAM_REPEAT (scan runs, default 5),
# MEMFED_BENCH_STREAM_LAZY_REPEAT (lazy-load runs, default 11),
# MEMFED_BENCH_STREAM_PARTS (default "scan lazy").
set -euo pipefail
BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
SRC=$(cd "$(dirname "$0")/../tools/bench/stream" && pwd)
REPEAT=${MEMFED_BENCH_STREAM_REPEAT:-5}
LAZY_REPEAT=${MEMFED_BENCH_STREAM_LAZY_REPEAT:-11}
PARTS=${MEMFED_BENCH_STREAM_PARTS:-scan lazy}
UMAP_DIR=${MEMFED_UMAP_DIR:-/work/peers/umap/install}
CRIU=${MEMFED_CRIU:-/work/peers/criu/criu/criu}
SCAN_MB=1024
BUDGET_MB=64
LAZY_MB=256
source "$(dirname "$0")/bench_lib.sh"
bench_scratch /dev/shm/memfed-bench-stream.XXXXXX
loud() { printf '\n!! %s\n\n' "$*" >&2; }
now() { date +%s.%N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

cc -O2 -Wall -o "$WORK/lazy_load" "$SRC/lazy_load.c"

# --- scan ------------------------------------------------------------------

scan() {
	local peer=()
	if [ -f "$UMAP_DIR/include/umap/umap.h" ] && [ -e "$UMAP_DIR/lib/libumap.so" ]; then
		g++ -O2 -std=c++17 -o "$WORK/umap_scan" "$SRC/umap_scan.cc" -I"$UMAP_DIR/include" \
			-L"$UMAP_DIR/lib" -Wl,-rpath,"$UMAP_DIR/lib" -lumap -lpthread
		"$WORK/lazy_load" fill $SCAN_MB "$WORK/umap.bin"
		peer=(--peer-name umap-64K --peer-scan "env UMAP_PAGESIZE=65536 UMAP_BUFSIZE=$((BUDGET_MB * 16)) $WORK/umap_scan $WORK/umap.bin")
	else
		loud "stream: SKIPPED umap: not built (git clone LLNL/umap at ebc5a66; cmake -DCMAKE_BUILD_TYPE=Release -DENABLE_LOGGING=Off -DENABLE_TESTS=Off -DCMAKE_INSTALL_PREFIX=$UMAP_DIR; make install; or set MEMFED_UMAP_DIR)"
	fi
	local l0 out
	l0=$(load)
	out=$("$BIN/memfed-bench-pager" --memfedd "$BIN/memfedd" --memfedctl "$BIN/memfedctl" --work "$WORK" \
		--region-mb $SCAN_MB --budget-mb $BUDGET_MB --scan-only --local-row --repeat "$REPEAT" --cpu any \
		--evict-by move-async \
		"${peer[@]}")
	rm -f "$WORK/umap.bin"
	{
		echo "scan: $SCAN_MB MiB region, one read per 4 KiB page, $BUDGET_MB MiB budget, prefetch on, nothing pinned; memfed over loopback TCP (TLS 1.3; the row with the budget) and with its module local (module,pager in one memfedd; the row \"local module\") vs umap (64 KiB pages, $BUDGET_MB MiB buffer) on a tmpfs file"
		echo "$out"
		echo "load average before: $l0; after: $(load)"
	} | tee "$RESULTS/stream-scan.txt"
}

# --- lazy load -------------------------------------------------------------

# The memfedd of the lazy load: a module holding region "lazy", and a pager
# federated with it, each trusting the other's key (the loopback row); and
# one module,pager memfedd holding its own region "lazy" (the local row).
start_memfed() {
	local m=$WORK/module p=$WORK/pager l=$WORK/local
	mkdir -p "$m" "$p" "$l"
	local mk pk
	mk=$("$BIN/memfedctl" key generate "$m/node.key")
	pk=$("$BIN/memfedctl" key generate "$p/node.key")
	"$BIN/memfedd" --roles module --state-dir "$m" --socket "$m/sock" --listen 127.0.0.1:0 \
		--kmod off --log-level warn --pool-size $((LAZY_MB * 2))M --key-file "$m/node.key" \
		--trust "$pk" >"$WORK/module.log" 2>&1 &
	PIDS+=($!)
	wait_sock "$m/sock" "$WORK/module.log"
	local ep
	ep=$("$BIN/memfedctl" --socket "$m/sock" -j status | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])')
	"$BIN/memfedctl" --socket "$m/sock" region create lazy ${LAZY_MB}M >/dev/null
	"$BIN/memfedctl" --socket "$m/sock" region grant lazy "$pk" write >/dev/null
	"$WORK/lazy_load" fill $LAZY_MB "$WORK/lazy.bin"
	"$BIN/memfedctl" --socket "$m/sock" region write lazy <"$WORK/lazy.bin"
	"$BIN/memfedd" --roles module,pager --state-dir "$l" --socket "$l/sock" --kmod off \
		--log-level warn --pool-size $((LAZY_MB * 2))M >"$WORK/local.log" 2>&1 &
	PIDS+=($!)
	wait_sock "$l/sock" "$WORK/local.log"
	"$BIN/memfedctl" --socket "$l/sock" region create lazy ${LAZY_MB}M >/dev/null
	"$BIN/memfedctl" --socket "$l/sock" region write lazy <"$WORK/lazy.bin"
	rm -f "$WORK/lazy.bin"
	"$BIN/memfedd" --roles pager --state-dir "$p" --socket "$p/sock" --kmod off --log-level warn \
		--peer "$ep" --key-file "$p/node.key" --trust "$mk" >"$WORK/pager.log" 2>&1 &
	PIDS+=($!)
	wait_sock "$p/sock" "$WORK/pager.log"
}
wait_sock() {
	for _ in $(seq 1 200); do
		"$BIN/memfedctl" --socket "$1" status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "memfedd did not start: $(cat "$2")" >&2
	exit 1
}

# The checksum of the pattern, which every run must print.
EXPECT=""
# lazy_memfed NODE: prints seconds from `memfedctl run` (through the
# memfedd in $WORK/NODE) to the checksum done.
lazy_memfed() {
	local out=$WORK/memfed.out t0
	rm -f "$out"
	t0=$(now)
	"$BIN/memfedctl" --socket "$WORK/$1/sock" run --prefix "" --map lazy=/memfed-lazy/lazy.bin -- \
		"$WORK/lazy_load" map /memfed-lazy/lazy.bin "$out" >/dev/null
	check_sum "$out" memfed "$t0"
}
check_sum() {
	local sum t1
	read -r sum t1 <"$1"
	[ "$sum" = "$EXPECT" ] || { echo "stream: $2 lazy load checksum $sum, expected $EXPECT" >&2; exit 1; }
	python3 -c "print('%.3f' % ($t1 - $3))"
}

# criu_tls_files: a CA and a certificate for 127.0.0.1 signed by it, for
# CRIU's page server and lazy-pages daemon over TLS (GnuTLS, X.509).
criu_tls_files() {
	local t=$WORK/criu-tls
	[ -f "$t/cert.pem" ] && return
	mkdir -p "$t"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=memfed-bench-ca -keyout "$t/ca-key.pem" -out "$t/ca.pem" 2>/dev/null
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj /CN=127.0.0.1 -keyout "$t/key.pem" -out "$t/req.pem" 2>/dev/null
	openssl x509 -req -in "$t/req.pem" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" -CAcreateserial \
		-days 2 -extfile <(printf 'subjectAltName=IP:127.0.0.1\n') -out "$t/cert.pem" 2>/dev/null
}

# lazy_criu [tls]: dump, lazy-pages daemon, restore; prints seconds from
# `criu restore` to the checksum done. With "tls", the page server and the
# lazy-pages daemon speak TLS (criu --tls: GnuTLS, certificates checked
# against a CA), as memfed's nodes always do.
lazy_criu() {
	local d=$WORK/criu out=$WORK/criu/hold.out tls=()
	if [ "${1:-}" = tls ]; then
		criu_tls_files
		tls=(--tls --tls-cacert "$WORK/criu-tls/ca.pem" --tls-cert "$WORK/criu-tls/cert.pem"
			--tls-key "$WORK/criu-tls/key.pem")
	fi
	rm -rf "$d" && mkdir -p "$d/img"
	# Its own PID namespace: the frozen original keeps its PID until the
	# last page is served, and the restored copy needs the same one.
	unshare --pid --fork setsid "$WORK/lazy_load" hold $LAZY_MB "$out" </dev/null >/dev/null 2>&1 &
	local ns=$!
	for _ in $(seq 1 400); do grep -q ready "$out" 2>/dev/null && break; sleep 0.05; done
	local pid
	pid=$(pgrep -P "$ns")
	[ -n "$pid" ] || { echo "stream: the CRIU lazy-load program did not start" >&2; exit 1; }
	mkfifo "$d/dump.st" "$d/lazy.st"
	"$CRIU" dump -t "$pid" -D "$d/img" -o dump.log -v2 --lazy-pages --address 127.0.0.1 --port 27270 \
		"${tls[@]}" --status-fd 3 3>"$d/dump.st" &
	local dump=$!
	[ "$(head -c 1 "$d/dump.st" | od -An -tx1 | tr -d ' ')" = 00 ] ||
		{ echo "stream: criu dump failed: $(tail -5 "$d/img/dump.log")" >&2; exit 1; }
	"$CRIU" lazy-pages -D "$d/img" -o lazy-pages.log -v2 --page-server --address 127.0.0.1 --port 27270 \
		"${tls[@]}" --status-fd 3 3>"$d/lazy.st" &
	local lazy=$!
	[ "$(head -c 1 "$d/lazy.st" | od -An -tx1 | tr -d ' ')" = 00 ] ||
		{ echo "stream: criu lazy-pages failed: $(tail -5 "$d/img/lazy-pages.log")" >&2; exit 1; }
	rm -f "$out"
	local t0
	t0=$(now)
	"$CRIU" restore -D "$d/img" -o restore.log -v2 --lazy-pages -d --pidfile "$d/restored.pid" ||
		{ echo "stream: criu restore failed: $(tail -5 "$d/img/restore.log")" >&2; exit 1; }
	kill -USR1 "$(cat "$d/restored.pid")"
	for _ in $(seq 1 6000); do [ -s "$out" ] && break; sleep 0.002; done
	check_sum "$out" CRIU "$t0"
	wait "$lazy" "$dump" "$ns" 2>/dev/null || true
}

lazy() {
	start_memfed
	EXPECT=$(python3 -c "
M = 1 << 64
pages = $LAZY_MB * 256
s = 0
for p in range(pages):
    w = (p * 0x9E3779B97F4A7C15 + 1) % M
    s += 512 * w + 511 * 512 // 2
print('%016x' % (s % M))")
	local have_criu=1
	if [ ! -x "$CRIU" ]; then
		have_criu=0
		loud "stream: SKIPPED criu: not built (git clone checkpoint-restore/criu; git checkout v4.2; apt-get install libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler python3-protobuf libnl-3-dev libnl-route-3-dev libnet1-dev libcap-dev libbsd-dev libaio-dev uuid-dev; make criu; or set MEMFED_CRIU)"
	elif [ "$(id -u)" -ne 0 ]; then
		have_criu=0
		loud "stream: SKIPPED criu: it needs root"
	else
		# A lazy dump splices pages through pipes of up to 4 MiB.
		local pmax
		pmax=$(cat /proc/sys/fs/pipe-max-size)
		[ "$pmax" -ge 4194304 ] || echo 4194304 >/proc/sys/fs/pipe-max-size
	fi
	local l0 mf=() ml=() cr=() ctls=() t u c ct
	l0=$(load)
	for r in $(seq 1 "$LAZY_REPEAT"); do
		t=$(lazy_memfed pager)
		mf+=("$t")
		u=$(lazy_memfed local)
		ml+=("$u")
		if [ $have_criu = 1 ]; then
			c=$(lazy_criu)
			cr+=("$c")
			ct=$(lazy_criu tls)
			ctls+=("$ct")
			echo "  run $r: memfed loopback $t s, local $u s, criu $c s, criu over TLS $ct s" >&2
		else
			echo "  run $r: memfed loopback $t s, local $u s" >&2
		fi
	done
	python3 - "$LAZY_MB" "$(load)" "$l0" "${mf[*]}" "${ml[*]}" "${cr[*]:-}" "${ctls[*]:-}" <<'PY' | tee "$RESULTS/stream-lazy.txt"
import statistics as st, sys
mb, la, l0, mf, ml, cr, ctls = sys.argv[1:]
num = lambda s: [float(x) for x in s.split()]
mf, ml, cr, ctls = num(mf), num(ml), num(cr), num(ctls)
def quart(v):
    q = st.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
    return "%.3f [%.3f-%.3f] range %.3f-%.3f" % (q[1], q[0], q[2], min(v), max(v))
print("lazy load: %s MiB, mmap + checksum of every word; from start (memfedctl run / criu restore) to checksum done; %d runs of each, in turn" % (mb, len(mf)))
print("%-38s %s" % ("", "seconds: median [quartiles] range"))
print("%-38s %s" % ("memfed, loopback TCP + TLS 1.3", quart(mf)))
print("%-38s %s" % ("memfed, local module", quart(ml)))
print("%-38s %s" % ("criu lazy-pages, loopback page server", quart(cr) if cr else "skipped"))
print("%-38s %s" % ("criu lazy-pages, the same over TLS", quart(ctls) if ctls else "skipped"))
print("memfed MB/s: loopback %.0f, local %.0f%s" % (int(mb) * 1.048576 / st.median(mf), int(mb) * 1.048576 / st.median(ml),
      ", criu %.0f" % (int(mb) * 1.048576 / st.median(cr)) if cr else ""))
if cr:
    for name, v in (("loopback", mf), ("local", ml)):
        ra = [a / c for a, c in zip(v, cr)]
        faster = sum(r < 1 for r in ra)
        med = st.median(ra)
        print("memfed %s / criu: median of the runs' ratios %.2f (range %.2f-%.2f); ratio of medians %.2f; memfed faster in %d of %d runs -> %s"
              % (name, med, min(ra), max(ra), st.median(v) / st.median(cr), faster, len(ra),
                 "target met" if med <= 1.0 and faster > len(ra) // 2 else "target NOT met"))
if ctls:
    # Both encrypted: what the same transfer costs when CRIU secures it as
    # memfed always does (not the target, which is plaintext CRIU).
    ra = [a / c for a, c in zip(mf, ctls)]
    print("memfed loopback / criu over TLS: median of the runs' ratios %.2f (range %.2f-%.2f); memfed faster in %d of %d runs"
          % (st.median(ra), min(ra), max(ra), sum(r < 1 for r in ra), len(ra)))
print("runs, seconds, in the order run (scripts/bench_plot.py draws them):")
print("  memfed loopback: " + " ".join("%.3f" % x for x in mf))
print("  memfed local:    " + " ".join("%.3f" % x for x in ml))
print("  criu:            " + (" ".join("%.3f" % x for x in cr) if cr else "skipped"))
print("  criu over TLS:   " + (" ".join("%.3f" % x for x in ctls) if ctls else "skipped"))
print("load average before: %s; after: %s. Target: memfed/criu <= 1.0" % (l0, la))
PY
}

for part in $PARTS; do
	case $part in
	scan) scan ;;
	lazy) lazy ;;
	*) echo "stream: unknown part $part (scan, lazy)" >&2; exit 1 ;;
	esac
done
