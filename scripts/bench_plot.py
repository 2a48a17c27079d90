#!/usr/bin/python3
"""Draws `make bench`'s tables as PNG plots beside them.

scripts/bench.sh keeps each section's output as DIR/<section>.txt; this reads
those tables back and draws one DIR/<section>.png per section with gnuplot
(Debian's gnuplot-nox, pngcairo terminal). A section whose text is missing is
skipped with a note; a table that no longer parses is an error naming the
file, because then this script and the benchmark have drifted apart.

  scripts/bench_plot.py DIR
"""
import os
import re
import subprocess
import sys

TERMINAL = 'set encoding utf8\nset terminal pngcairo size 1200,{h} font ",11" noenhanced\n'
BARS = """set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid noxtics ytics
set key below horizontal
set bmargin 7
set yrange [0:*]
"""


def die(msg):
    print("bench_plot: " + msg, file=sys.stderr)
    sys.exit(1)


def gnuplot(script, png):
    if os.path.exists(png):
        os.unlink(png)
    try:
        r = subprocess.run(["gnuplot"], input=script.encode(), capture_output=True)
    except FileNotFoundError:
        die("gnuplot is not installed: apt-get install gnuplot-nox (or make deps)")
    if r.returncode != 0 or not os.path.exists(png):
        die("gnuplot failed on %s:\n%s" % (png, r.stderr.decode()))
    with open(png, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            die(png + " is not a PNG")
    print("  " + png)


def block(name, rows):
    """A gnuplot datablock; the first column is a quoted label."""
    lines = ['"%s" %s' % (r[0], " ".join("%g" % v for v in r[1:])) for r in rows]
    return "$%s << EOD\n%s\nEOD\n" % (name, "\n".join(lines))


def wire(text, png, title, base="raw io_uring ping-pong", subj="memfed TcpChannel READ",
         base_short="raw io_uring", subj_short="memfed"):
    # "  raw io_uring ping-pong        1      18.2      30.1        50000       5.00"
    rows = {}
    for m in re.finditer(r"^  (%s|%s) +(\d+) +([\d.]+) +" % (re.escape(base), re.escape(subj)) +
                         r"([\d.]+) +([\d.]+) +([\d.]+)$", text, re.M):
        side = "raw" if m.group(1) == base else "memfed"
        rows[(int(m.group(2)), side)] = [float(m.group(i)) for i in range(3, 7)]
    depths = sorted({d for d, _ in rows})
    if not depths or any((d, s) not in rows for d in depths for s in ("raw", "memfed")):
        return False
    lat = [["depth %d" % d, rows[(d, "raw")][0], rows[(d, "memfed")][0], rows[(d, "raw")][1],
            rows[(d, "memfed")][1]] for d in depths]
    tput = [["depth %d" % d, rows[(d, "raw")][2] / 1e3, rows[(d, "memfed")][2] / 1e3] for d in depths]
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("lat", lat) + \
        block("tput", tput) + """
set multiplot layout 1,2 title "%s" font ",13"
set title "Latency of a 4 KiB READ (median run)"
set ylabel "latency (µs, log scale)"
set logscale y 10
set yrange [*:*]
set xlabel "requests in flight"
plot $lat using 2:xtic(1) title "%s p50" lc rgb "#88aacc", \\
     '' using 3 title "%s p50" lc rgb "#225588", \\
     '' using 4 title "%s p99" lc rgb "#ddbb88", \\
     '' using 5 title "%s p99" lc rgb "#aa6611"
set title "Throughput (median run)"
set ylabel "thousand 4 KiB pages per second (log scale)"
plot $tput using 2:xtic(1) title "%s" lc rgb "#88aacc", \\
     '' using 3 title "%s" lc rgb "#225588"
unset multiplot
""" % (title, base_short, subj_short, base_short, subj_short, base, subj)
    gnuplot(script, png)
    return True


def store(text, png, title):
    # "write_pages              1 pages  p50      12.0 us  p99      30.0 us     12.0 us/page  x0.50 ..."
    rows = {}
    for m in re.finditer(r"^(.+?) +(\d+) pages +p50 +([\d.]+) us +p99 +([\d.]+) us", text, re.M):
        rows[(m.group(1), int(m.group(2)))] = (float(m.group(3)), float(m.group(4)))
    pairs = [("write", "pwrite+fdatasync", "write_pages"), ("read", "memcpy from mapping", "read_pages")]
    data = []
    for what, base, ours in pairs:
        for pages in sorted({p for (n, p) in rows if n == ours}):
            if (base, pages) not in rows:
                return False
            data.append(["%s %d page%s" % (what, pages, "" if pages == 1 else "s"),
                         rows[(base, pages)][0], rows[(ours, pages)][0]])
    if not data:
        return False
    script = TERMINAL.format(h=650) + "set output '%s'\n" % png + BARS + block("d", data) + """
set title "%s"
set ylabel "p50 time per call (µs, log scale)"
set xlabel "operation and pages per call"
set logscale y 10
set yrange [*:*]
set key below horizontal
set bmargin 7
plot $d using 2:xtic(1) title "baseline: pwrite+fdatasync / memcpy" lc rgb "#88aacc", \\
     '' using 3 title "memfed store: write_pages / read_pages" lc rgb "#225588"
""" % title
    gnuplot(script, png)
    return True


def pager(text, png, title):
    # "   100 % off              30.1         50.2        0.150       1.10       0.50"
    rows = [(int(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4)), float(m.group(5)))
            for m in re.finditer(r"^ *(\d+) % (on|off) +([\d.]+) +([\d.]+) +([\d.]+) +[\d.]+ +[\d.]+$",
                                 text, re.M)]
    la = re.search(r"^limit \(a\).*p50 +([\d.]+) us", text, re.M)
    lb = re.search(r"^limit \(b\).*?([\d.]+) GB/s", text, re.M)
    if not rows or not la or not lb:
        return False
    budgets = sorted({r[0] for r in rows}, reverse=True)
    get = {(r[0], r[1]): r for r in rows}
    nan = float("nan")
    rand = [["%d %%" % b, get.get((b, "off"), (0, 0, nan))[2], get.get((b, "on"), (0, 0, nan))[2]]
            for b in budgets]
    scan = [["%d %%" % b, get.get((b, "off"), (0, 0, 0, 0, nan))[4],
             get.get((b, "on"), (0, 0, 0, 0, nan))[4]] for b in budgets]
    hist = [("[%d,%d)" % (int(m.group(1)), int(m.group(2))), int(m.group(3)))
            for m in re.finditer(r"\[(\d+),(\d+)\):(\d+)", text)]
    panels = 3 if hist else 2
    script = TERMINAL.format(h=450 * panels) + "set output '%s'\n" % png + BARS + \
        block("rand", rand) + block("scan", scan)
    script += """
set multiplot layout %d,1 title "%s" font ",13"
set title "Random demand faults: p50 latency"
set xlabel "local-memory budget (share of the region)"
set ylabel "p50 fault latency (µs)"
plot $rand using 2:xtic(1) title "memfed, prefetch off" lc rgb "#88aacc", \\
     '' using 3 title "memfed, prefetch on" lc rgb "#225588", \\
     %s with lines lw 2 dt 2 lc rgb "#aa3322" title "limit (a): raw uffd miss + one io_uring fetch"
set title "Sequential scan: throughput"
set ylabel "scan throughput (GB/s)"
plot $scan using 2:xtic(1) title "memfed, prefetch off" lc rgb "#88aacc", \\
     '' using 3 title "memfed, prefetch on" lc rgb "#225588", \\
     %s with lines lw 2 dt 2 lc rgb "#aa3322" title "limit (b): raw, 128 pages pipelined per miss"
""" % (panels, title, la.group(1), lb.group(1))
    if hist:
        script += block("hist", [[h[0], h[1]] for h in hist]) + """
set title "The pager's demand-fetch latency over the whole run (memfedctl stats buckets)"
set xlabel "latency bucket (µs)"
set ylabel "demand fetches (log scale)"
set logscale y 10
set yrange [0.8:*]
set xtics rotate by -45
set bmargin 8
plot $hist using 2:xtic(1) notitle lc rgb "#225588"
"""
    script += "unset multiplot\n"
    gnuplot(script, png)
    return True


