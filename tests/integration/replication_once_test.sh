#!/usr/bin/env bash
# Replicated regions rebuilt once: two pager nodes, p1 and p2, both know a
# two-copy region whose copy's module dies for good; both run rebuilds
# (memfedd --replica-grace 2), four modules give them room for two new
# copies, yet exactly one new copy is made (the rebuild is claimed on the
# module of the copy in sync, replicated_regions.cc) and both pagers end
# with the same two copies.
# Then the tombstones of the dropped copy survive a restart of both pagers:
# the dead module comes back after they restarted, and its dropped copy is
# deleted there, never read or counted as a copy.
# Last, a rebuild respects the quota of the module it would go to: node q
# (module and pager, its uid quota 1M) rebuilds a 2M region's copy on
# another module than its own, nearest as its own is; where no other module
# is left, region show's "rebuild" note names the quota.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"
. "$(dirname "$0")/replication_lib.sh"

ID[d]=02:00:00:00:00:0d ID[q]=02:00:00:00:00:0e
trust_all a b c d p1 p2 q
start_modules
restart d 127.0.0.1:0
EP[d]=$(listen_of d)
start_pager() {
	start_daemon "$1" --roles pager --listen 127.0.0.1:0 --replicas 2 --replica-grace 2 \
		--peer "${EP[a]}" --peer "${EP[b]}" --peer "${EP[c]}" --peer "${EP[d]}"
}
start_pager p1
start_pager p2
ok "four modules and two pagers: two copies per region, lost copies rebuilt after 2 s"

name_of() { for m in a b c d; do [ "${ID[$m]}" = "$1" ] && echo $m; done; return 0; }
# modules_of NODE NAME: the modules of NAME's copies as NODE sees them, sorted.
modules_of() { REPL_NODE=$1 show_field "$2" '" ".join(sorted(c["module"] for c in r["copies"]))'; }
# held_here MODULE NAME: module MODULE's pool holds region NAME (its root
# lists every region there; `region show` is the owner's and its grantees').
held_here() { ctl "$1" region ls 2>/dev/null | grep -q "^$2 "; }
# held_on NAME: the live modules (test names) whose pool holds region NAME.
held_on() {
	local m out=
	for m in a b c d; do
		[ -n "${DAEMON_PID[$m]:-}" ] || continue
		held_here $m "$1" && out="$out $m"
	done
	echo "${out# }"
}

ctl p1 region create two 4M >/dev/null
# p2 uses p1's region by a grant (regions belong to the node that made them).
ctl p1 region grant two "$(key_of p2)" write
head -c 4M /dev/urandom >"$T/two.bin"
ctl p1 region write two <"$T/two.bin"
SHA=$(sha256sum <"$T/two.bin" | cut -d' ' -f1)
[ "$(modules_of p2 two)" = "$(modules_of p1 two)" ] || fail "p2 sees other copies: $(ctl p2 region show two)"
REPL_NODE=p2 wait_in_sync two 2
VICTIM=$(name_of "$(REPL_NODE=p1 show_field two 'r["copies"][1]["module"]')")
[ -n "$VICTIM" ] || fail "copies of 'two': $(ctl p1 region show two)"
victim=${ID[$VICTIM]}
[ "$(held_on two | wc -w)" = 2 ] || fail "'two' is held on $(held_on two), not on two modules"
ok "both pagers know 'two', copies on $(held_on two)"

stop_daemon "$VICTIM" KILL
# Both pagers see the copy lost, past the grace: the owner's node p1
# rebuilds it, p2 finds the new copy: one new copy only.
for _ in $(seq 1 300); do
	a1=$(modules_of p1 two) a2=$(modules_of p2 two)
	[ "$a1" = "$a2" ] && ! grep -qw "$victim" <<<"$a1" &&
		[ "$(REPL_NODE=p1 show_field two 'r["in_sync"]')" = 2 ] &&
		[ "$(REPL_NODE=p2 show_field two 'r["in_sync"]')" = 2 ] && break
	sleep 0.1
done
[ "$a1" = "$a2" ] && ! grep -qw "$victim" <<<"$a1" ||
	fail "the pagers do not agree on the copies: p1 $(ctl p1 region show two); p2 $(ctl p2 region show two)"
[ "$(REPL_NODE=p1 show_field two 'r["in_sync"]')" = 2 ] && [ "$(REPL_NODE=p2 show_field two 'r["in_sync"]')" = 2 ] ||
	fail "not 2 of 2 in sync: p1 $(ctl p1 region show two); p2 $(ctl p2 region show two)"
sleep 3 # a second rebuild, were one to follow, would be done by now
held=$(held_on two)
[ "$(wc -w <<<"$held")" = 2 ] || fail "'two' is held on $held: not 2 copies"
[ "$(cat "$T/p1.log" "$T/p2.log" | grep -c "region 'two': the copy on module $victim was lost .* replaces it")" = 1 ] ||
	fail "not one rebuild: $(grep -h "replaces it\|leaves the set" "$T/p1.log" "$T/p2.log")"
for p in p1 p2; do
	[ "$(ctl $p region read two | sha256sum | cut -d' ' -f1)" = "$SHA" ] || fail "'two' reads differently on $p"
done
for m in $held; do
	[ "$(ctl "$m" -j status | $PY -c 'import json,sys; print(json.load(sys.stdin)["pool"]["regions"])')" = 1 ] ||
		fail "module $m holds more than the copy of 'two' (a rebuild claim left?)"
