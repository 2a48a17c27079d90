#!/usr/bin/python3
"""Checks a scrape of memfedd's /metrics (metrics_test.sh).

The text is parsed by prometheus_client's own parser (Debian's
python3-prometheus-client), the one a Python exporter's tests would use, and
compared with what `memfedctl -j` reported around the scrape.

  metrics_check.py scrape SCRAPE.txt STATS_BEFORE.json STATS_AFTER.json STATUS.json
  metrics_check.py peer SCRAPE.txt ENDPOINT UP(0|1)
  metrics_check.py http HOST:PORT
"""
import http.client
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

PAGE = 4096
# memfedctl stats key -> (metric sample name, factor to the metric's unit)
COUNTERS = {
    "faults": ("memfed_pager_faults_total", 1),
    "wp_faults": ("memfed_pager_wp_faults_total", 1),
    "fetches": ("memfed_pager_fetches_total", 1),
    "prefetched": ("memfed_pager_prefetched_pages_total", 1),
    "prefetch_hits": ("memfed_pager_prefetch_hits_total", 1),
    "evictions": ("memfed_pager_evictions_total", 1),
    "staged_hits": ("memfed_pager_staged_hits_total", 1),
    "writebacks": ("memfed_pager_writeback_pages_total", 1),
    "poisoned": ("memfed_pager_poisoned_pages_total", 1),
}
HIST = "memfed_pager_fault_duration_seconds"


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print("ok - " + msg)


def parse(path):
    """(families by name, samples by name) of a scrape, through the parser."""
    text = open(path).read()
    try:
        fams = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's own complaint is the message
        fail("prometheus_client cannot parse the scrape: %r\n%s" % (e, text[:2000]))
    by_sample = {}
    for f in fams:
        for s in f.samples:
            by_sample.setdefault(s.name, []).append((f, s))
    return {f.name: f for f in fams}, by_sample


