#!/usr/bin/env bash
# Replicated regions rebuilt elsewhere: three modules and a pager-only client
# whose regions get two copies and whose lost copies are rebuilt after a
# 2-second grace (memfedd --replicas 2 --replica-grace 2).
#   - A copy's module killed for good: after the grace a new copy is made on
#     the third module and filled from the copy in sync; the region is back
#     to 2 of 2 with identical bytes. A three-copy region has nowhere to go:
#     it stays degraded, region show says why, and the lost copy's lag
#     (time out of sync, pages it missed) is shown.
#   - The killed module returns: the copy dropped from the set is deleted
#     there, and the three-copy region's copy catches up.
#   - A module restarted on a fresh pool under the same module ID (its pool
#     file deleted for good): its copies are gone; detected and rebuilt.
#   - python3 hashes a heap larger than its budget under memfedctl run with
#     two heap copies, one copy's module SIGKILLed mid-run: the hash equals
#     a native run's.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"
. "$(dirname "$0")/replication_lib.sh"

# These modules lend their pools to one client, so each says so: another
# node may hold all of its pool ("quota.node_bytes", half a pool by default,
# would refuse a copy of the 384M heap of (c) on a 512M module).
for m in a b c; do
	mkdir -p "$T/$m"
	echo '{"quota": {"node_bytes": "100%"}}' >"$T/$m/memfedd.json"
done
start_modules
start_daemon client --roles pager --listen 127.0.0.1:0 --replicas 2 --replica-grace 2 \
	--peer "${EP[a]}" --peer "${EP[b]}" --peer "${EP[c]}"
ok "three modules and a client: two copies per region, lost copies rebuilt after 2 s"

# name_of MODULE_ID: the test's name of that module.
name_of() { for m in a b c; do [ "${ID[$m]}" = "$1" ] && echo $m; done; return 0; }
# copies_in_sync NAME: the modules of NAME's copies in sync, sorted, one line.
copies_in_sync() { show_field "$1" '" ".join(sorted(c["module"] for c in r["copies"] if c["state"] == "in sync"))'; }
# same_bytes NAME SHA: every copy of NAME in sync reads as SHA.
same_bytes() {
	local id
	for id in $(copies_in_sync "$1"); do
		[ "$(ctl client region read "$1@$id" | sha256sum | cut -d' ' -f1)" = "$2" ] ||
			fail "the copy of '$1' on module $id differs: $(ctl client region show "$1")"
	done
}

ctl client region create two 8M >/dev/null
ctl client region create three 1M --replicas 3 >/dev/null
head -c 8M /dev/urandom >"$T/two.bin"
ctl client region write two <"$T/two.bin"
SHA=$(sha256sum <"$T/two.bin" | cut -d' ' -f1)
read -r first victim <<<"$(show_field two '" ".join(c["module"] for c in r["copies"])')"
FIRST=$(name_of "$first") VICTIM=$(name_of "$victim")
for m in a b c; do [ "$m" != "$FIRST" ] && [ "$m" != "$VICTIM" ] && SPARE=$m; done
[ -n "$FIRST" ] && [ -n "$VICTIM" ] && [ -n "$SPARE" ] || fail "copies of 'two': $(ctl client region show two)"
ok "region 'two' has copies on $FIRST and $VICTIM, none on $SPARE; 'three' one on each"

