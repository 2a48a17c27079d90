#!/usr/bin/env bash
# Authorization for a node's own users (issue 13 items 3 and 4), as real other
# uids (setpriv; skipped, exit 77, without root). Module node C holds the
# pool; nodes A and B are pager nodes that create regions there. On A, users
# UA and UB: B grants (A, UA) read of one region.
#   - `region ls` on A shows each of its unprivileged users only what C says
#     they may read: their own regions, A's mode-readable ones, the ones
#     granted to them; not B's regions without a grant, nor a region of B's
#     user with UA's uid number (another user), nor A's root's 0600 ones.
#   - The pager's map check: UA maps the granted region read-only and gets
#     B's bytes, but not writable; UB, on the same node but without a grant,
#     may not map it although its mode is 0644 and A holds a grant (for UA).
#     The probe speaks the map protocol itself (memfed-test-map-probe), so
#     the pager's own check is what refuses, not "region.show".
. "$(dirname "$0")/lib.sh"
: "${MEMFED_MAP_PROBE:?set MEMFED_MAP_PROBE to memfed-test-map-probe}"

[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: acting as other uids needs root (setpriv)" >&2; exit 77; }

UA=65534 # two unprivileged users of node A (and UA's uid number on B)
UB=65533
as() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
actl() { local node=$1 uid=$2; shift 2; as "$uid" "$MEMFEDCTL" --socket "$T/$node/sock" "$@"; }
names() { python3 -c 'import json,sys; print(" ".join(sorted(r["name"] for r in json.load(sys.stdin))))'; }

trust_all c a b
mkdir -p "$T/a" "$T/b"
chmod 755 "$T" "$T/a" "$T/b" # the users reach the sockets
start_daemon c --roles module --listen 127.0.0.1:0 --pool-size 64M --module-id 02:00:00:00:00:32
C_EP=$(listen_of c)
start_daemon a --roles pager --listen 127.0.0.1:0 --peer "$C_EP"
start_daemon b --roles pager --listen 127.0.0.1:0 --peer "$C_EP"
KEY_A=$(key_of a)

head -c 64K /dev/urandom >"$T/granted.bin"
chmod 644 "$T/granted.bin"
ctl b region create granted 64K --mode 0644 >/dev/null
ctl b region write granted <"$T/granted.bin"
ctl b region grant granted "$KEY_A:$UA" read >/dev/null
ctl b region create b_public 64K --mode 0644 >/dev/null
actl b $UA region create b_same_uid 64K >/dev/null
actl a $UA region create a_mine 64K >/dev/null
ctl a region create a_root_private 64K >/dev/null
ctl a region create a_root_public 64K --mode 0644 >/dev/null
ok "regions on C: B's granted to (A, uid $UA) read and B's public one, one of B's uid $UA, A's uid $UA's and A's root's"

# region ls, as each user of A.
got=$(actl a $UA -j region ls | names)
[ "$got" = "a_mine a_root_public granted" ] || fail "region ls as uid $UA on A shows '$got'"
got=$(actl a $UB -j region ls | names)
[ "$got" = "a_root_public" ] || fail "region ls as uid $UB on A shows '$got'"
got=$(ctl a -j region ls | names)
[ "$got" = "a_mine a_root_private a_root_public b_public b_same_uid granted" ] ||
	fail "region ls as root on A shows '$got'"
ok "region ls on A: uid $UA sees its own, A's public and the granted region; uid $UB only A's public; root all"

# The pager's map check.
as $UA "$MEMFED_MAP_PROBE" "$T/a/sock" granted 65536 >"$T/mapped.bin" 2>"$T/err" ||
	fail "uid $UA on A could not map the region granted to it: $(cat "$T/err")"
cmp "$T/mapped.bin" "$T/granted.bin" || fail "uid $UA's mapping does not hold B's bytes"
set +e
as $UA "$MEMFED_MAP_PROBE" "$T/a/sock" granted 65536 rw >/dev/null 2>"$T/err"
rc=$?
set -e
[ $rc -eq 6 ] && grep -q "may not" "$T/err" || fail "uid $UA mapped a read grant writable (exit $rc): $(cat "$T/err")"
ok "uid $UA on A maps the region granted to it read-only and reads B's bytes; writable is refused"

set +e
as $UB "$MEMFED_MAP_PROBE" "$T/a/sock" granted 65536 >/dev/null 2>"$T/err"
rc=$?
set -e
[ $rc -eq 6 ] || fail "uid $UB on A mapped B's region granted only to uid $UA (exit $rc): $(cat "$T/err")"
grep -q "may not read region 'granted'" "$T/err" && grep -q "uid $UB" "$T/err" ||
	fail "uid $UB's refused map does not name the region and uid: $(cat "$T/err")"
set +e
as $UA "$MEMFED_MAP_PROBE" "$T/a/sock" b_same_uid 65536 >/dev/null 2>"$T/err"
rc=$?
set -e
[ $rc -eq 6 ] || fail "uid $UA on A mapped B's uid $UA's region (exit $rc): $(cat "$T/err")"
as $UA "$MEMFED_MAP_PROBE" "$T/a/sock" a_mine 65536 rw >/dev/null || fail "uid $UA could not map its own region"
ok "uid $UB on A may not map the region granted to uid $UA, nor uid $UA a region of B's uid $UA; its own maps writable"
echo "$PASSED passed, 0 failed"