def swap(text, png, title):
    # "sort      115M     13.93     43.23     45.92        0.94x        0/2       2/2       2/2"
    nan = float("nan")
    num = lambda v: nan if v == "-" else float(v)
    rows = [["%s %s" % (m.group(1), m.group(2)), num(m.group(3)), num(m.group(4)), num(m.group(5))]
            for m in re.finditer(r"^(\w+) +(\d+M) +([\d.]+|-) +([\d.]+|-) +([\d.]+|-) +\S+ +\S+ +\S+ +\S+$",
                                 text, re.M)]
    if not rows:
        return False
    kind = re.search(r"^swap: kernel swap is (.*?);", text, re.M)
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s\\nkernel swap: %s (no bar: every run OOM-killed or wrong)"
set ylabel "seconds (median run)"
set xlabel "program and memory limit (1/3 and 1/6 of its native footprint)"
plot $t using 2:xtic(1) title "native, no limit" lc rgb "#bbbbbb", \\
     '' using 3 title "memfedctl run --heap-budget LIMIT" lc rgb "#225588", \\
     '' using 4 title "memory cgroup at LIMIT, kernel swap" lc rgb "#aa6611"
""" % (title, kind.group(1) if kind else "?")
    gnuplot(script, png)
    return True


def mesh_hops(text, png, title):
    # "   1    18.8 us      109.0 us   5.80x   MISSED     95.1 us     38.0 us   1.15x ..."
    # (hops, raw, memfed, ratio, target, uffd, wire, ...)
    rows = [[m.group(1), float(m.group(2)), float(m.group(4)), float(m.group(5)),
             float(m.group(3))]
            for m in re.finditer(r"^ +(\d) +([\d.]+) us +([\d.]+) us +[\d.]+x +\S+ +([\d.]+) us"
                                 r" +([\d.]+) us", text, re.M)]
    if not rows:
        return False
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s"
set ylabel "p50 latency, us (median of rounds)"
set xlabel "hops from the pager node to the module"
plot $t using 2:xtic(1) title "raw: 64 B request, 4 KiB answer, plain TCP" lc rgb "#bbbbbb", \\
     '' using 3 title "raw fetch serving a userfaultfd miss (no memfed code)" lc rgb "#777777", \\
     '' using 4 title "memfed wire READ, TLS 1.3" lc rgb "#aa6611", \\
     '' using 5 title "memfed demand fault (userfaultfd + pager + wire)" lc rgb "#225588"
""" % title
    gnuplot(script, png)
    return True


