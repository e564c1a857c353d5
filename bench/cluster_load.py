#!/usr/bin/env python3
"""The load of bench/cluster.sh (standard library only, loopback only).

  cluster_load.py bans SOCK N INTERVAL_MS PREFIX   manual bans, one every INTERVAL_MS
  cluster_load.py burst SOCK N SECONDS PREFIX      N bans spread over SECONDS
  cluster_load.py regs N INTERNAL ASTERISK_PORT REGISTRAR_PORT INTERVAL_MS
        N trunk REGISTERs through a node's internal socket, each answered
        200 by a registrar played here on 127.0.0.3 (distinct accounts:
        distinct tokens, distinct records)
  cluster_load.py delays LOG_A PATTERN_A LOG_B PATTERN_B KEY
        pairs the lines of two nodes' logs by the field KEY (a regexp of
        field names: ban|source), or by order when KEY is "-", and prints the delays: count p50 p99 max (ms)
  cluster_load.py spread LOG PATTERN
        first and last timestamp of the lines matching PATTERN (ms apart)
"""

import json
import re
import socket
import sys
import time
from datetime import datetime


def loopback(host):
    if not host.startswith("127."):
        sys.exit(f"refusing {host}: loopback only")
    return host


def control(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    return s, s.makefile("rb")


def ban_ips(n, prefix):
    # PREFIX is the first two octets, e.g. 198.18 (RFC 2544 benchmark space)
    for i in range(n):
        yield f"{prefix}.{(i >> 8) & 255}.{i & 255}"


def bans(sock_path, n, interval_ms, prefix):
    s, r = control(sock_path)
    for ip in ban_ips(n, prefix):
        t = time.monotonic()
        s.sendall(json.dumps({"version": 1, "request": "ban", "target": ip, "for": "1h"}).encode() + b"\n")
        line = r.readline()
        if b'"ok":true' not in line:
            sys.exit(f"ban {ip} refused: {line!r}")
        left = interval_ms / 1000 - (time.monotonic() - t)
        if left > 0:
            time.sleep(left)


def burst(sock_path, n, seconds, prefix):
    # Pipelined: requests written in chunks, answers read behind them.
    s, r = control(sock_path)
    t0 = time.monotonic()
    chunk = 100
    ips = list(ban_ips(n, prefix))
    sent = 0
    while sent < n:
        part = ips[sent:sent + chunk]
        s.sendall(b"".join(json.dumps({"version": 1, "request": "ban", "target": ip, "for": "1h"}).encode() + b"\n" for ip in part))
        for _ in part:
            line = r.readline()
            if b'"ok":true' not in line:
                sys.exit(f"ban refused: {line!r}")
        sent += len(part)
        due = t0 + seconds * sent / n
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
    print(f"{n} bans made in {time.monotonic() - t0:.3f} s")


def regs(n, internal, ast_port, reg_port, interval_ms):
    ihost, iport = internal.rsplit(":", 1)
    loopback(ihost)
    ast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ast.bind(("127.0.0.1", ast_port))
    ast.settimeout(3)
    reg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reg.bind(("127.0.0.3", reg_port))
    reg.settimeout(3)
    for i in range(n):
        t = time.monotonic()
        req = (
            f"REGISTER sip:127.0.0.3:{reg_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ast_port};rport;branch=z9hG4bK-bench-{i}\r\n"
            f"Route: <sip:{internal};lr>\r\n"
            f"From: <sip:bench{i}@127.0.0.3>;tag=r{i}\r\n"
            f"To: <sip:bench{i}@127.0.0.3>\r\n"
            f"Call-ID: bench-reg-{i}\r\n"
            f"CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:bench{i}@127.0.0.1:{ast_port}>\r\n"
            f"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        ast.sendto(req.encode(), (ihost, int(iport)))
        data, src = reg.recvfrom(65535)
        loopback(src[0])
        text = data.decode(errors="replace")
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        keep = [h for h in head if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
        to = next(h for h in head if h.lower().startswith("to:"))
        contact = next(h for h in head if h.lower().startswith("contact:"))
        uri = re.search(r"<([^>]*)>", contact).group(1)
        ok = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + f"\r\n{to};tag=reg{i}\r\nContact: <{uri}>;expires=600\r\nContent-Length: 0\r\n\r\n"
        reg.sendto(ok.encode(), src)
        ast.recvfrom(65535)
        left = interval_ms / 1000 - (time.monotonic() - t)
        if left > 0:
            time.sleep(left)


TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def stamp(line):
    m = TS.match(line)
    if not m:
        return None
    whole, frac = m.group(1).split(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    return (t.timestamp() + float("0." + frac)) * 1000.0


def lines(path, pattern):
    rx = re.compile(pattern)
    with open(path, errors="replace") as f:
        for line in f:
            if rx.search(line):
                t = stamp(line)
                if t is not None:
                    yield t, line


def field(line, key):
    m = re.search(rf"\b(?:{key})=(\S+)", line)
    return m.group(1) if m else None


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def delays(log_a, pat_a, log_b, pat_b, key):
    a = list(lines(log_a, pat_a))
    b = list(lines(log_b, pat_b))
    if key == "-":
        pairs = list(zip([t for t, _ in a], [t for t, _ in b]))
    else:
        first = {}
        for t, line in a:
            first.setdefault(field(line, key), t)
        pairs = [(first[field(line, key)], t) for t, line in b if field(line, key) in first]
    d = [tb - ta for ta, tb in pairs]
    if not d:
        sys.exit("no pairs")
    print(f"{len(d)} {pct(d, 50):.2f} {pct(d, 99):.2f} {max(d):.2f}")


def spread(log, pattern):
    t = [x for x, _ in lines(log, pattern)]
    if not t:
        sys.exit("no lines")
    print(f"{len(t)} {min(t):.3f} {max(t):.3f} {max(t) - min(t):.1f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bans":
        bans(args[0], int(args[1]), float(args[2]), args[3])
    elif cmd == "burst":
        burst(args[0], int(args[1]), float(args[2]), args[3])
    elif cmd == "regs":
        regs(int(args[0]), args[1], int(args[2]), int(args[3]), float(args[4]))
    elif cmd == "delays":
        delays(*args)
    elif cmd == "spread":
        spread(*args)
    else:
        sys.exit(__doc__)