def value(by_sample, name, **labels):
    hits = [s.value for _, s in by_sample.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    if len(hits) != 1:
        fail("expected one sample %s%s, found %d" % (name, labels, len(hits)))
    return hits[0]


def regions(stats):
    return {r["region"]: r for r in stats.get("pager", {}).get("regions", [])}


def check_scrape(scrape, before_p, after_p, status_p):
    fams, by_sample = parse(scrape)
    before, after = regions(json.load(open(before_p))), regions(json.load(open(after_p)))
    status = json.load(open(status_p))

    want_types = {HIST: "histogram", "memfed_module_capacity_bytes": "gauge",
                  "memfed_module_free_bytes": "gauge", "memfed_peer_up": "gauge",
                  "memfed_pager_resident_bytes": "gauge"}
    for key, (name, _) in COUNTERS.items():
        want_types[name[:-len("_total")]] = "counter"
    for fam, typ in want_types.items():
        if fam not in fams:
            fail("no metric family %s in the scrape (families: %s)" % (fam, sorted(fams)))
        if fams[fam].type != typ:
            fail("%s has type %s, expected %s" % (fam, fams[fam].type, typ))
    ok("every family is there with its type: %d families parsed" % len(fams))

    if not after:
        fail("memfedctl stats shows no region after the faults")
    total_faults = 0
    for name, a in after.items():
        b = before.get(name, {})
        for key, (metric, factor) in COUNTERS.items():
            got = value(by_sample, metric, region=name)
            lo, hi = b.get(key, 0) * factor, a.get(key, 0) * factor
            if not lo <= got <= hi:
                fail("%s{region=%s} = %s, but memfedctl stats said %s before and %s after the scrape"
                     % (metric, name, got, lo, hi))
        total_faults += value(by_sample, "memfed_pager_faults_total", region=name)
        got = value(by_sample, "memfed_pager_resident_bytes", region=name)
        lo, hi = sorted((b.get("resident_pages", 0) * PAGE, a.get("resident_pages", 0) * PAGE))
        if not lo <= got <= hi:
            fail("resident bytes of %s: %s, memfedctl said %s..%s" % (name, got, lo, hi))
    if total_faults <= 0:
        fail("memfed_pager_faults_total is 0 after the example faulted its pages in")
    ok("pager counters equal memfedctl -j stats (%d faults in %d regions)" % (total_faults, len(after)))

    for name, a in after.items():
        buckets = sorted(((float(s.labels["le"]), s.value) for _, s in by_sample[HIST + "_bucket"]
                          if s.labels["region"] == name), key=lambda b: b[0])
        if not buckets or not math.isinf(buckets[-1][0]):
            fail("%s{region=%s} has no +Inf bucket: %s" % (HIST, name, buckets))
        for (le0, c0), (le1, c1) in zip(buckets, buckets[1:]):
            if c1 < c0:
                fail("bucket le=%s holds %s, fewer than le=%s's %s: not cumulative" % (le1, c1, le0, c0))
        count = value(by_sample, HIST + "_count", region=name)
        if count != buckets[-1][1]:
            fail("%s_count %s != +Inf bucket %s" % (HIST, count, buckets[-1][1]))
        fetched = sum(a.get("fetch_us_log2", [])), sum(before.get(name, {}).get("fetch_us_log2", []))
        if not fetched[1] <= count <= fetched[0]:
            fail("histogram count %s, memfedctl's buckets sum to %s..%s" % (count, fetched[1], fetched[0]))
        hsum = value(by_sample, HIST + "_sum", region=name)
        if count > 0 and not 0 < hsum < count * 10:
            fail("%s_sum %s s is not plausible for %s faults" % (HIST, hsum, count))
        # Bucket i holds latencies in [le/2, le) (the first from 0), so the
        # buckets bound _sum from both sides when none is beyond the last bound.
        per_bucket = [(le, c1 - c0) for (le, c1), (_, c0) in zip(buckets, [(0, 0)] + buckets[:-1])]
        if per_bucket[-1][1] == 0:
            hi = sum(le * n for le, n in per_bucket[:-1])
            lo = sum(le / 2 * n for le, n in per_bucket[1:-1])
            if not lo * 0.9999 <= hsum <= hi * 1.0001:
                fail("%s_sum %s s is outside the %s..%s s its buckets allow" % (HIST, hsum, lo, hi))
    ok("fault-latency histogram: cumulative buckets in seconds, _count = +Inf bucket = memfedctl's")

    mods = [m for m in status["modules"] if m["reachable"]]
    for m in mods:
        cap = value(by_sample, "memfed_module_capacity_bytes", module=m["module"])
        free = value(by_sample, "memfed_module_free_bytes", module=m["module"])
        if cap != m["capacity_bytes"] or free != m["free_bytes"]:
            fail("module %s: scraped capacity %s free %s, memfedctl status says %s and %s"
                 % (m["module"], cap, free, m["capacity_bytes"], m["free_bytes"]))
    ok("capacity and free bytes of %d modules equal memfedctl -j status" % len(mods))


def check_peer(scrape, endpoint, up):
    _, by_sample = parse(scrape)
    got = value(by_sample, "memfed_peer_up", endpoint=endpoint)
    if got != float(up):
        fail("memfed_peer_up{endpoint=%s} = %s, expected %s" % (endpoint, got, up))
    ok("memfed_peer_up{endpoint=%s} is %s" % (endpoint, up))


def request(ep, method, path, body=None, headers=None):
    host, port = ep.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def check_http(ep):
    r, data = request(ep, "GET", "/metrics")
    ctype = r.getheader("Content-Type", "")
    if r.status != 200 or not ctype.startswith("text/plain; version=0.0.4"):
        fail("GET /metrics: %s, Content-Type %r" % (r.status, ctype))
    ok("GET /metrics: 200 %s" % ctype)
    r, data = request(ep, "HEAD", "/metrics")
    if r.status != 200 or data:
        fail("HEAD /metrics: %s with %d body bytes" % (r.status, len(data)))
    ok("HEAD /metrics: 200, no body")
    for method in ("POST", "PUT", "DELETE"):
        r, data = request(ep, method, "/metrics", body=b"x=1")
        if r.status != 405 or "GET" not in (r.getheader("Allow") or ""):
            fail("%s /metrics: %s, Allow %r" % (method, r.status, r.getheader("Allow")))
    ok("POST, PUT, DELETE: 405 with Allow: %s" % r.getheader("Allow"))
    for path in ("/", "/metricsx", "/metrics/", "/../etc/passwd"):
        r, data = request(ep, "GET", path)
        if r.status != 404:
            fail("GET %s: %s, expected 404" % (path, r.status))
    ok("unknown paths: 404 naming /metrics (%r)" % data.decode().strip())
    r, data = request(ep, "GET", "/metrics", body=b"y" * 100)
    if r.status != 413:
        fail("GET /metrics with a body: %s, expected 413" % r.status)
    ok("a request body is refused: 413")
    try:
        r, data = request(ep, "GET", "/metrics", headers={"X-Big": "z" * (64 * 1024)})
        status = r.status
    except (ConnectionError, http.client.HTTPException) as e:
        status = repr(e)  # a connection closed on the oversized request is fine too
    if status == 200:
        fail("a 64 KiB header was accepted: requests are not bounded")
    ok("a 64 KiB header is refused (%s)" % status)
    r, data = request(ep, "GET", "/metrics?x=1")
    if r.status != 200 or b"memfed_pager_faults_total" not in data:
        fail("GET /metrics after the bad requests: %s" % r.status)
    ok("the endpoint still serves after them")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "scrape":
        check_scrape(*sys.argv[2:6])
    elif mode == "peer":
        check_peer(*sys.argv[2:5])
    elif mode == "http":
        check_http(sys.argv[2])
    else:
        fail("unknown mode " + mode)
