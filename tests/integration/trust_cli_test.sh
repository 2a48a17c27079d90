#!/usr/bin/env bash
# trust_cli: node keys and trusted peers from the command line, against a real
# memfedd. `key generate` writes a 0600 key and prints the public key that
# `key show` agrees with, and never replaces a key; memfedd refuses a key file
# others may read, naming the chmod; the log never holds the private key;
# `peer add|rm|ls` round-trip, are written into the config file with every
# other key kept, survive a restart, and are refused to an unprivileged
# user; editing trust.peers and sending SIGHUP changes the trusted set
# without a restart.
source "$(dirname "$0")/lib.sh"

# json_get FILE EXPR: a python expression over the JSON document `d` in FILE.
json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
# peers_of NAME: "key name endpoint source" of each trusted peer, sorted
# ("-" for no name or endpoint), from `peer ls`.
peers_of() { ctl "$1" peer ls | awk 'NR > 1 { print $1, $2, $3, $5 }' | sort; }
# peers_json_of NAME: the same from `peer ls -j`.
peers_json_of() {
	ctl "$1" -j peer ls | python3 -c '
import json, sys
for p in sorted(json.load(sys.stdin), key=lambda p: p["key"]):
    print(p["key"], p["name"] or "-", p["endpoint"] or "-", p["source"])'
}

