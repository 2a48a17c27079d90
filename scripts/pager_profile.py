#!/usr/bin/env python3
"""Tables for scripts/pager_profile.sh: instructions per fault and per
eviction of the pager daemon, by where they go, from the callgrind dumps of
each phase; syscalls per phase from the strace runs when there are any.

Usage: pager_profile.py OUT BUILD_DIR ...  (OUT as pager_profile.sh left it)
"""
import glob
import os
import re
import subprocess
import sys
from collections import Counter

PHASES = ["fault", "evict-read", "evict-write"]

# Where an instruction goes, by the function it is in (its own cost, not
# its callees'); the first match wins.
ALLOC = re.compile(r"\b(malloc|free|calloc|realloc|_int_malloc|_int_free|_int_realloc|"
                   r"malloc_consolidate|tcache_\w+|operator new|operator delete|cfree|"
                   r"unlink_chunk|alloc_perturb|sysmalloc)\b")
LOCK = re.compile(r"pthread_mutex|__lll_|pthread_cond|pthread_spin|pthread_rwlock|"
                  r"__futex|futex_|std::mutex|pthread_once")
COPY = re.compile(r"mem(cpy|move|set|cmp)|__memcpy|__memmove|__memset|__memcmp|strlen")
SYSCALL = re.compile(r"^(ioctl|read|write|readv|writev|recv|send|recvmsg|sendmsg|recvfrom|"
                     r"sendto|syscall|poll|ppoll|epoll_\w+|process_vm_readv|madvise|"
                     r"clock_gettime|__clock_gettime|__GI___\w+|__libc_\w+|"
                     r"io_uring_\w+|__sys_io_uring_\w+|pread64|pwrite64|close|open|"
                     r"openat|fstat|eventfd_\w+|timerfd_\w+|__internal_syscall_cancel|"
                     r"__syscall_cancel\w*)$")


def bucket(fn, obj):
    base = os.path.basename(obj)
    name = fn.split("'")[0]
    if "valgrind_shim" in base:
        return "profiler shim"
    if "libssl" in base or "libcrypto" in base or "gnutls" in base:
        return "TLS (libssl/libcrypto)"
    if "crc32" in name.lower() or "libisal" in base:
        return "crc32c"
    if ALLOC.search(name):
        return "allocation (malloc/new/free)"
    if LOCK.search(name):
        return "locks"
    if "liburing" in base or SYSCALL.match(name.split("(")[0].strip()):
        return "syscall and io_uring wrappers (user side)"
    if COPY.search(name):
        return "memcpy/memset"
    if "nlohmann" in name or "json" in name.lower():
        return "JSON (control and stats)"
    if "memfedd" in base:
        return "memfed code"
    if "libstdc++" in base:
        return "libstdc++ (other)"
    if "libc" in base or "ld-linux" in base:
        return "libc (other)"
    if "vgpreload" in base or "valgrind" in base:
        return "valgrind preload"
    return "other"


def self_costs(path):
    """Self cost (Ir) of each (function, object) in a callgrind file: the
    cost lines under fn=, not those following a calls= line (a callee's
    inclusive cost). callgrind_annotate 3.19 prints inclusive figures even
    with --inclusive=no for dumps taken by callgrind_control."""
    names = {"ob": {}, "fn": {}}
    costs = Counter()
    total = 0
    ob = fn = ""
    skip_next = False

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("summary:"):
                total = int(line.split()[1])
            elif line.startswith("ob="):
                ob = name("ob", line[3:])
            elif line.startswith("fn="):
                fn = name("fn", line[3:])
            elif line.startswith(("cob=", "cfn=")):
                # register the name only: the caller's ob/fn stay current
                name(line[1:3], line[4:])
            elif line.startswith("calls="):
                skip_next = True
            elif line[0].isdigit() or line[0] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    costs[(fn, ob)] += int(parts[-1])
    return total, costs


def phase_counts(path):
    rows = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if p and p[0] in PHASES and len(p) == 9:
                rows[p[0]] = dict(faults=int(p[1]), wp=int(p[2]), fetches=int(p[3]),
                                  evictions=int(p[4]), writebacks=int(p[5]),
                                  wall=float(p[6]), start=float(p[7]), end=float(p[8]))
    return rows


def strace_counts(path, phases):
    counts = {ph: Counter() for ph in phases}
    line_re = re.compile(r"^\d+\s+(\d+\.\d+)\s+(?:<\.\.\.\s+)?(\w+)")
    with open(path) as f:
        for line in f:
            if "resumed>" in line:
                continue
            m = line_re.match(line)
            if not m:
                continue
            t = float(m.group(1))
            for ph, c in phases.items():
                if c["start"] <= t <= c["end"]:
                    counts[ph][m.group(2)] += 1
    return counts