def mesh_qos(text, png, title):
    # "    on      812 us     1403 us      897 us      1335 us      0.95x      met  1.23 MB/s"
    rows = [[m.group(1), float(m.group(2)), float(m.group(3))]
            for m in re.finditer(r"^ *(on|off|fifo1) +[\d.]+ us +([\d.]+) us +[\d.]+ us +([\d.]+) us",
                                 text, re.M)]
    if not rows:
        return False
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s"
set ylabel "demand-fault p99, us (median of rounds; log)"
set logscale y
set xlabel "memfedd's DSCP priority qdisc on the 3 shaped hops"
plot $t using 2:xtic(1) title "idle" lc rgb "#bbbbbb", \\
     '' using 3 title "during a write-back storm" lc rgb "#225588"
""" % title
    gnuplot(script, png)
    return True


def car(text, png, title):
    # "100 ms      6      1906       0      0        0     1400.3 ms          2     159 us"
    rows = {}
    for m in re.finditer(r"^ *(\d+) ms +(\d+) +(\d+) +(\d+) +\d+ +\d+ +([\d.]+) ms", text, re.M):
        rows.setdefault(int(m.group(1)), []).append(
            [m.group(2), float(m.group(3)), float(m.group(5)), float(m.group(4))])
    if not rows:
        return False
    data = "".join(block("h%d" % h, r) for h, r in rows.items())
    colors = ["#bbbbbb", "#225588", "#aa6611", "#448844"]
    plots = lambda col: ", \\\n     ".join(
        "$h%d using 0:%d:xtic(1) with linespoints lw 2 pt 7 lc rgb '%s' title 'babel hello %d ms'"
        % (h, col, colors[i % len(colors)], h) for i, h in enumerate(rows))
    failed = sum(r[3] for rs in rows.values() for r in rs)
    script = TERMINAL.format(h=900) + "set output '%s'\n" % png + data + """
