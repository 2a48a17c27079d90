#!/usr/bin/env bash
# Trust between nodes, end to end through memfedd: every connection between
# nodes is TLS 1.3 with pinned node keys. A node talks only to keys it
# trusts; a key, not an address, is a node's identity; a client speaking the
# plaintext wire protocol gets no byte of any region; a bit flipped in
# transit by a relay in another network namespace is detected, and the
# reader still gets exactly the bytes that were written.
. "$(dirname "$0")/lib.sh"
RAW="python3 $(dirname "$0")/wire_raw.py"

trust_all module client
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 64M --module-id 02:00:00:00:00:21
MODULE_EP=$(listen_of module)
start_daemon client --roles pager --listen 127.0.0.1:0 --peer "$MODULE_EP"
ctl client module ls | grep -q "02:00:00:00:00:21.*up" || fail "the trusted client does not reach the module: $(ctl client module ls)"
ctl client -j module ls | grep -q "\"key\": \"$(key_of module)\"" ||
	fail "module ls does not show the module's authenticated key: $(ctl client -j module ls)"
ok "two nodes that trust each other's keys connect, and module ls shows the module's key"

# A secret, written through the client: the hostile tries below look for it.
python3 -c 'import sys; sys.stdout.buffer.write(b"TOPSECRET-PAGE-" * 70000)' | head -c 1M >"$T/secret.bin"
ctl client region create secret 1M >/dev/null
ctl client region write secret <"$T/secret.bin"
ctl client region read secret | cmp - "$T/secret.bin" || fail "the secret did not read back through TLS"
ok "a region written and read back between the two nodes"

# A node whose key the module does not trust (it trusts the module's): the
# module refuses it, with a line naming the key.
start_daemon stranger --roles pager --listen 127.0.0.1:0 --peer "$MODULE_EP" \
	--trust "$(key_of module)"
STRANGER=$(ctl stranger key show)
ctl stranger module ls | grep -q "02:00:00:00:00:21.*up" && fail "an untrusted node reached the module"
expect_exit 6 ctl stranger region read secret
refusals=$(grep -c "refusing.*$STRANGER" "$T/module.log" || true)
[ "$refusals" -ge 1 ] || fail "the module did not log the refused key $STRANGER: $(tail -n 5 "$T/module.log")"
grep "refusing.*$STRANGER" "$T/module.log" | head -1 | grep -q "memfedctl peer add $STRANGER" ||
	fail "the refusal does not say how to trust the key: $(grep "$STRANGER" "$T/module.log" | head -1)"
ok "an untrusted key is refused, with a log line naming it and the fix ($refusals attempts)"

# Keys, not addresses: the client's key from another state dir, port and
# source address still gets in.
stop_daemon client
start_daemon moved --roles pager --listen 127.0.0.2:0 --peer "$MODULE_EP" \
	--key-file "$T/keys/client.key" --trust "$(key_of module)"
ctl moved region read secret | cmp - "$T/secret.bin" || fail "the trusted key from another endpoint was refused"
ok "a trusted key from another endpoint and state dir is accepted"

# The plaintext wire protocol, as any local user could speak it.
HOST=${MODULE_EP%:*} PORT=${MODULE_EP##*:}
mkdir -p "$T/nobody" && chmod 711 "$T" && chmod 777 "$T/nobody"
setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 "$(dirname "$0")/wire_raw.py" \
	hostile "$HOST" "$PORT" "$T/nobody/hostile.bin" >"$T/hostile.out"
cat "$T/hostile.out"
grep -q "v2 hello: HELLO answered, status=11; message='.*version 2.*upgrade" "$T/hostile.out" ||
	fail "an old (v2) client is not told that its wire version is refused: $(cat "$T/hostile.out")"
grep -q "v3 hello: HELLO answered, status=11; message='.*version 3 is refused.*requires version 5.*upgrade" "$T/hostile.out" ||
	fail "a version 3 client is not told that its wire version is refused: $(cat "$T/hostile.out")"
grep -q "v4 hello: HELLO answered, status=11; message='.*version 4 is refused.*requires version 5.*upgrade" "$T/hostile.out" ||
	fail "a version 4 client (no sequenced writes) is not told that its wire version is refused: $(cat "$T/hostile.out")"
if grep -q "TOPSECRET" "$T/nobody/hostile.bin"; then fail "a plaintext client read region bytes"; fi
grep -q "REGION_LIST gave 0 regions" "$T/hostile.out" || fail "a plaintext client listed regions"
ok "a plaintext client gets no region byte and no region list; an old one is told to upgrade"

# A man in the middle: the module in its own network namespace, a relay in
# another that flips one bit of what the module sends, well after the
# handshake (in the pages of a READ).
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the relay part needs root (network namespaces)"; echo "$PASSED passed, 0 failed"; exit 0; }
NS=mft$$
cleanup_ns() {
	local rc=$?
	ip netns pids "$NS-srv" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
	ip netns pids "$NS-mitm" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
	ip netns del "$NS-srv" 2>/dev/null || true
	ip netns del "$NS-mitm" 2>/dev/null || true
	set +e
	(exit $rc)
	cleanup
}
trap cleanup_ns EXIT
ip netns add "$NS-srv"; ip netns add "$NS-mitm"
ip link add "$NS-c" type veth peer name "$NS-m1" netns "$NS-mitm"
ip -n "$NS-mitm" link add "$NS-m2" type veth peer name "$NS-s" netns "$NS-srv"
ip addr add 10.213.1.1/24 dev "$NS-c"; ip link set "$NS-c" up
ip -n "$NS-mitm" addr add 10.213.1.2/24 dev "$NS-m1"; ip -n "$NS-mitm" link set "$NS-m1" up
ip -n "$NS-mitm" addr add 10.213.2.1/24 dev "$NS-m2"; ip -n "$NS-mitm" link set "$NS-m2" up
ip -n "$NS-srv" addr add 10.213.2.2/24 dev "$NS-s"; ip -n "$NS-srv" link set "$NS-s" up
ip -n "$NS-srv" link set lo up; ip -n "$NS-mitm" link set lo up

trust_all far near
MEMFEDD_WRAP="ip netns exec $NS-srv" start_daemon far --roles module --listen 10.213.2.2:7700 --pool-size 64M \
	--module-id 02:00:00:00:00:22
ip netns exec "$NS-mitm" $RAW relay 7700 10.213.2.2 7700 --listen 10.213.1.2 --flip-at 600000 >"$T/relay.out" 2>&1 &
RELAY=$!
for _ in $(seq 1 100); do grep -q listening "$T/relay.out" && break; sleep 0.05; done
start_daemon near --roles pager --listen 127.0.0.1:0 --peer 10.213.1.2:7700
ctl near region create far-data 4M >/dev/null
head -c 4M /dev/urandom >"$T/far.bin"
ctl near region write far-data <"$T/far.bin"
ctl near region read far-data | cmp - "$T/far.bin" || fail "a read after tampering returned other bytes than were written"
grep -q flipped "$T/relay.out" || fail "the relay flipped nothing (test setup): $(cat "$T/relay.out")"
grep -qi "tamper\|bad record mac\|decrypt" "$T/near.log" "$T/far.log" ||
	fail "the flipped bit was not reported: $(tail -n 5 "$T/near.log")"
kill "$RELAY" 2>/dev/null || true
ok "a bit flipped in transit by a relay in another namespace is detected; the data read back is intact"

echo "$PASSED passed, 0 failed"
