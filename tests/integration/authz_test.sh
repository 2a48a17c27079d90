#!/usr/bin/env bash
# Authorization by (node key, uid), issue 13 item 3, with three nodes that
# all trust each other: module node C holds the pool; node A creates a region
# there and so owns it; node B is trusted but holds no grant. B is refused
# reads and writes with a message naming the region, its key, its uid and
# the `memfedctl region grant` that would allow it (and C logs the refusal);
# a read grant lets B read but not write; a write grant lets it write; a
# revoke takes effect at B's next request; a grant to another uid of B does
# not cover B's own; C enforces quota.node_regions on A's creates by A's key;
# C counts its refusals by reason (memfedctl stats, its /metrics endpoint);
# root on C deletes A's region there only with --force, and it is logged.
. "$(dirname "$0")/lib.sh"

ME=$(id -u)
OTHER=$((ME + 1))
trust_all c a b
cat >"$T/c.json" <<JSON
{"quota": {"node_regions": 3}}
JSON
start_daemon c --config "$T/c.json" --roles module --listen 127.0.0.1:0 --pool-size 64M \
	--module-id 02:00:00:00:00:31 --metrics 127.0.0.1:0
C_EP=$(listen_of c)
start_daemon a --roles pager --listen 127.0.0.1:0 --peer "$C_EP"
start_daemon b --roles pager --listen 127.0.0.1:0 --peer "$C_EP"
KEY_A=$(key_of a)
KEY_B=$(key_of b)

head -c 256K /dev/urandom >"$T/a.bin"
ctl a region create shared 256K >/dev/null
ctl a region write shared <"$T/a.bin"
ctl a -j region show shared >"$T/show.json"
python3 - "$T/show.json" "$KEY_A" "$ME" <<'PY' || fail "region show does not name A as owner: $(cat "$T/show.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["owner"]["key"] == sys.argv[2] and r["owner"]["uid"] == int(sys.argv[3]), r
assert r["grants"] == [], r
PY
ok "node A creates region 'shared' on C's module and owns it (node key, uid)"

# B: trusted, but without a grant.
expect_exit 6 ctl b region read shared
for part in "may not read region 'shared'" "$KEY_B" "uid $ME" "memfedctl region grant shared $KEY_B:$ME read"; do
	[[ $ERR == *"$part"* ]] || fail "B's refused read does not name '$part': $ERR"
done
grep -q "refused: node $KEY_B uid $ME may not read region 'shared'" "$T/c.log" ||
	fail "module C did not log the refusal: $(tail -n 5 "$T/c.log")"
expect_exit 6 ctl b region write shared <<<x
[[ $ERR == *"may not write region 'shared'"* && $ERR == *"region grant shared $KEY_B:$ME write"* ]] ||
	fail "B's refused write: $ERR"
ok "B without a grant is refused read and write, with the region, key, uid and grant named, and C logs it"

# A grant for another uid of B does not cover B's uid.
ctl a region grant shared "$KEY_B:$OTHER" read >/dev/null
expect_exit 6 ctl b region read shared
[[ $ERR == *"uid $ME may not read"* ]] || fail "a grant to uid $OTHER let uid $ME in: $ERR"
ok "a grant to uid $OTHER on B does not let uid $ME on B read"

# Read grant: B reads, write still refused.
ctl a region grant shared "$KEY_B:$ME" read >/dev/null
ctl b region read shared | cmp - "$T/a.bin" || fail "B with a read grant does not read what A wrote"
expect_exit 6 ctl b region write shared <<<x
[[ $ERR == *"write"* ]] || fail "B's write with a read grant: $ERR"
ctl a -j region show shared | grep -q "\"rights\": \"read\"" || fail "region show does not list the read grant"
ctl b region show shared | grep -q "grant: $KEY_B uid $ME read" || fail "B's region show: $(ctl b region show shared)"
ok "with a read grant B reads A's bytes and is still refused writes; region show lists the grant"

# Write grant: B writes, A reads B's bytes.
ctl a region grant shared "$KEY_B:$ME" write >/dev/null
head -c 256K /dev/urandom >"$T/b.bin"
ctl b region write shared <"$T/b.bin"
ctl a region read shared | cmp - "$T/b.bin" || fail "A does not read what B wrote under its write grant"
ok "with a write grant B writes, and A reads what B wrote"

