#!/usr/bin/env bash
# memfedd's Prometheus endpoint and `memfedctl stats --plot`, as an operator
# meets them: a daemon with --metrics on a free port, a peer module, real page
# faults from the C API example, then a scrape parsed by prometheus_client's
# text parser and compared with what memfedctl reports; then the picture.
source "$(dirname "$0")/lib.sh"
: "${MEMFED_EXAMPLE_MAP:?}"
PY=/usr/bin/python3
CHECK="$PY $(dirname "$0")/metrics_check.py"
$PY -c 'import prometheus_client' 2>/dev/null ||
	fail "python3-prometheus-client is not installed (make deps)"
json_field() { $PY -c "import json,sys; v=json.load(sys.stdin)$1; print('null' if v is None else v)"; }

start_daemon plain --roles module --listen 127.0.0.1:0 --pool-size 16M
[ "$(ctl plain -j status | json_field '["metrics"]')" = null ] ||
	fail "a daemon without --metrics reports an endpoint: $(ctl plain -j status)"
ctl plain status | grep -q "metrics: (off" || fail "status without --metrics: $(ctl plain status)"
ok "the endpoint is off by default, and status says so"
stop_daemon plain

trust_all peer a
start_daemon peer --roles module --listen 127.0.0.1:0 --pool-size 64M
PEER=$(listen_of peer)
start_daemon a --pool-size 1G --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --peer "$PEER"
EP=$(ctl a -j status | json_field '["metrics"]')
[[ $EP =~ ^127\.0\.0\.1:[0-9]+$ ]] && [ "${EP##*:}" != 0 ] ||
	fail "memfedctl -j status gives metrics '$EP', expected 127.0.0.1:PORT with a real port"
ctl a status | grep -qF "metrics: http://$EP/metrics" || fail "status: $(ctl a status)"
ok "--metrics 127.0.0.1:0 binds a free port; memfedctl status shows it (-j: \"metrics\")"

expect_exit 9 "$MEMFEDD" --state-dir "$T/clash" --socket "$T/clash/sock" --kmod off \
	--roles module --listen 127.0.0.1:0 --metrics "$EP"
grep -q "$EP" <<<"$ERR" || fail "a taken metrics port: $ERR"
ok "a taken metrics port stops memfedd with exit 9 naming the endpoint"

# Real faults: the example maps a 4 MiB region, writes it, maps it again and
# reads it back, all through the pager.
"$MEMFED_EXAMPLE_MAP" "$T/a/sock" metered >"$T/example.out" || fail "example: $(cat "$T/example.out")"

scrape() { $PY -c 'import sys, urllib.request
print(urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=30).read().decode(), end="")' "$1"; }
ctl a -j stats >"$T/before.json"
scrape "$EP" >"$T/scrape.txt"
ctl a -j stats >"$T/after.json"
ctl a -j status >"$T/status.json"
$CHECK scrape "$T/scrape.txt" "$T/before.json" "$T/after.json" "$T/status.json" ||
	fail "the scrape disagrees with memfedctl (above)"
$CHECK peer "$T/scrape.txt" "$PEER" 1 || fail "peer state"
ok "a scrape parses and agrees with memfedctl -j stats and status"

if command -v promtool >/dev/null; then
	promtool check metrics <"$T/scrape.txt" || fail "promtool check metrics rejects the scrape"
	ok "promtool check metrics: no problems"
else
	echo "SKIP: promtool check metrics: promtool is not installed (Debian package prometheus," \
	     "left out of make deps because it installs and starts a Prometheus server)"
fi

$CHECK http "$EP" || fail "HTTP handling (above)"
ok "only GET/HEAD /metrics is served; other methods, paths and oversized requests are refused"

stop_daemon peer
scrape "$EP" >"$T/scrape2.txt"
$CHECK peer "$T/scrape2.txt" "$PEER" 0 || fail "peer state after it stopped"
ok "a stopped peer shows as memfed_peer_up 0"

# The picture of the same counters.
ctl a stats --plot "$T/stats.png" >/dev/null || fail "stats --plot"
magic=$(head -c 8 "$T/stats.png" | od -An -tx1 | tr -d ' \n')
[ "$magic" = 89504e470d0a1a0a ] || fail "stats --plot wrote no PNG (magic $magic)"
size=$(stat -c %s "$T/stats.png")
[ "$size" -gt 20000 ] || fail "stats --plot wrote a ${size}-byte PNG, too small to hold two panels"
ok "memfedctl stats --plot writes a PNG ($size bytes)"
expect_exit 10 env PATH=/nonexistent "$MEMFEDCTL" --socket "$T/a/sock" stats --plot "$T/y.png"
grep -q "gnuplot-nox" <<<"$ERR" || fail "plot without gnuplot: $ERR"
ok "without gnuplot on PATH, stats --plot names the package to install (exit 10)"
start_daemon empty --listen 127.0.0.1:0 --pool-size 16M
expect_exit 3 ctl empty stats --plot "$T/empty.png"
grep -q "no region" <<<"$ERR" || fail "plot with no regions: $ERR"
ok "with nothing to draw, stats --plot says why and exits 3"
