#!/usr/bin/env python3
"""Keeps the library's man pages and memfed.h from drifting apart.

Usage: man_pages_test.py SOURCE_DIR

Every function memfed.h declares has a page doc/man/<function>.3.scd whose
SYNOPSIS holds its exact prototype and which libmemfed(3) lists under
FUNCTIONS; every
section-3 page names a function that exists; the pages name only errno values
of the C API's convention; and each page builds with scdoc (and renders with
groff) without a warning. Exit 0 when all of that holds.
"""
import os
import re
import shutil
import subprocess
import sys

# The errno values of the C API's convention (memfed.h, libmemfed(3)).
CONVENTION = {"EINVAL", "ENOENT", "EEXIST", "ENOSPC", "EACCES", "EBADMSG", "EIO",
              "EBUSY", "ECONNREFUSED", "EPROTO", "ERANGE", "EDQUOT", "ENOTRECOVERABLE"}
# Named in libmemfed(3) as values that are NOT returned, or as kernel names.
MENTIONED_ONLY = {"EPERM", "EUCLEAN", "EFSBADCRC"}


def normalise(text):
    """One space between tokens, none inside parentheses' edges."""
    text = " ".join(text.split())
    return re.sub(r"\s+\)", ")", re.sub(r"\(\s+", "(", text))


def declared_functions(header):
    """{name: prototype} of every MEMFED_API function, whitespace-normalised."""
    src = open(header).read()
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    found = {}
    for m in re.finditer(r"MEMFED_API\s+([^;]*?)\b(memfed_\w+)\s*\(([^;]*?)\)\s*;", src, re.S):
        found[m.group(2)] = normalise(m.group(1) + m.group(2) + "(" + m.group(3) + ");")
    return found


def section(page, name):
    m = re.search(r"^# " + name + r"\n(.*?)(?=^# |\Z)", page, re.S | re.M)
    return m.group(1) if m else None


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    header = os.path.join(src, "libclient", "include", "memfed.h")
    man = os.path.join(src, "doc", "man")
    problems = []

    functions = declared_functions(header)
    if len(functions) < 10:
        problems.append(f"{header}: found only {len(functions)} MEMFED_API functions; "
                        "has the declaration style changed? (update this test's pattern)")
    pages = {f[:-len(".3.scd")] for f in os.listdir(man) if f.endswith(".3.scd")}

    for fn in sorted(set(functions) - pages):
        problems.append(f"{fn}() is declared in memfed.h but has no page: "
                        f"write doc/man/{fn}.3.scd")
    for name in sorted(pages - set(functions) - {"libmemfed"}):
        problems.append(f"doc/man/{name}.3.scd names no function of memfed.h: "
                        "remove the page or declare the function")
    if "libmemfed" not in pages:
        problems.append("doc/man/libmemfed.3.scd, the overview page, is missing")

    for name in sorted(pages):
        path = os.path.join(man, name + ".3.scd")
        text = open(path).read()
        first = text.split("\n", 1)[0]
        if not first.startswith(name + "(3)"):
            problems.append(f"{path}: the first line must be '{name}(3) ...', not '{first}'")
        for sec in ("NAME", "SYNOPSIS", "DESCRIPTION") + (
                ("RETURN VALUE", "ERRORS", "SEE ALSO") if name != "libmemfed" else ()):
            if section(text, sec) is None:
                problems.append(f"{path}: no '# {sec}' section")
        name_sec = section(text, "NAME") or ""
        if not normalise(name_sec).startswith(name + " - "):
            problems.append(f"{path}: NAME must start with '{name} - '")
        if name in functions:
            synopsis = normalise(section(text, "SYNOPSIS") or "")
            if functions[name] not in synopsis:
                problems.append(f"{path}: SYNOPSIS lacks the prototype of memfed.h:\n"
                                f"    {functions[name]}")
            if "#include <memfed.h>" not in synopsis:
                problems.append(f"{path}: SYNOPSIS lacks #include <memfed.h>")
        for e in sorted(set(re.findall(r"-(E[A-Z]+)\b", text))):
            if e not in CONVENTION and not (name == "libmemfed" and e in MENTIONED_ONLY):
                problems.append(f"{path}: -{e} is not one of the C API's errno values "
                                f"({', '.join(sorted(CONVENTION))})")

    overview = open(os.path.join(man, "libmemfed.3.scd")).read() if "libmemfed" in pages else ""
    listed = section(overview, "FUNCTIONS") or ""
    for fn in sorted(functions):
        if f"*{fn}*(3)" not in listed:
            problems.append(f"libmemfed(3) does not list *{fn}*(3) in its FUNCTIONS section")

    scdoc, groff = shutil.which("scdoc"), shutil.which("groff")
    if not scdoc:
        print("SKIPPED PART: scdoc is not installed, so the pages' build was not checked "
              "(apt-get install scdoc)", file=sys.stderr)
    for name in sorted(pages) if scdoc else []:
        path = os.path.join(man, name + ".3.scd")
        with open(path, "rb") as f:
            r = subprocess.run([scdoc], stdin=f, capture_output=True)
        if r.returncode != 0 or r.stderr:
            problems.append(f"{path}: scdoc failed: {r.stderr.decode().strip()}")
            continue
        if groff:
            g = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=r.stdout,
                               capture_output=True)
            if g.returncode != 0 or g.stderr:
                problems.append(f"{path}: groff warns: {g.stderr.decode().strip()}")
    if scdoc and not groff:
        print("SKIPPED PART: groff is not installed, so the pages' rendering was not checked",
              file=sys.stderr)

    for p in problems:
        print("FAIL " + p)
    if problems:
        return 1
    print(f"ok: {len(functions)} functions of memfed.h, each with its page; "
          f"{len(pages)} section-3 pages" + (", all built with scdoc" if scdoc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