# Only the owner changes grants, and B may not delete.
expect_exit 6 ctl b region grant shared "$KEY_B" write
expect_exit 6 ctl b region rm shared
ok "B, though granted write, may not change grants or delete the region"

# Revoke: refused again at B's next request.
ctl a region revoke shared "$KEY_B:$ME" >/dev/null
ctl a region revoke shared "$KEY_B:$OTHER" >/dev/null
expect_exit 6 ctl b region read shared
[[ $ERR == *"may not read region 'shared'"* ]] || fail "B after the revoke: $ERR"
ok "after the revoke B's next read is refused"

# Node quota on C: A holds 1 region; quota.node_regions is 3.
ctl a region create q1 4K >/dev/null
ctl a region create q2 4K >/dev/null
expect_exit 14 ctl a region create q3 4K
for part in "quota.node_regions" "node $KEY_A" "3 regions" "$T/c.json"; do
	[[ $ERR == *"$part"* ]] || fail "the node quota refusal does not name '$part': $ERR"
done
ctl b region create bq 4K >/dev/null || fail "B is held to A's node quota"
ctl c -j quota >"$T/quota.json"
python3 - "$T/quota.json" "$KEY_A" "$KEY_B" <<'PY' || fail "memfedctl quota does not show node usage: $(cat "$T/quota.json")"
import json, sys
q = json.load(open(sys.argv[1]))
nodes = {n["key"]: n for n in q["nodes"]}
assert nodes[sys.argv[2]]["regions"] == 3 and nodes[sys.argv[2]]["regions_limit"] == 3, nodes
assert nodes[sys.argv[3]]["regions"] == 1, nodes
PY
ctl c quota | grep -q "$KEY_A .* 3 .* 3 " || fail "memfedctl quota: $(ctl c quota)"
ok "C refuses A's fourth region by A's node quota, not B's; memfedctl quota shows both nodes"

# Every refusal above, counted by reason: B's three reads and two writes,
# its grant and its delete (administer), A's create over its node quota.
ctl c -j stats >"$T/stats.json"
python3 - "$T/stats.json" <<'PY' || fail "C's refusal counters: $(cat "$T/stats.json")"
import json, sys
r = json.load(open(sys.argv[1]))["module"]["refusals"]
assert r == {"read": 3, "write": 2, "admin": 2, "node_quota": 1, "uid_quota": 0}, r
PY
ctl c stats | grep -qx "module.refusals.write 2" || fail "memfedctl stats: $(ctl c stats)"
METRICS=$(ctl c -j status | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"])')
python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=30).read().decode(), end="")' \
	"$METRICS" >"$T/scrape.txt"
for want in read=3 write=2 admin=2 node_quota=1; do
	grep -qxF "memfed_module_refusals_total{module=\"02:00:00:00:00:31\",reason=\"${want%=*}\"} ${want#*=}" \
		"$T/scrape.txt" || fail "no refusal count $want in C's metrics: $(grep refusals "$T/scrape.txt")"
done
ok "C counts its refusals by reason (read 3, write 2, admin 2, node_quota 1): memfedctl stats and /metrics"

# Root on C, the module's node, deleting A's region there: refused without
# --force (naming it), done with --force and logged with A's key and uid.
expect_exit 6 ctl c region rm q1
[[ $ERR == *"region rm --force q1"* ]] || fail "root on C's refused delete does not name --force: $ERR"
ctl a region show q1 >/dev/null || fail "root on C deleted A's region without --force"
ctl c region rm --force q1 >/dev/null
expect_exit 3 ctl a region show q1
grep -q "root deleted region 'q1' of node $KEY_A uid $ME on this module by force" "$T/c.log" ||
	fail "C did not log the forced delete: $(tail -n 5 "$T/c.log")"
expect_exit 6 ctl b region rm --force q2
ok "root on C deletes A's region there only with --force, logged with A's key and uid; B's root may not"

# The owner's grants survive a restart of the module.
ctl a region grant shared "$KEY_B" read >/dev/null
stop_daemon c
start_daemon c --config "$T/c.json" --roles module --listen "$C_EP" --pool-size 64M \
	--module-id 02:00:00:00:00:31
ctl b region read shared | cmp - "$T/b.bin" || fail "B's grant (every uid) did not survive C's restart"
ok "a grant to every uid of B lets B read, also after C restarts"
echo "$PASSED passed, 0 failed"