set multiplot layout 2,1 title "%s\\nfailed reads (wrong or unavailable) in all runs: %d"
set grid
set key top right
set xlabel "car speed, km/h"
set ylabel "good reads/s"
set yrange [0:*]
plot %s
set ylabel "worst stall, ms (log)"
set logscale y
set yrange [*:*]
plot %s
unset multiplot
""" % (title, failed, plots(2), plots(3))
    gnuplot(script, png)
    return True


def mesh_scale(text, png, title):
    # "100 ms     12.3 s    63    63    63   120   130   140        0.50 %        32.0 %"
    rows = [["hello %s ms" % m.group(1), float(m.group(4)), float(m.group(2))]
            for m in re.finditer(r"^ *(\d+) ms +([\d.]+) s +(?:\d+ +){6}([\d.]+) % +([\d.]+) %$",
                                 text, re.M)]
    if not rows:
        return False
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s"
set ylabel "CPU of all babelds, %% of one vCPU / seconds"
plot $t using 2:xtic(1) title "CPU of all 64 babelds at rest (%% of one vCPU)" lc rgb "#225588", \\
     '' using 3 title "seconds until every node routes to all others" lc rgb "#bbbbbb"
""" % title
    gnuplot(script, png)
    return True


def stream_scan(text, png, title):
    # "  run 1: memfed 0.512 GB/s, umap-64K 0.910 GB/s, ratio 0.56; local
    # module 1.914 GB/s, ratio 1.45"; without a peer only the row
    # "  64 MiB on   ...   0.512   ..." is there.
    rows = [["run %s" % m.group(1), float(m.group(2)), float(m.group(4)),
             float(m.group(5) or 0)]
            for m in re.finditer(r"^  run (\d+): memfed ([\d.]+) GB/s, (\S+) ([\d.]+) GB/s"
                                 r"(?:, ratio [\d.]+; local module ([\d.]+) GB/s)?", text, re.M)]
    peer = re.search(r"^  run \d+: memfed [\d.]+ GB/s, (\S+)", text, re.M)
    if not rows:
        m = re.search(r"^ *\d+ MiB on +[\d.na-]+ +[\d.na-]+ +([\d.]+)", text, re.M)
        if not m:
            return False
        rows = [["median", float(m.group(1)), 0, 0]]
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s"
set ylabel "scan GB/s (one read per 4 KiB page)"
plot $t using 2:xtic(1) title "memfed (pager + module over loopback TCP, TLS 1.3)" lc rgb "#225588", \\
     '' using 4 title "memfed, module local (one memfedd, module,pager)" lc rgb "#77aadd", \\
     '' using 3 title "%s" lc rgb "#bbbbbb"
