#!/usr/bin/env bash
# One module shared by several local users, each a real uid acting through the
# control socket with memfedctl (setpriv), as issue 13 asks:
#   - a freed extent reads as zeros to the next user who gets it, across a
#     daemon kill, and a truncated tail reads as zeros when the file regrows;
#   - another user can neither read, write nor delete a 0600 region;
#   - per-uid quotas: bytes and regions, a refusal that names the quota, the
#     usage and the key (exit 14), root exempt, `memfedctl quota` (-j);
#   - `region ls` shows a user only the regions they may read, page by page,
#     among more hidden regions than one request looks at;
#   - a reload (SIGHUP) applies changed quotas at once.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: acting as other uids needs root (setpriv)" >&2; exit 77; }

A=65534 # two unprivileged users
B=65533
as() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
mkdir -p "$T/m"
chmod 755 "$T" "$T/m" # the other users reach the socket
cat >"$T/m.json" <<EOF
{"quota": {"uid_bytes": "8M", "uid_regions": 4}}
EOF
start_daemon m --config "$T/m.json" --roles module --listen 127.0.0.1:0 --pool-size 64M \
	--module-id 02:00:00:00:00:01
actl() { local uid=$1; shift; as "$uid" "$MEMFEDCTL" --socket "$T/m/sock" "$@"; }
fa_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["fa"])'; }
pattern() { python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + 1) % 251 for i in range(int(sys.argv[1]))))' "$1"; }
ok "a module with quotas of 8M and 4 regions per uid; users $A and $B reach its socket"

# --- Memory hygiene: the next owner of an extent reads zeros.
fa_a=$(actl $A -j region create z 1M | fa_of)
pattern 1048576 | actl $A region write z
actl $A region read z | cmp -s - <(pattern 1048576) || fail "uid $A does not read back its pattern"
actl $A region rm z
stop_daemon m KILL # what the delete zeroed must be zero on the media, not just in a cache
start_daemon m --config "$T/m.json" --roles module --listen 127.0.0.1:0 --pool-size 64M \
	--module-id 02:00:00:00:00:01
fa_b=$(actl $B -j region create z 1M | fa_of)
[ "$fa_a" = "$fa_b" ] || fail "the test needs the extent reused: uid $A had $fa_a, uid $B got $fa_b"
actl $B region read z | cmp -s - <(head -c 1048576 /dev/zero) ||
	fail "uid $B reads what uid $A wrote in the extent it freed"
actl $B region rm z
ok "uid $B's new region on the extent uid $A freed reads as zeros, after a daemon kill"

actl $A region create t 64K >/dev/null
pattern 65536 | actl $A region write t
actl $A region truncate t 100 >/dev/null
actl $A region truncate t 64K >/dev/null
actl $A region read t | cmp -s - <(pattern 100; head -c $((65536 - 100)) /dev/zero) ||
	fail "a region shrunk to 100 bytes and grown again does not read zeros past them"
actl $A region rm t
ok "a truncated tail reads as zeros when the file grows again"

# --- Another user's 0600 region is out of reach.
actl $A region create mine 4K >/dev/null
echo secret | actl $A region write mine
expect_exit 6 actl $B region read mine
[[ $ERR == *"uid $B may not read region 'mine'"* ]] || fail "read refusal: $ERR"
echo x | expect_exit 6 actl $B region write mine
expect_exit 6 actl $B region truncate mine 0
expect_exit 6 actl $B region rm mine
[ "$(actl $A region read mine --length 6)" = secret ] || fail "uid $A's region changed"
actl $A region rm mine
ok "uid $B may not read, write, truncate or delete uid $A's 0600 region"

# --- Quotas: bytes. The pool is thin: a region's size is only address
# space, its bytes are the pages written to it, charged as a write takes them.
actl $A region create a1 4M >/dev/null
actl $A region create a2 4M >/dev/null
actl $A region create a3 4M >/dev/null
pattern 4194304 | actl $A region write a1
pattern 4194304 | actl $A region write a2
pattern 4096 >"$T/page"
expect_exit 14 actl $A region write a3 <"$T/page" # (a pipe would run it in a subshell)
for part in "cannot write 4K of new pages to region 'a3'" "uid $A has written 8M" \
	"its quota is 8M" '"quota.uid_bytes"' "$T/m.json"; do
	[[ $ERR == *"$part"* ]] || fail "the bytes refusal lacks '$part': $ERR"
done
out=$(actl $A -j region write a3 <"$T/page" || true)
[[ $out == *'"code": "quota"'* ]] || fail "memfedctl -j does not give the code \"quota\": $out"
pattern 4096 | actl $A region write a1 # pages already written take nothing more
ok "uid $A is refused a write past its 8M (exit 14), naming the quota, its usage and the key"

# --- Quotas: regions.
actl $A region rm a2
for r in a2 a4; do actl $A region create $r 4K >/dev/null; done
pattern 4096 | actl $A region write a2
pattern 4096 | actl $A region write a3
pattern 4096 | actl $A region write a4
expect_exit 14 actl $A region create a5 4K
for part in "uid $A holds 4 regions" "its quota is 4 regions" '"quota.uid_regions"'; do
	[[ $ERR == *"$part"* ]] || fail "the regions refusal lacks '$part': $ERR"
done
actl $B region create b1 4K >/dev/null # another user's quota is their own
ok "uid $A is refused a fifth region (exit 14); uid $B still creates"

