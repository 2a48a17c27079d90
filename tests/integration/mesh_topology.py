#!/usr/bin/python3
"""The mesh topology tests' two halves that are easier in python than in sh.

  mesh_topology.py grid N             the links of an N x N grid
  mesh_topology.py random N SEED      the links of a connected random graph
  mesh_topology.py check DIR          checks a snapshot of the mesh's routes
  mesh_topology.py same DIR1 DIR2     whether two snapshots hold the same routes

A topology is printed one link a line, "a b", with nodes named n1..nK; the
random one is a random tree (every node joins one of the nodes before it, so
the graph is connected) plus about N/3 extra links, each node keeping at most
four, from SEED so that a failure can be replayed.

`check DIR` reads a snapshot the test took of every node, and fails naming
the first thing that is wrong:
  DIR/modules           "NODE MODULE_ID ADDRESS" for each module
  DIR/links             the topology, as printed above
  DIR/NODE.kernel       `ip -6 route show proto babel` in NODE's namespace
  DIR/NODE.routes.json  `memfedctl -j route ls` on NODE
It asserts, for every node and every module not on that node:
  - the kernel has a route to the module's address (every module reachable);
  - following the kernel's next hops from node to node, through the
    interface each route names, reaches the module's node without visiting
    any node twice (loop-free), over links the topology has;
  - `memfedctl route ls` names the same interface and next hop as the
    kernel, and the number of hops the walk took (hops are measured by
    memfedd, so this checks the measurement).
"""
import ipaddress
import json
import os
import random
import sys


def grid(n):
    name = lambda r, c: "n%d" % (r * n + c + 1)
    for r in range(n):
        for c in range(n):
            if c + 1 < n:
                print(name(r, c), name(r, c + 1))
            if r + 1 < n:
                print(name(r, c), name(r + 1, c))


def random_graph(n, seed):
    rng = random.Random(seed)
    degree = [0] * (n + 1)
    links = set()

    def add(a, b):
        links.add((min(a, b), max(a, b)))
        degree[a] += 1
        degree[b] += 1

    for i in range(2, n + 1):
        choices = [j for j in range(1, i) if degree[j] < 4] or list(range(1, i))
        add(i, rng.choice(choices))
    extra, tries = n // 3, 0
    while extra > 0 and tries < 1000:
        tries += 1
        a, b = rng.sample(range(1, n + 1), 2)
        if (min(a, b), max(a, b)) in links or degree[a] >= 4 or degree[b] >= 4:
            continue
        add(a, b)
        extra -= 1
    for a, b in sorted(links):
        print("n%d n%d" % (a, b))


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def kernel_routes(path):
    """{address: (interface, next hop)} from `ip -6 route show` lines."""
    routes = {}
    for line in open(path):
        words = line.split()
        if not words:
            continue
        dest = words[0].split("/")[0]
        via = words[words.index("via") + 1] if "via" in words else None
        dev = words[words.index("dev") + 1] if "dev" in words else None
        if via is None or dev is None:
            fail("%s: a babel route without 'via' or 'dev': %s" % (path, line.strip()))
        routes[str(ipaddress.ip_address(dest))] = (dev, str(ipaddress.ip_address(via)))
    return routes


def check(snap):
    modules = [l.split() for l in open(os.path.join(snap, "modules")) if l.strip()]
    links = set()
    nodes = set()
    for line in open(os.path.join(snap, "links")):
        a, b = line.split()
        links.add((a, b))
        links.add((b, a))
        nodes.update((a, b))
    kernel = {n: kernel_routes(os.path.join(snap, n + ".kernel")) for n in nodes}
    walks = 0
    for node in sorted(nodes):
        listed = json.load(open(os.path.join(snap, node + ".routes.json")))["routes"]
        by_dest = {r["dest"]: r for r in listed}
        for home, module, address in modules:
            if home == node:
                continue
            address = str(ipaddress.ip_address(address))
            # Walk the kernel's next hops from `node` to the module's node.
            path, at = [node], node
            while at != home:
                route = kernel[at].get(address)
                if route is None:
                    fail("%s has no kernel route to %s (%s) on the way %s" %
                         (at, module, address, " -> ".join(path)))
                dev = route[0]
                if "-" not in dev or dev.split("-")[0] != at:
                    fail("%s routes %s over '%s', not one of its mesh links" % (at, address, dev))
                nxt = dev.split("-", 1)[1]
                if (at, nxt) not in links:
                    fail("%s routes %s over %s, a link the topology does not have" % (at, address, dev))
                if nxt in path:
                    fail("routing loop towards %s (%s): %s -> %s" %
                         (module, address, " -> ".join(path), nxt))
                path.append(nxt)
                at = nxt
            walks += 1
            hops = len(path) - 1
            r = by_dest.get(module)
            if r is None:
                fail("%s: memfedctl route ls has no route to %s; the kernel has %s" %
                     (node, module, kernel[node][address]))
            dev, via = kernel[node][address]
            if r["interface"] != dev or str(ipaddress.ip_address(r["next_hop"])) != via:
                fail("%s: memfedctl route ls has %s via %s on %s, the kernel %s on %s" %
                     (node, module, r["next_hop"], r["interface"], via, dev))
            if r["hops"] != hops:
                fail("%s: memfedctl route ls says %s is %d hops away; the kernel's path %s is %d" %
                     (node, module, r["hops"], " -> ".join(path), hops))
    print("%d routes walked, loop-free, each equal in the kernel and in memfedctl route ls" % walks)


def same(a, b):
    """Exits 1 naming the first node whose routes differ (ages aside)."""
    nodes = sorted(f[:-len(".kernel")] for f in os.listdir(a) if f.endswith(".kernel"))
    for node in nodes:
        ka, kb = (kernel_routes(os.path.join(d, node + ".kernel")) for d in (a, b))
        if ka != kb:
            print("%s's kernel routes changed: %s -> %s" %
                  (node, sorted(set(ka.items()) - set(kb.items())),
                   sorted(set(kb.items()) - set(ka.items()))))
            sys.exit(1)
        la, lb = (set((r["dest"], r["next_hop"], r["interface"], r["hops"])
                      for r in json.load(open(os.path.join(d, node + ".routes.json")))["routes"])
                  for d in (a, b))
        if la != lb:
            print("%s's memfedctl route ls changed: %s -> %s" %
                  (node, sorted(la - lb), sorted(lb - la)))
            sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "grid":
        grid(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "random":
        random_graph(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "same":
        same(sys.argv[2], sys.argv[3])
    else:
        fail("usage: mesh_topology.py grid N | random N SEED | check DIR | same DIR1 DIR2")