def fmt(x):
    return f"{x:,.0f}"


def main():
    out, builds = sys.argv[1], sys.argv[2:]
    per_fault_of = {}
    report = []
    for i, build in enumerate(builds, 1):
        name = f"b{i}"
        counts = phase_counts(os.path.join(out, name + ".phases"))
        # --separate-threads=yes: NAME.callgrind.PID.DUMP-THREAD, one file
        # per thread of each dump.
        dumps = {}
        for p in glob.glob(os.path.join(out, name + ".callgrind.*.*-*")):
            dump = int(p.rsplit(".", 1)[1].split("-")[0])
            dumps.setdefault(dump, []).append(p)
        dumps = [dumps[k] for k in sorted(dumps)]
        report.append(f"\n## {name}: {build}\n")
        report.append("| phase | faults | wp faults | evictions | write-backs | Ir total "
                      "| Ir per fault | Ir per eviction | control socket Ir (left out) |")
        report.append("|---|---|---|---|---|---|---|---|---|")
        split = {}
        for ph, dump in zip(PHASES, dumps):
            c = counts.get(ph)
            if c is None:
                continue
            # The threads of the control socket serve only the stats calls
            # that wait for the pager to settle: left out.
            total, costs, control = 0, Counter(), 0
            for part in dump:
                t, c_ = self_costs(part)
                if any("control::Server" in fn for fn, _ in c_):
                    control += t
                    continue
                total += t
                costs.update(c_)
            b = Counter()
            for (fn, obj), ir in costs.items():
                b[bucket(fn, obj)] += ir
            with open(os.path.join(out, f"{name}.{ph}.self.txt"), "w") as f:
                for (fn, obj), ir in costs.most_common(60):
                    f.write(f"{ir / max(c['faults'], 1):10.0f}  {fn[:150]}  [{os.path.basename(obj)}]\n")
            split[ph] = (total, b)
            faults = max(c["faults"], 1)
            per_fault = total / faults
            per_evict = ""
            if ph == "fault":
                per_fault_of[name] = per_fault
            elif c["evictions"]:
                # What the phase cost beyond its faults, at the fault phase's
                # cost per fault, spread over its evictions.
                pf = per_fault_of.get(name, 0)
                per_evict = fmt((total - pf * c["faults"]) / c["evictions"])
            report.append(f"| {ph} | {c['faults']} | {c['wp']} | {c['evictions']} | "
                          f"{c['writebacks']} | {fmt(total)} | {fmt(per_fault)} | {per_evict} | {fmt(control)} |")
            with open(os.path.join(out, f"{name}.{ph}.inclusive.txt"), "w") as f:
                for part in dump:
                    f.write(subprocess.run(["callgrind_annotate", "--inclusive=yes", part],
                                           capture_output=True, text=True).stdout)
        report.append("\nInstructions per fault of each phase, by where they go "
                      "(self cost of the functions):\n")
        cats = sorted({k for _, b in split.values() for k in b},
                      key=lambda k: -sum(b.get(k, 0) for _, b in split.values()))
        report.append("| where | " + " | ".join(p for p in PHASES if p in split) + " |")
        report.append("|---|" + "---|" * len(split))
        for k in cats:
            cells = []
            for ph in PHASES:
                if ph in split:
                    faults = max(counts[ph]["faults"], 1)
                    cells.append(fmt(split[ph][1].get(k, 0) / faults))
            report.append(f"| {k} | " + " | ".join(cells) + " |")
        st = os.path.join(out, name + ".strace")
        sp = os.path.join(out, name + ".strace-phases")
        if os.path.exists(st) and os.path.exists(sp):
            sc = phase_counts(sp)
            per = strace_counts(st, sc)
            report.append("\nSyscalls of the pager daemon per fault (strace -f; io_uring "
                          "operations are not syscalls and not counted):\n")
            names = sorted({n for c in per.values() for n in c},
                           key=lambda n: -sum(c[n] for c in per.values()))
            report.append("| syscall | " + " | ".join(sc) + " |")
            report.append("|---|" + "---|" * len(sc))
            for n in names[:15]:
                report.append(f"| {n} | " + " | ".join(
                    f"{per[ph][n] / max(sc[ph]['faults'], 1):.2f}" for ph in sc) + " |")
            report.append("| all | " + " | ".join(
                f"{sum(per[ph].values()) / max(sc[ph]['faults'], 1):.2f}" for ph in sc) + " |")
    text = "\n".join(report) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