# (a) The victim's module dies for good.
stop_daemon "$VICTIM" KILL
# The three-copy region's lag: a first write finds the copy lost, the
# second's 256 pages are missed by it.
head -c 4096 /dev/urandom | ctl client region write three
head -c 1M /dev/urandom | ctl client region write three
missed=$(show_field three "[c[\"pages_missed\"] for c in r[\"copies\"] if c[\"module\"] == \"$victim\"][0]")
[ "$missed" -ge 256 ] && [ "$missed" -le 257 ] || fail "the lost copy missed $missed pages, not 256: $(ctl client -j region show three)"
[ "$(show_field three "[c[\"behind_ms\"] > 0 and c[\"out_of_sync_since_unix_ms\"] > 0 for c in r[\"copies\"] if c[\"module\"] == \"$victim\"][0]")" = True ] ||
	fail "the lost copy shows no time out of sync: $(ctl client -j region show three)"
ok "a lost copy's lag: time out of sync and the 256 pages written that it missed"

want="$(echo "${ID[$FIRST]} ${ID[$SPARE]}" | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')"
for _ in $(seq 1 300); do
	[ "$(copies_in_sync two)" = "$want" ] && break
	sleep 0.1
done
[ "$(copies_in_sync two)" = "$want" ] || fail "'two' was not rebuilt on $SPARE: $(ctl client region show two)"
[ "$(show_field two 'r["in_sync"], r["degraded"], len(r["copies"]), r["counters"]["copies_replaced"]')" = "2 False 2 1" ] ||
	fail "'two' is not back to 2 of 2 after one replacement: $(ctl client region show two)"
same_bytes two "$SHA"
[ "$(ctl client region read two | sha256sum | cut -d' ' -f1)" = "$SHA" ] || fail "'two' reads differently"
grep -q "region 'two': the copy on module $victim was lost for .*a new copy on module ${ID[$SPARE]} replaces it" "$T/client.log" ||
	fail "no log line says the copy was replaced: $(grep replica "$T/client.log" | tail -5)"
ok "after the grace: a copy of 'two' rebuilt on $SPARE from $FIRST, 2 of 2 in sync, every copy's sha256 equal"

for _ in $(seq 1 100); do
	show_field three '"rebuild" in r' | grep -q True && break
	sleep 0.1
done
show_field three 'r["rebuild"]' | grep -q "no eligible module" ||
	fail "'three' does not say why it stays degraded: $(ctl client region show three)"
[ "$(show_field three 'r["in_sync"], r["degraded"]')" = "2 True" ] || fail "'three': $(ctl client region show three)"
[ "$(grep -c "region 'three' stays degraded" "$T/client.log")" -eq 1 ] ||
	fail "why 'three' stays degraded is not logged once: $(grep "stays degraded" "$T/client.log")"
ok "'three' has no eligible module: stays degraded, region show and one log line say why"

# The victim returns with its old pool: the dropped copy of 'two' is deleted
# there, and its copy of 'three' (never dropped) catches up.
restart "$VICTIM"
wait_in_sync three 3
for _ in $(seq 1 100); do
	ctl client region show "two@$victim" >/dev/null 2>&1 || break
	sleep 0.1
done
expect_exit 3 ctl client region show "two@$victim"
[ "$(show_field two 'len(r["copies"]), r["in_sync"]')" = "2 2" ] || fail "'two' after the victim's return: $(ctl client region show two)"
[ "$(show_field three '"rebuild" in r')" = False ] || fail "'three' still says it cannot be rebuilt"
ok "$VICTIM back: its dropped copy of 'two' deleted there, its copy of 'three' caught up (3 of 3)"

# (b) $SPARE's pool deleted for good: the module comes back under the same
# ID on a fresh pool, without its copies.
stop_daemon "$SPARE" KILL
rm -f "$T/$SPARE/pool.mfp"
restart "$SPARE"
for _ in $(seq 1 300); do
	[ "$(show_field two 'r["counters"]["copies_replaced"], r["in_sync"]')" = "2 2" ] && break
	sleep 0.1
done
[ "$(show_field two 'r["counters"]["copies_replaced"], r["in_sync"], len(r["copies"])')" = "2 2 2" ] ||
	fail "the copy of 'two' on the fresh pool was not rebuilt: $(ctl client region show two)"
same_bytes two "$SHA"
wait_in_sync three 3
ok "$SPARE restarted on a fresh pool: its lost copies detected and rebuilt, 'two' 2 of 2 with equal bytes, 'three' 3 of 3"

# (c) python3's heap, two copies, one copy's module killed mid-run.
# (N sized so the hash outlasts the 1 s wait below: at 300 k it sometimes
# ended first, once prefetch followed streams going down.)
N=600000
want_hash=$($PY "$HASH_PY" $N)
run_on client --heap-budget 16M --heap-size 384M -- $PY "$HASH_PY" $N >"$T/hash.out" &
RUN=$!
heap=
for _ in $(seq 1 200); do
	heap=$(ctl client region ls | awk '/^heap/ {print $1; exit}')
	[ -n "$heap" ] && break
	sleep 0.05
done
[ -n "$heap" ] || fail "no heap region appeared"
sleep 1
read -r _ second <<<"$(show_field "$heap" '" ".join(c["module"] for c in r["copies"])')"
kill -0 $RUN 2>/dev/null || fail "python3 ended before a copy's module could be killed under it"
stop_daemon "$(name_of "$second")" KILL
wait $RUN || fail "python3 exited $? with module $(name_of "$second") killed under it"
[ "$(cat "$T/hash.out")" = "$want_hash" ] || fail "hash '$(cat "$T/hash.out")', native '$want_hash'"
ok "python3's heap hash with two copies, the module of one SIGKILLed mid-run: equals native"

echo "$PASSED passed, 0 failed"