""" % (title, peer.group(1) + " on a tmpfs file" if peer else "umap: not built (skipped)")
    gnuplot(script, png)
    return True


def stream_lazy(text, png, title):
    # "  memfed loopback: 0.61 0.60", "  memfed local:    0.20 0.21" and
    # "  criu:            0.40 0.41" (or "skipped"), one figure per run.
    def runs(label):
        m = re.search(r"^  %s: +([\d. ]+|skipped)$" % label, text, re.M)
        if not m:
            return None
        return [] if m.group(1) == "skipped" else [float(x) for x in m.group(1).split()]
    lo, lc, cr = runs("memfed loopback"), runs("memfed local"), runs("criu")
    if not lo or lc is None or cr is None:
        return False
    at = lambda v, i: v[i] if i < len(v) else 0
    rows = [["run %d" % (i + 1), lo[i], at(lc, i), at(cr, i)] for i in range(len(lo))]
    script = TERMINAL.format(h=600) + "set output '%s'\n" % png + BARS + block("t", rows) + """
set title "%s"
set ylabel "seconds from start to checksum done"
plot $t using 2:xtic(1) title "memfed: memfedctl run --map, pager + module over loopback TCP (TLS 1.3)" lc rgb "#225588", \\
     '' using 3 title "memfed: module local (one memfedd, module,pager)" lc rgb "#77aadd", \\
     '' using 4 title "CRIU 4.2: restore --lazy-pages from its page server%s" lc rgb "#bbbbbb"
""" % (title, "" if cr else " (not built: skipped)")
    gnuplot(script, png)
    return True


SECTIONS = [
    ("wire", wire, "Wire: 4 KiB READ, module and client on one vCPU (memfed vs raw io_uring)"),
    ("wire-2cpu", wire, "Wire: 4 KiB READ, module on vCPU 1, client on vCPU 0 (as on two nodes)"),
    ("wire-tls", lambda t, p, ti: wire(t, p, ti, "memfed plaintext READ", "memfed TLS 1.3 READ",
                                       "plaintext", "TLS 1.3"),
     "Wire: 4 KiB READ over TLS 1.3 vs plaintext, module and client on one vCPU"),
    ("wire-tls-2cpu", lambda t, p, ti: wire(t, p, ti, "memfed plaintext READ", "memfed TLS 1.3 READ",
                                            "plaintext", "TLS 1.3"),
     "Wire: 4 KiB READ over TLS 1.3 vs plaintext, module on vCPU 1, client on vCPU 0"),
    ("store", store, "Store: the module's pool vs pwrite+fdatasync and memcpy"),
    ("pager", pager, "Pager: demand faults and scans through memfedd vs raw userfaultfd limits"),
    ("swap", swap, "Real programs under a memory limit: memfed vs the kernel's swap"),
    ("mesh-hops", mesh_hops, "Mesh: a 4 KiB demand fault at k hops vs raw TCP over the same hops"),
    ("mesh-qos", mesh_qos, "Mesh: demand-fault p99 over 3 shaped hops, idle and under a write-back storm"),
    ("mesh-scale", mesh_scale, "Mesh at 64 nodes (8 x 8 grid): babeld's CPU and convergence"),
    ("stream-scan", stream_scan, "Streaming: a 1 GiB scan at a 64 MiB budget, memfed vs LLNL umap (64 KiB pages)"),
    ("stream-lazy", stream_lazy, "Streaming: a 256 MiB lazy load plus checksum, memfed vs CRIU lazy-pages restore"),
    ("car", car, "Mobility: a car reading obstacle records from the lamp posts it drives past"),
]


def main():
    if len(sys.argv) != 2:
        die("usage: bench_plot.py DIR (holding bench.sh's <section>.txt tables)")
    d = sys.argv[1]
    for name, draw, title in SECTIONS:
        txt = os.path.join(d, name + ".txt")
        if not os.path.exists(txt):
            print("  (no %s: section not run)" % txt)
            continue
        if not draw(open(txt).read(), os.path.join(d, name + ".png"), title):
            die("%s: no table found that this script can read; update scripts/bench_plot.py "
                "to the benchmark's output" % txt)


if __name__ == "__main__":
    main()