done
ok "the copy on $VICTIM rebuilt once: 'two' held on $held only, both pagers 2 of 2 in sync, same bytes"

# Tombstones survive a restart: both pagers restart while $VICTIM is dead,
# then $VICTIM returns with its old pool, still holding the dropped copy.
for p in p1 p2; do
	[ -s "$T/$p/replica-tombstones.json" ] || fail "$p keeps no tombstone file"
	stop_daemon $p
	start_pager $p
done
[ "$(modules_of p1 two)" = "$a1" ] || fail "after the restart p1 sees $(ctl p1 region show two)"
restart "$VICTIM"
for _ in $(seq 1 100); do
	held_here "$VICTIM" two || break
	sleep 0.1
done
! held_here "$VICTIM" two || fail "module $VICTIM still holds its dropped copy of 'two'"
[ "$(modules_of p1 two)" = "$a1" ] && [ "$(modules_of p2 two)" = "$a1" ] ||
	fail "the dropped copy came back into the set: p1 $(ctl p1 region show two); p2 $(ctl p2 region show two)"
grep -q "region 'two': the copy dropped from module $victim .* is deleted there now" "$T/p1.log" "$T/p2.log" ||
	fail "no log line says the dropped copy was deleted"
# tombstones_left: the records in both pagers' tombstone files.
tombstones_left() {
	$PY -c 'import json,sys; print(sum(len(json.load(open(f))) for f in sys.argv[1:]))' \
		"$T/p1/replica-tombstones.json" "$T/p2/replica-tombstones.json"
}
for _ in $(seq 1 50); do
	[ "$(tombstones_left)" = 0 ] && break
	sleep 0.1
done
[ "$(tombstones_left)" = 0 ] || fail "the tombstones are kept after the delete: $(cat "$T"/p?/replica-tombstones.json)"
ok "both pagers restarted, then $VICTIM returned: its dropped copy deleted from the tombstone kept in the state dir"

# A rebuild within the quota of the module it goes to.
stop_daemon p1
stop_daemon p2
mkdir -p "$T/q"
echo '{"quota": {"uid_bytes": "1M", "root_exempt": false}}' >"$T/q/memfedd.json"
start_daemon q --listen 127.0.0.1:0 --pool-size 64M --module-id "${ID[q]}" --replicas 2 \
	--replica-grace 2 --peer "${EP[a]}" --peer "${EP[b]}" --peer "${EP[c]}" --peer "${EP[d]}"
ctl q region create qr 2M --on "${ID[a]},${ID[b]}" >/dev/null
head -c 2M /dev/urandom | ctl q region write qr
REPL_NODE=q wait_in_sync qr 2
ctl q -j watch --replicas >"$T/watch.out" &
WATCH=$!
sleep 0.5 # it starts from the events after its first request
stop_daemon b KILL
for _ in $(seq 1 300); do
	[ "$(REPL_NODE=q show_field qr 'r["counters"]["copies_replaced"], r["in_sync"]')" = "1 2" ] && break
	sleep 0.1
done
[ "$(REPL_NODE=q show_field qr 'r["counters"]["copies_replaced"], r["in_sync"]')" = "1 2" ] ||
	fail "'qr' was not rebuilt: $(ctl q region show qr)"
on=$(modules_of q qr)
grep -qw "${ID[q]}" <<<"$on" && fail "'qr' was rebuilt on q's own module beyond its quota: $on"
ok "q's own module, nearest but over the owner's quota there, is passed over: 'qr' rebuilt on $on"
new=${on/${ID[a]}/}
new=${new// /}
for _ in $(seq 1 50); do
	grep -q "\"module\":\"$new\".*\"event\":\"in sync\"\|\"event\":\"in sync\".*\"module\":\"$new\"" "$T/watch.out" && break
	sleep 0.1
done
kill $WATCH
wait $WATCH 2>/dev/null || true
# The events of 'qr', in order, as (event, module).
got=$($PY -c '
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["region"] == "qr":
        print(e["event"], e["module"])' "$T/watch.out" | uniq | tr '\n' ';')
want="lost ${ID[b]};replaced ${ID[b]};catching up $new;in sync $new;"
[ "$got" = "$want" ] || fail "watch --replicas showed '$got', not '$want': $(cat "$T/watch.out")"
ok "memfedctl watch --replicas: qr's copy on b lost, replaced, the new one on $new catching up, then in sync"

# Nowhere else to go: the note names the quota.
ctl q region create q3 2M --replicas 3 --on "${ID[a]},${ID[c]},${ID[d]}" >/dev/null
REPL_NODE=q wait_in_sync q3 3
stop_daemon d KILL
for _ in $(seq 1 300); do
	REPL_NODE=q show_field q3 'r.get("rebuild", "")' | grep -q "quota" && break
	sleep 0.1
done
note=$(REPL_NODE=q show_field q3 'r.get("rebuild", "")')
grep -q "module ${ID[q]}: cannot create region 'q3'.*quota" <<<"$note" ||
	fail "region show does not say the quota stops the rebuild: $(ctl q region show q3)"
[ "$(REPL_NODE=q show_field q3 'r["in_sync"], len(r["copies"])')" = "2 3" ] || fail "'q3': $(ctl q region show q3)"
ok "no module left but q's own, over quota: 'q3' stays degraded, region show names the quota"

echo "$PASSED passed, 0 failed"