# --- key generate / key show, no daemon ---
pub=$("$MEMFEDCTL" key generate "$T/gen.key")
[ "$(stat -c %a "$T/gen.key")" = 600 ] || fail "key generate wrote mode $(stat -c %a "$T/gen.key"), not 600"
[[ $pub =~ ^[A-Za-z0-9+/]{43}=$ ]] || fail "key generate printed '$pub', not one base64 key"
[ "$("$MEMFEDCTL" key show "$T/gen.key")" = "$pub" ] || fail "key show disagrees with key generate"
[ "$("$MEMFEDCTL" -j key show "$T/gen.key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')" = "$pub" ] ||
	fail "key show -j disagrees with key generate"
[ "$("$MEMFEDCTL" key pub <"$T/gen.key")" = "$pub" ] || fail "key pub disagrees with key generate"
set +e
out=$(echo "not-a-secret-key-but-echo-me" | "$MEMFEDCTL" key pub 2>&1)
rc=$?
set -e
[ $rc = 2 ] || fail "key pub of garbage exited $rc, expected 2: $out"
[[ $out != *echo-me* ]] || fail "key pub echoed its malformed input: $out"
ok "key generate writes a 0600 key and prints the public key key show and key pub read back"

before=$(cat "$T/gen.key")
expect_exit 4 "$MEMFEDCTL" key generate "$T/gen.key"
[[ $ERR == *"$T/gen.key exists"*"remove it first"* ]] || fail "overwrite refusal does not name the file and the way out: $ERR"
[ "$(cat "$T/gen.key")" = "$before" ] || fail "the refused key generate changed the key file"
ok "key generate refuses to replace a key (exit 4), naming it"

# --- a key file others may read stops memfedd ---
"$MEMFEDCTL" key generate "$T/loose.key" >/dev/null
chmod 644 "$T/loose.key"
mkdir -p "$T/loose"
expect_exit 6 "$MEMFEDD" --state-dir "$T/loose" --socket "$T/loose/sock" --kmod off \
	--listen 127.0.0.1:0 --pool-size 16M --key-file "$T/loose.key"
[[ $ERR == *"chmod 600 $T/loose.key"* ]] || fail "memfedd's refusal does not name 'chmod 600 $T/loose.key': $ERR"
expect_exit 6 "$MEMFEDCTL" key show "$T/loose.key"
ok "a 0644 key file: memfedd refuses to start and key show to read it, naming chmod 600"

# --- a daemon with a config file of its own ---
cat >"$T/a.json" <<JSON
{
  "log_level": "info",
  "pool": {"size": "16M"},
  "trust": {"rekey_seconds": 60}
}
JSON
chmod 640 "$T/a.json"
start_daemon a --config "$T/a.json" --listen 127.0.0.1:0 --log-level debug
own=$(ctl a key show)
[ "$own" = "$("$MEMFEDCTL" key show "$T/a/node.key")" ] || fail "key show (daemon) differs from its key file's"
ok "key show asks the daemon: its key file's public key"

secret=$(head -n 1 "$T/a/node.key")
grep -qF "$own" "$T/a.log" || fail "the daemon log does not name the node's public key"
! grep -qF "$secret" "$T/a.log" || fail "the daemon log holds the private key"
! grep -qF "$secret" <<<"$(ctl a -j key show)" || fail "key show -j carries the private key"
ok "the log (at debug) names the public key, never the private one; key show neither"

# --- peer add / ls / rm ---
k1=$("$MEMFEDCTL" key generate "$T/k1.key")
k2=$("$MEMFEDCTL" key generate "$T/k2.key")
ctl a peer add "$k1" --name lamp --endpoint 127.0.0.1:7801
ctl a peer add "$k2"
want=$(printf '%s\n' "$k1 lamp 127.0.0.1:7801 config" "$k2 - - config" | sort)
[ "$(peers_json_of a)" = "$want" ] || fail "peer ls -j: expected [$want], got [$(peers_json_of a)]"
[ "$(peers_of a)" = "$want" ] || fail "peer ls: expected [$want], got [$(peers_of a)]"
ok "peer add twice, peer ls and ls -j show both with name and endpoint"

ctl a peer add "$k1" --name lamp --endpoint 127.0.0.1:7802
[ "$(peers_of a | grep -c .)" = 2 ] || fail "adding a key again added a second entry: $(peers_of a)"
grep -qx "$k1 lamp 127.0.0.1:7802 config" <<<"$(peers_of a)" || fail "adding a key again did not update its endpoint: $(peers_of a)"
ok "peer add of a trusted key updates its endpoint"

[ "$(json_get "$T/a.json" 'sorted((p["key"], p.get("name", "-"), p.get("endpoint", "-")) for p in d["trust"]["peers"])')" = \
	"$(python3 -c 'import sys; print(sorted([(sys.argv[1], "lamp", "127.0.0.1:7802"), (sys.argv[2], "-", "-")]))' "$k1" "$k2")" ] ||
	fail "the config file's trust.peers is not the two peers: $(cat "$T/a.json")"
[ "$(json_get "$T/a.json" '(d["log_level"], d["pool"]["size"], d["trust"]["rekey_seconds"], list(d))')" = \
	"('info', '16M', 60, ['log_level', 'pool', 'trust'])" ] || fail "the config file lost other keys: $(cat "$T/a.json")"
[ "$(stat -c %a "$T/a.json")" = 640 ] || fail "the config file's mode changed to $(stat -c %a "$T/a.json")"
ok "peer add wrote trust.peers into the config file, kept every other key and the mode"

# A peer's own transport: shown by peer ls (column 4) and -j, kept in the
# config file, and refused when it is none of auto, tcp, rdma.
ctl a peer add "$k2" --transport tcp
[ "$(ctl a peer ls | awk -v k="$k2" '$1 == k { print $4 }')" = tcp ] || fail "peer ls does not show k2's transport: $(ctl a peer ls)"
[ "$(ctl a -j peer ls | python3 -c 'import json,sys; print([p["transport"] for p in json.load(sys.stdin) if p["key"] == sys.argv[1]])' "$k2")" = "['tcp']" ] ||
	fail "peer ls -j does not show k2's transport: $(ctl a -j peer ls)"
[ "$(json_get "$T/a.json" '[p.get("transport") for p in d["trust"]["peers"] if p["key"] == "'"$k2"'"]')" = "['tcp']" ] ||
	fail "the config file does not keep k2's transport: $(cat "$T/a.json")"
expect_exit 2 ctl a peer add "$k2" --transport infiniband
[[ $ERR == *'"auto", "tcp" or "rdma"'* ]] || fail "a bad transport's error: $ERR"
ok "peer add --transport: shown by peer ls and -j, written to the config file, a bad one refused naming the choices"

expect_exit 2 ctl a peer add "not-a-key"
[[ $ERR == *"is not a memfed key"* ]] || fail "a bad key's error: $ERR"
expect_exit 2 ctl a peer add "$k2" --endpoint nowhere
[[ $ERR == *"HOST:PORT"* ]] || fail "a bad endpoint's error: $ERR"
ok "a malformed key or endpoint is refused (exit 2), saying what a key is"

ctl a peer rm lamp
grep -q "^$k1 " <<<"$(peers_of a)" && fail "peer rm lamp left it trusted: $(peers_of a)"
expect_exit 3 ctl a peer rm lamp
[[ $ERR == *"no trusted peer lamp"* ]] || fail "rm of an unknown peer: $ERR"
expect_exit 3 ctl a peer rm "$k1"
ok "peer rm by name; rm of an unknown name or key exits 3"

# --- unprivileged callers ---
chmod 755 "$T" "$T/a"
expect_exit 6 setpriv --reuid 65534 --regid 65534 --clear-groups -- \
	"$MEMFEDCTL" --socket "$T/a/sock" peer add "$k1"
[[ $ERR == *"needs root"* ]] || fail "unprivileged peer add: $ERR"
expect_exit 6 setpriv --reuid 65534 --regid 65534 --clear-groups -- \
	"$MEMFEDCTL" --socket "$T/a/sock" peer rm "$k2"
[ "$(peers_of a)" = "$k2 - - config" ] || fail "an unprivileged caller changed the peers: $(peers_of a)"
grep -q "$k2" <<<"$(setpriv --reuid 65534 --regid 65534 --clear-groups -- \
	"$MEMFEDCTL" --socket "$T/a/sock" peer ls)" || fail "an unprivileged user cannot list the peers"
ok "uid 65534: peer add and rm refused (exit 6, needs root); peer ls allowed"

# --- restart ---
stop_daemon a
start_daemon a --config "$T/a.json" --listen 127.0.0.1:0
[ "$(peers_of a)" = "$k2 - - config" ] || fail "after a restart: $(peers_of a)"
ok "the trusted peers survive a restart"

# --- SIGHUP after editing the file ---
k3=$("$MEMFEDCTL" key generate "$T/k3.key")
python3 - "$T/a.json" "$k3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["trust"]["peers"] = [{"key": sys.argv[2], "name": "edited", "endpoint": "127.0.0.1:7803"}]
json.dump(d, open(sys.argv[1], "w"), indent=2)
PY
kill -HUP "${DAEMON_PID[a]}"
for _ in $(seq 1 200); do
	grep -q "reload from $T/a.json" "$T/a.log" && break
	sleep 0.05
done
grep "reload from $T/a.json" "$T/a.log" | grep "trust.peers 1 -> 1 keys" >/dev/null ||
	fail "the reload line does not list trust.peers as applied: $(grep reload "$T/a.log")"
[ "$(peers_of a)" = "$k3 edited 127.0.0.1:7803 config" ] || fail "after SIGHUP: $(peers_of a)"
kill -0 "${DAEMON_PID[a]}" || fail "memfedd exited on SIGHUP"
ok "SIGHUP applies an edited trust.peers at once, and says so in the log"

# --- --trust keys: added to the file's list, never written, not removable ---
stop_daemon a
start_daemon a --config "$T/a.json" --listen 127.0.0.1:0 --trust "$k1@127.0.0.1:7801"
want=$(printf '%s\n' "$k1 - 127.0.0.1:7801 flag" "$k3 edited 127.0.0.1:7803 config" | sort)
[ "$(peers_of a)" = "$want" ] || fail "with --trust: expected [$want], got [$(peers_of a)]"
expect_exit 2 ctl a peer rm "$k1"
[[ $ERR == *"--trust"* ]] || fail "rm of a --trust key: $ERR"
ctl a peer add "$k2"
[ "$(json_get "$T/a.json" 'sorted(p["key"] for p in d["trust"]["peers"])')" = \
	"$(python3 -c 'import sys; print(sorted(sys.argv[1:]))' "$k2" "$k3")" ] ||
	fail "a --trust key was written to the config file: $(cat "$T/a.json")"
ok "--trust keys join the file's, are never written to it, and peer rm names the flag"

# A reload after peer add finds nothing new to apply: the daemon's own
# change is already in force and in the file.
reloads=$(grep -c "reload from" "$T/a.log" || true)
kill -HUP "${DAEMON_PID[a]}"
for _ in $(seq 1 200); do
	[ "$(grep -c "reload from" "$T/a.log")" -gt "$reloads" ] && break
	sleep 0.05
done
last=$(grep "reload from" "$T/a.log" | tail -n 1)
[[ $last == *"nothing to apply"* ]] || fail "SIGHUP after peer add: $last"
[ "$(peers_of a | grep -c .)" = 3 ] || fail "SIGHUP after peer add changed the set: $(peers_of a)"
ok "SIGHUP after peer add: nothing to apply, the set unchanged"

! grep -qF "$secret" "$T/a.log" || fail "after the peer changes and reloads, the log holds the private key"
ok "the log still holds no private key after every change above"

echo "trust_cli: $PASSED checks passed"
