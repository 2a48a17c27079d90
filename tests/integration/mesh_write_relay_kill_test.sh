#!/usr/bin/env bash
# The ring of mesh_ring_test.sh, with a writer instead of a reader: an
# unmodified program on n3 writes every page of a region file over and over,
# each pass stamping the pass number into every page, under a budget so
# small that its pages go back to the module (write-back, on the bulk
# connection) while it writes. The relay those writes cross dies in the
# middle. Writes in flight on the dead path are sent again on the new one;
# none may be applied twice, nor late: a stale write landing after a newer
# one of its page would leave that page an older pass. So after the last
# pass every page must hold exactly that pass, read back by a fresh program,
# and the module must have seen the writes sequenced (wire version 5:
# memfedctl stats, module.sessions).
#
#        n2 (relay)
#       /          \
#     n1 (module)   n3 (pager, the writer)
#       \          /
#        n4 (relay)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3 n4
mesh_ring_of_four --pager-budget 1M
ctl n3 region create wring 4M >/dev/null

cat >"$T/writer.py" <<'PY'
import mmap, os, struct, sys, time
path, passes, stop = sys.argv[1:4]
size = 4 << 20
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), size)
    k = 0
    while not os.path.exists(stop):
        k += 1
        for p in range(size // 4096):
            m[p * 4096:(p + 1) * 4096] = struct.pack("<QQ", k, p) * 256
        # Dirty pages whose write-back failed are kept and written again:
        # msync says so, and the program asks again.
        for attempt in range(600):
            try:
                m.flush()
                break
            except OSError as e:
                time.sleep(0.1)
        else:
            sys.exit("pass %d never became durable" % k)
        with open(passes, "a") as o:
            o.write("%d\n" % k)
PY
"$MEMFEDCTL" --socket "$T/n3/sock" run --map wring="$T/wring.file" -- \
	python3 "$T/writer.py" "$T/wring.file" "$T/passes" "$T/stop" >"$T/writer.out" 2>&1 &
WRITER=$!
npasses() { if [ -e "$T/passes" ]; then wc -l <"$T/passes"; else echo 0; fi; }
more_passes() { [ "$(npasses)" -ge "$1" ]; }
wait_for "the writer's first pass" 60 more_passes 1
ok "a program on n3 writes the region on n1 across the ring"

peer=$(ring_relay)
before=n3-$peer
# The relay dies while the writer is in the middle of a pass.
mesh_kill_node $peer
wait_for "the route to $M1 moves off $before" 15 kernel_if_moved n3 $A1 "$before"
n=$(npasses)
wait_for "two more passes over the new path" 120 more_passes $((n + 2))
touch "$T/stop"
wait $WRITER || fail "the writer failed: $(cat "$T/writer.out")"
last=$(tail -n 1 "$T/passes")
ok "the relay ($peer) died under the writer; it finished $last passes"

# Every page holds the last pass, read by a fresh program through a 1 MiB
# budget (so from the module).
"$MEMFEDCTL" --socket "$T/n3/sock" run --map wring="$T/wring.file" -- python3 -c '
import struct, sys
last = int(sys.argv[2])
bad = []
with open(sys.argv[1], "rb") as f:
    for p in range(1024):
        page = f.read(4096)
        if page != struct.pack("<QQ", last, p) * 256:
            bad.append((p, struct.unpack_from("<Q", page)[0]))
if bad:
    sys.exit("%d pages do not hold pass %d, e.g. (page, pass) %s" % (len(bad), last, bad[:5]))
' "$T/wring.file" "$last" || fail "the region does not hold exactly the last pass"
ok "every page holds pass $last: no write was applied twice or late"

stats=$(ctl n1 -j stats)
read -r seqd answered superseded refused <<<"$(python3 -c '
import json, sys
s = json.load(sys.stdin)["module"]["sessions"]
print(s["sequenced"], s["retries_answered"], s["refused_superseded"],
      s["refused_in_progress"] + s["refused_unknown"])' <<<"$stats")"
# Each write request carries up to 256 pages: fewer requests than pages.
[ "$seqd" -gt 0 ] || fail "the module saw no sequenced write: $stats"
echo "# module: $seqd sequenced writes, $answered retries answered from the session cache," \
	"$superseded late ones refused, $refused other refusals"
ok "the writes reached the module sequenced ($seqd)"

echo "$PASSED passed, 0 failed"
