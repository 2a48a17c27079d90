#!/usr/bin/env python3
"""A hostile client and a tampering relay for memfed's trust tests.

  wire_raw.py hostile HOST PORT OUT
      Speaks memfed's wire protocol in plaintext, as an unauthenticated
      client would: a version-2 HELLO (before authentication existed), a
      version-3 HELLO (before replicated regions), a version-4 HELLO
      (before sequenced writes), a version-5 (current) HELLO followed by
      READs without TLS, and READs with no HELLO at all. Every byte the module sends back is appended to OUT; one line
      per attempt on stdout says how the module answered.

  wire_raw.py relay LISTEN_PORT UP_HOST UP_PORT [--flip-at N] [--listen HOST]
      A TCP relay: forwards every connection to UP_HOST:UP_PORT. With
      --flip-at N, the first connection gets one bit flipped in byte N of
      what the module sends back (a man in the middle); later connections
      pass untouched. Prints "listening" once ready and "flipped" when done.
"""
import socket
import struct
import sys
import threading

MAGIC = 0x3157464D  # "MFW1"
HELLO, READ, REGION_LIST = 1, 2, 7


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_T = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def message(version, mtype, payload=b"", offset=0, count=0, region=0, req=1):
    """A request: the 64-byte header (protocol.h) and its payload."""
    pcrc = crc32c(payload) if payload else 0
    head = struct.pack("<IBBBBHHIQQQQIII", MAGIC, version, mtype, 1, 16, 0, 0,
                       len(payload), 0x020000000099, 0, req, offset, count,
                       region, pcrc)
    return head + struct.pack("<I", crc32c(head)) + payload


def hello(version):
    return message(version, HELLO, struct.pack("<HHI", version, version, 0))


def recv_message(s):
    """One response (header, payload), or None at EOF/timeout/garbage."""
    def recv_n(n):
        buf = b""
        while len(buf) < n:
            part = s.recv(n - len(buf))
            if not part:
                raise EOFError
            buf += part
        return buf
    try:
        head = recv_n(64)
        (magic,) = struct.unpack_from("<I", head, 0)
        (plen,) = struct.unpack_from("<I", head, 12)
        if magic != MAGIC or plen > (1 << 20):
            return head, b""
        return head, recv_n(plen)
    except (EOFError, OSError):
        return None


def attempt(host, port, version, out, label):
    """HELLO (unless version is None), REGION_LIST, then READs of every
    region listed (or of guessed ones): what an attacker would try."""
    got = []
    try:
        s = socket.create_connection((host, port), timeout=3)
    except OSError as e:
        print(f"{label}: connect failed: {e}")
        return
    s.settimeout(2.0)
    v = version or 2
    try:
        if version is not None:
            s.sendall(hello(version))
            r = recv_message(s)
            if r is None:
                print(f"{label}: closed without answering the HELLO")
                return
            got.append(r[0] + r[1])
            (status,) = struct.unpack_from("<H", r[0], 10)
            text = r[1].decode("utf-8", "replace") if status else ""
            print(f"{label}: HELLO answered, status={status}; message={text!r}")
        s.sendall(message(v, REGION_LIST, req=2))
        regions = []
        r = recv_message(s)
        if r is not None:
            got.append(r[0] + r[1])
            (status,) = struct.unpack_from("<H", r[0], 10)
            if status == 0 and len(r[1]) >= 4:
                (n,) = struct.unpack_from("<I", r[1], 0)
                for i in range(n):
                    e = r[1][4 + 128 * i: 4 + 128 * (i + 1)]  # WireRegion
                    if len(e) < 128:
                        break
                    rid = struct.unpack_from("<I", e, 0)[0]
                    fa, size = struct.unpack_from("<QQ", e, 80)
                    regions.append((rid, fa, size))
        print(f"{label}: REGION_LIST gave {len(regions)} regions")
        if not regions:  # guess: the first region slots, the start of the pool
            regions = [(2048 + i, 0x100000 + 0x40000 * i, 65536) for i in range(4)]
        req = 10
        for rid, fa, size in regions:
            for page in range(min(size // 4096, 16)):
                s.sendall(message(v, READ, offset=fa + page * 4096, count=1,
                                  region=rid, req=req))
                req += 1
                r = recv_message(s)
                if r is None:
                    raise EOFError
                got.append(r[0] + r[1])
    except (EOFError, OSError):
        pass
    finally:
        s.close()
        data = b"".join(got)
        out.write(data)
        print(f"{label}: {len(data)} bytes received in all")


def hostile(host, port, out_path):
    with open(out_path, "ab") as out:
        attempt(host, port, 2, out, "v2 hello")
        attempt(host, port, 3, out, "v3 hello")
        attempt(host, port, 4, out, "v4 hello")
        attempt(host, port, 5, out, "v5 hello, then plaintext")
        attempt(host, port, None, out, "no hello")


def relay(listen_port, up_host, up_port, flip_at, listen_host):
    first = [True]
    lock = threading.Lock()

    def pump(src, dst, flip):
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if flip is not None and seen <= flip < seen + len(data):
                    b = bytearray(data)
                    b[flip - seen] ^= 0x10
                    data = bytes(b)
                    print("flipped", flush=True)
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((listen_host, listen_port))
    srv.listen(16)
    print("listening", flush=True)
    while True:
        c, _ = srv.accept()
        try:
            u = socket.create_connection((up_host, up_port), timeout=3)
            u.settimeout(None)
        except OSError:
            c.close()
            continue
        with lock:
            flip = flip_at if first[0] else None
            first[0] = False
        threading.Thread(target=pump, args=(c, u, None), daemon=True).start()
        threading.Thread(target=pump, args=(u, c, flip), daemon=True).start()


def main(argv):
    if len(argv) >= 4 and argv[0] == "hostile":
        hostile(argv[1], int(argv[2]), argv[3])
    elif len(argv) >= 4 and argv[0] == "relay":
        flip, host = None, "0.0.0.0"
        rest = argv[4:]
        while rest:
            if rest[0] == "--flip-at":
                flip = int(rest[1])
            elif rest[0] == "--listen":
                host = rest[1]
            rest = rest[2:]
        relay(int(argv[1]), argv[2], int(argv[3]), flip, host)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