# The three refusals above (the write to a3 twice, a5), counted by reason.
n=$(ctl m -j stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["module"]["refusals"]["uid_quota"])')
[ "$n" = 3 ] || fail "uid_quota refusals counted: $n, want 3 ($(ctl m stats | grep refusals))"
ok "the module counts the 3 uid-quota refusals (module.refusals.uid_quota)"

# --- Root is exempt.
ctl m region create r-big 16M >/dev/null
head -c $((16 << 20)) /dev/urandom | ctl m region write r-big
ctl m region create r-private 4K >/dev/null
ctl m region create r-public 4K --mode 0644 >/dev/null
echo hello | ctl m region write r-private
echo hello | ctl m region write r-public
ok "root writes past the per-uid quota"

# --- memfedctl quota.
actl $A -j quota | python3 -c '
import json, sys
q = json.load(sys.stdin)
assert q["module"] == "02:00:00:00:00:01", q
assert q["config"]["uid_bytes"] == 8388608 and q["config"]["uid_regions"] == 4, q["config"]
assert q["uids"] == [{"uid": 65534, "regions": 4, "bytes": (4 << 20) + 3 * 4096,
                      "regions_limit": 4, "bytes_limit": 8 << 20, "exempt": False}], q["uids"]'
actl $A quota | grep -Eq "^$A +4 +4 +4\.0M +8M$" || fail "memfedctl quota as $A: $(actl $A quota)"
ctl m -j quota | python3 -c '
import json, sys
u = {e["uid"]: e for e in json.load(sys.stdin)["uids"]}
assert sorted(u) == [0, 65533, 65534], u
assert u[0]["exempt"] and u[0]["bytes_limit"] is None and u[0]["regions"] == 3, u[0]
assert u[0]["bytes"] == (16 << 20) + 2 * 4096, u[0]
assert u[65533]["regions"] == 1 and not u[65533]["exempt"], u[65533]'
ctl m quota | grep -Eq '^0 +3 +none .* none  \(exempt\)$' || fail "memfedctl quota as root: $(ctl m quota)"
ok "memfedctl quota: a user sees their own usage and limits, root every uid's"

# --- region ls shows a user what they may read, through pages of hidden regions.
ls_names() { python3 -c 'import json,sys; print(" ".join(r["name"] for r in json.load(sys.stdin)))'; }
[ "$(actl $A -j region ls | ls_names)" = "a1 a2 a3 a4 r-public" ] ||
	fail "region ls as $A: $(actl $A -j region ls | ls_names)"
[ "$(actl $B -j region ls | ls_names)" = "b1 r-public" ] ||
	fail "region ls as $B: $(actl $B -j region ls | ls_names)"
[ "$(ctl m -j region ls | ls_names)" = "a1 a2 a3 a4 b1 r-big r-private r-public" ] ||
	fail "region ls as root: $(ctl m -j region ls | ls_names)"
[ "$(actl $A region ls | awk '{print $1}' | xargs)" = "a1 a2 a3 a4 r-public" ] ||
	fail "region ls (text) as $A"
ok "region ls: each user sees their own regions and the readable one; root sees all"

# 1,100 hidden regions between a4 and r-public: more than one request looks at.
cat >"$T/list.py" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[2])
def call(**req):
    s.send(json.dumps(req).encode())
    r = json.loads(s.recv(400000))
    assert r.get("ok"), r
    return r
if sys.argv[1] == "hide":
    for i in range(1100):
        call(op="region.create", name="h%04d" % i, size=4096, mode=0o600)
    sys.exit(0)
# Walk every page with a small limit; print the names and the requests taken.
limit, names, after, requests = int(sys.argv[3]), [], "", 0
while True:
    req = {"op": "region.list", "limit": limit}
    if after:
        req["after"] = after
    r = call(**req)
    requests += 1
    assert len(r["regions"]) <= limit, r
    names += [x["name"] for x in r["regions"]]
    if not r["more"]:
        break
    assert r["next"] > after, r
    after = r["next"]
print(" ".join(names), requests)
EOF
python3 "$T/list.py" hide "$T/m/sock"
for limit in 1 2 256; do
	got=$(as $A /usr/bin/python3 "$T/list.py" walk "$T/m/sock" $limit)
	[ "${got% *}" = "a1 a2 a3 a4 r-public" ] || fail "uid $A's walk with limit $limit: ${got% *}"
done
[ "${got##* }" -ge 2 ] || fail "the walk past 1,100 hidden regions took ${got##* } request(s)"
[ "$(actl $A -j region ls | ls_names)" = "a1 a2 a3 a4 r-public" ] ||
	fail "region ls as $A among hidden regions"
[ "$(ctl m -j region ls | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -eq 1108 ] ||
	fail "root does not list all 1,108 regions"
ok "region.list pages stay whole and in order for uid $A among 1,100 hidden regions"

# --- A reload (SIGHUP) applies new quotas at once.
echo '{"quota": {"uid_bytes": "8M", "uid_regions": 5}}' >"$T/m.json"
kill -HUP "${DAEMON_PID[m]}"
for _ in $(seq 1 100); do
	grep -q 'reload from .*quota.uid_regions 4 -> 5' "$T/m.log" && break
	sleep 0.05
done
grep -q 'reload from .*quota.uid_regions 4 -> 5' "$T/m.log" || fail "no reload logged: $(tail -n 2 "$T/m.log")"
actl $A region create a5 4K >/dev/null
expect_exit 14 actl $A region create a6 4K
ok "a reload raises uid $A's quota to 5 regions at once"

echo "PASS ($PASSED checks)"
