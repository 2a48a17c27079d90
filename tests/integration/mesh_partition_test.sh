#!/usr/bin/env bash
# Partition and heal. A line of three: the module on n1, a relay on n2, the
# car's pager on n3 with a budget far below the region, so every pass of
# the reader fetches its pages again.
#
#     n1 (module) --x-- n2 (relay) --- n3 (pager, 1 MiB budget)
#
# An unmodified program (python3 under `memfedctl run`) reads the region
# file over and over, one process throughout. The link n1-n2 goes: the mesh
# is cut in two and the module is unreachable from the car. While it is,
# the module's daemon leaves and returns (stopped, started again on its
# pool). The program's faults wait: no pass completes across the cut with
# a zero page or stale bytes. When the link returns, they resume, and every
# pass reads exactly the bytes written before the partition.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3
mesh_line_of_three --pager-budget 1M

# Two versions of the region, the second written last: a stale copy of the
# first, or a zero page, would show in the hash.
head -c 8M /dev/urandom >"$T/old"
head -c 8M /dev/urandom >"$T/data"
want=$(sha256sum <"$T/data" | cut -d' ' -f1)
ctl n3 region create road 8M >/dev/null
# The region belongs to the car's node; the module's own node reads it below.
ctl n3 region grant road "$(key_of n1)" read >/dev/null
ctl n3 region write road <"$T/old"
ctl n3 region write road <"$T/data"
ok "an 8 MiB region on n1 written twice from n3, two hops away"

# The reader: one process for the whole test; each pass is a line
# "START END SHA256" (seconds since the epoch) in $T/passes.
cat >"$T/reader.py" <<'PY'
import hashlib, os, sys, time
path, out, stop = sys.argv[1:4]
with open(path, "rb") as f:
    while not os.path.exists(stop):
        start = time.time()
        f.seek(0)
        h = hashlib.sha256()
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
        with open(out, "a") as o:
            o.write("%.6f %.6f %s\n" % (start, time.time(), h.hexdigest()))
PY
"$MEMFEDCTL" --socket "$T/n3/sock" run --map road="$T/road.file" -- \
	python3 "$T/reader.py" "$T/road.file" "$T/passes" "$T/stop" >"$T/reader.out" 2>&1 &
READER=$!
npasses() { if [ -e "$T/passes" ]; then wc -l <"$T/passes"; else echo 0; fi; }
more_passes() { [ "$(npasses)" -ge "$1" ]; }
wait_for "the reader's first pass" 30 more_passes 1

# The partition: the module's side of the mesh goes.
in_ns n1 ip link set n1-n2 down
in_ns n2 ip link set n2-n1 down
wait_for "n3 marks $M1 unreachable" 15 module_is n3 $M1 down
ok "the partition: n3 has no route to $M1"

# The module leaves and returns while cut off: its daemon stops and starts
# again on the same pool.
stop_daemon n1
mesh_daemon n1 --roles module --module-id $M1 --pool-size 64M
got=$(ctl n1 region read road --length 4096 | sha256sum | cut -d' ' -f1)
[ "$got" = "$(head -c 4096 "$T/data" | sha256sum | cut -d' ' -f1)" ] ||
	fail "n1's region after its restart does not hold the bytes written last"
kill -0 $READER 2>/dev/null || fail "the reader exited during the partition: $(cat "$T/reader.out")"
ok "the module left and returned with its data; the reader still runs"

# Heal.
healed=$(date +%s.%N)
in_ns n1 ip link set n1-n2 up
in_ns n2 ip link set n2-n1 up
wait_for "n3 finds $M1 again" 30 module_is n3 $M1 up
n=$(npasses)
wait_for "two more passes after the heal" 60 more_passes $((n + 2))
touch "$T/stop"
wait $READER || fail "the reader failed: $(cat "$T/reader.out")"

# Every pass read the last bytes written; one pass was under way when the
# partition healed (its faults waited through it), and passes went on after.
python3 - "$T/passes" "$want" "$healed" <<'PY' || fail "passes: $(cat "$T/passes")"
import sys
passes = [l.split() for l in open(sys.argv[1])]
want, healed = sys.argv[2], float(sys.argv[3])
bad = [p for p in passes if p[2] != want]
assert not bad, "%d of %d passes read other bytes" % (len(bad), len(passes))
assert any(float(s) < healed < float(e) for s, e, _ in passes), "no pass spanned the heal"
assert sum(float(s) > healed for s, _, _ in passes) >= 1, "no pass began after the heal"
s, e, _ = [p for p in passes if float(p[0]) < healed < float(p[1])][0]
print("# the pass under way at the heal took %.1f s (began %.1f s before it)" %
      (float(e) - float(s), healed - float(s)))
PY
ok "faults waited through the partition and resumed on the heal; all $(npasses) passes read the bytes written last"

echo "$PASSED passed, 0 failed"
