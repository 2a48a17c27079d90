#!/usr/bin/env bash
# Many regions: 20,000 regions on one module, created, listed (locally and by
# a pager node through the wire protocol), used by `memfedctl run` beside
# them, and deleted. Before the region table was sized to the pool it held
# 1,024 regions, and a region.list reply past ~930 regions outgrew the control
# packet: `region ls` and `memfedctl run --heap-budget` broke for everyone.
. "$(dirname "$0")/lib.sh"

N=20000
# A 1 GiB pool gets a table of 32,768 regions (one per 32 KiB of pool).
trust_all module client
start_daemon module --roles module,pager --listen 127.0.0.1:0 --pool-size 1G \
	--module-id 02:00:00:00:00:01
start_daemon client --roles pager --listen 127.0.0.1:0 --peer "$(listen_of module)"
ok "a module with a 1 GiB pool, and a pager node peered with it"

# regions.py create|delete N: N regions r00000.. through one control
# connection (a process per region would measure process start-up).
cat >"$T/regions.py" <<'EOF'
import json, socket, sys
op, n, sock = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sock)
for i in range(n):
    req = {"op": "region." + op, "name": "r%05d" % i}
    if op == "create":
        req.update(size=4096, mode=0o600)
    s.send(json.dumps(req).encode())
    reply = json.loads(s.recv(200000))
    if not reply.get("ok"):
        sys.exit("region.%s r%05d: %s" % (op, i, reply.get("error")))
EOF

start=$(date +%s%N)
python3 "$T/regions.py" create $N "$T/module/sock"
echo "# created $N regions in $((($(date +%s%N) - start) / 1000000)) ms"
[ "$(ctl module -j status | python3 -c 'import json,sys; print(json.load(sys.stdin)["pool"]["regions"])')" = $N ] ||
	fail "status does not count $N regions"
ok "$N regions created through one control connection"

seq -f 'r%05g' 0 $((N - 1)) >"$T/want.txt"
start=$(date +%s%N)
ctl module region ls | awk '{print $1}' >"$T/ls.txt"
echo "# listed $N regions in $((($(date +%s%N) - start) / 1000000)) ms"
cmp "$T/want.txt" "$T/ls.txt" || fail "region ls: $(wc -l <"$T/ls.txt") lines, not the $N names in order"
ctl module -j region ls | python3 -c '
import json, sys
names = [r["name"] for r in json.load(sys.stdin)]
want = ["r%05d" % i for i in range(int(sys.argv[1]))]
sys.exit(0 if names == want else "region ls -j: %d names, not the %d expected" % (len(names), len(want)))' $N
ok "region ls lists all $N, in name order (text and -j)"

# The pager node lists them from the remote module, page by page on the wire.
ctl client region ls | awk '{print $1}' | cmp "$T/want.txt" - ||
	fail "the pager node does not list the $N regions of the remote module"
ok "a pager node lists the $N regions of its remote module"

# A region.list page is bounded whatever the count; "prefix" narrows it.
python3 - "$T/module/sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
def call(**req):
    s.send(json.dumps(req).encode())
    return json.loads(s.recv(200000))
r = call(op="region.list")
assert r["ok"] and r["more"] and 0 < len(r["regions"]) <= 256, r.keys()
assert r["regions"][0]["name"] == "r00000" and r["next"] == r["regions"][-1]["name"]
r = call(op="region.list", prefix="r1999")
names = [x["name"] for x in r["regions"]]
assert names == ["r1999%d" % i for i in range(10)] and not r["more"], names
r = call(op="region.list", after="r19995")
assert [x["name"] for x in r["regions"]] == ["r1999%d" % i for i in range(6, 10)] and not r["more"]
EOF
ok "region.list answers pages of at most 256, after a name, with a prefix"

# memfedctl run creates, lists (its own heaps, by prefix) and deletes heap
# regions among the 20,000.
[ "$(ctl module run --heap-budget 8M --heap-size 64M -- sh -c 'echo hello from the heap')" = \
	"hello from the heap" ] || fail "memfedctl run beside $N regions"
[ "$(ctl module region ls | wc -l)" -eq $N ] || fail "memfedctl run left its heap region behind"
ok "memfedctl run --heap-budget works beside $N regions and deletes its heap"

# pager.stats grows with every region mapped (a region's counters outlive its
# mappings): a program maps M of them one after another, and "stats" must
# still answer, in pages that each fit a control packet, and memfedctl stats
# must show every region.
M=2000
cat >"$T/mapper.py" <<'EOF'
import mmap, os, sys
for i in range(int(sys.argv[1])):
    fd = os.open("/memfed/r%05d" % i, os.O_RDONLY)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
    if m[0] != 0:
        sys.exit("r%05d does not read as zeros" % i)
    m.close()
    os.close(fd)
print("mapped", sys.argv[1])
EOF
[ "$(ctl module run -- python3 "$T/mapper.py" $M)" = "mapped $M" ] || fail "mapping $M regions in turn"
cat >"$T/stats_pages.py" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
after, pages, names, biggest = None, 0, [], 0
while True:
    req = {"op": "stats"}
    if after is not None:
        req["after"] = after
    s.send(json.dumps(req).encode())
    raw = s.recv(1 << 20)
    biggest = max(biggest, len(raw))
    reply = json.loads(raw)
    if not reply.get("ok"):
        sys.exit("stats: %s" % reply.get("error"))
    pager = reply["pager"]
    names += [r["region"] for r in pager["regions"]]
    pages += 1
    if not pager["more"]:
        break
    after = pager["next"]
if len(names) != len(set(names)) or names != sorted(names):
    sys.exit("the pages repeat or reorder regions")
print(pages, len(names), biggest)
EOF
read -r pages got biggest < <(python3 "$T/stats_pages.py" "$T/module/sock")
[ "$pages" -gt 1 ] && [ "$got" -ge $M ] ||
	fail "stats came in $pages pages with $got regions; expected several pages, $M regions or more"
[ "$biggest" -le 163840 ] || fail "a stats page of $biggest bytes outgrows the 160 KiB control packet"
[ "$(ctl module stats | grep -c '^pager\.regions\.r[0-9]*\.faults ')" -ge $M ] ||
	fail "memfedctl stats does not show the $M regions' counters"
[ "$(ctl module -j stats | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pager"]["regions"]))')" -ge $M ] ||
	fail "memfedctl -j stats does not hold the $M regions"
ok "stats of $M mapped regions: $pages pages of at most $biggest bytes; memfedctl stats (text and -j) shows them all"

start=$(date +%s%N)
python3 "$T/regions.py" delete $N "$T/module/sock"
echo "# deleted $N regions in $((($(date +%s%N) - start) / 1000000)) ms"
[ -z "$(ctl module region ls)" ] || fail "regions left after deleting all $N"
ok "$N regions deleted; none left"

stop_daemon client
stop_daemon module
"$MEMFEDCTL" pool check "$T/module/pool.mfp" >/dev/null || fail "pool check after $N creates and deletes"
ok "the pool checks clean"

if grep -E "warn|error" "$T"/*.log | grep -v "lost the connection" >"$T/warnings.txt"; then
	fail "warnings in the daemons' logs: $(head -5 "$T/warnings.txt")"
fi
ok "no warnings in the daemons' logs"
