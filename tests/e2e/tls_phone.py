#!/usr/bin/env python3
"""A SIP phone over TLS for tests/e2e/tls.sh, standard library only.

Registers USER through sipwarden's TLS listener (SNI = the secret domain,
the certificate checked against CAFILE), answers the 401 with digest
credentials (qop=auth). Then it calls 200@DOMAIN (the stand-in answers
200 itself): INVITE, 200, ACK and BYE, 200 over its TLS connection. Then
a UDP caller on CALLER_IP sends an INVITE for USER through sipwarden's
UDP listener: the registrar (Kamailio) routes it by the stored Path back
through sipwarden, down this TLS connection; the phone answers 200, the
caller ACKs and hangs up along the route set, and the BYE comes down the
TLS connection too. Prints one line per step ("REGISTER 401", "REGISTER
200", "OUT-INVITE 200", "OUT-BYE 200", "INVITE via=...", "CALLER 200",
"BYE via=...", "CALLER-BYE 200"); exits non-zero at the first step that
fails. Every wait is bounded.
"""

import hashlib
import re
import socket
import ssl
import sys
import uuid

(host, tls_port, udp_port, sni, cafile, user, password, domain,
 phone_ip, caller_ip) = sys.argv[1:11]
tls_port, udp_port = int(tls_port), int(udp_port)
WAIT = 10.0


def read_msg(conn, buf):
    """One message from a stream: headers, then Content-Length bytes."""
    while b"\r\n\r\n" not in buf[0]:
        chunk = conn.recv(4096)
        if not chunk:
            sys.exit("connection closed by sipwarden")
        buf[0] += chunk
    head, rest = buf[0].split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^(content-length|l)\s*:\s*(\d+)", head)
    n = int(m.group(2)) if m else 0
    while len(rest) < n:
        chunk = conn.recv(4096)
        if not chunk:
            sys.exit("connection closed by sipwarden")
        rest += chunk
    buf[0] = rest[n:]
    return (head + b"\r\n\r\n" + rest[:n]).decode()


def header(msg, name):
    m = re.search(r"(?im)^" + name + r"\s*:\s*(.*)$", msg)
    return m.group(1).strip() if m else None


def first(msg):
    return msg.split("\r\n", 1)[0]


ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection((host, tls_port), timeout=WAIT,
                               source_address=(phone_ip, 0))
conn = ctx.wrap_socket(raw, server_hostname=sni)
lport = conn.getsockname()[1]
buf = [b""]
call_id = uuid.uuid4().hex
contact = f"<sip:{user}@{phone_ip}:{lport};transport=tls>"


def register(cseq, auth=""):
    conn.sendall((
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {phone_ip}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=ph{cseq}\r\n"
        f"To: <sip:{user}@{domain}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: {contact}\r\nSupported: path\r\nExpires: 300\r\n{auth}"
        f"User-Agent: e2e-tls-phone\r\nContent-Length: 0\r\n\r\n").encode())
    while True:
        r = read_msg(conn, buf)
        code = int(first(r).split()[1])
        if code >= 200:
            return code, r


code, r = register(1)
print(f"REGISTER {code}", flush=True)
if code != 401:
    sys.exit(r)
ch = header(r, "WWW-Authenticate")
p = dict(re.findall(r'(\w+)="?([^",]*)"?', ch))
uri = f"sip:{domain}"
h1 = hashlib.md5(f"{user}:{p['realm']}:{password}".encode()).hexdigest()
h2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
cnonce, nc = uuid.uuid4().hex[:8], "00000001"
resp = hashlib.md5(f"{h1}:{p['nonce']}:{nc}:{cnonce}:auth:{h2}".encode()).hexdigest()
auth = (f'Authorization: Digest username="{user}", realm="{p["realm"]}", '
        f'nonce="{p["nonce"]}", uri="{uri}", response="{resp}", algorithm=MD5, '
        f'qop=auth, nc={nc}, cnonce="{cnonce}"\r\n')
code, r = register(2, auth)
print(f"REGISTER {code}", flush=True)
if code != 200:
    sys.exit(r)


def vias_of(msg):
    return "".join(l + "\r\n" for l in msg.split("\r\n")
                   if re.match(r"(?i)^(via|v)\s*:", l))


def record_routes(msg):
    out = []
    for l in msg.split("\r\n"):
        m = re.match(r"(?i)^record-route\s*:\s*(.*)$", l)
        if m:
            out += [v.strip() for v in m.group(1).split(",")]
    return out


def answer(req, code, phrase, extra=""):
    to = header(req, "To")
    if ";tag=" not in to:
        to += ";tag=phone"
    return (f"SIP/2.0 {code} {phrase}\r\n{vias_of(req)}"
            + "".join(f"Record-Route: {r}\r\n" for r in record_routes(req))
            + f"From: {header(req, 'From')}\r\nTo: {to}\r\n"
            f"Call-ID: {header(req, 'Call-ID')}\r\nCSeq: {header(req, 'CSeq')}\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def in_dialog(method, ruri, routes, via, frm, to, cid, cseq):
    return (f"{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: {frm}\r\nTo: {to}\r\nCall-ID: {cid}\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


def target(msg):
    return re.search(r"<([^>]*)>", header(msg, "Contact")).group(1)


def final(read):
    """The final response a read function returns, skipping 1xx."""
    while True:
        r = read()
        if not first(r).startswith("SIP/2.0 "):
            continue
        if int(first(r).split()[1]) >= 200:
            return r


def tls_via():
    return f"SIP/2.0/TLS {phone_ip}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport"


# (1) The phone calls: INVITE 200@domain over TLS; the stand-in answers
# 200 itself; ACK and BYE follow the route set back through sipwarden.
ocid = uuid.uuid4().hex
frm = f"<sip:{user}@{domain}>;tag=out{ocid[:6]}"
conn.sendall((
    f"INVITE sip:200@{domain} SIP/2.0\r\nVia: {tls_via()}\r\n"
    f"Max-Forwards: 70\r\nFrom: {frm}\r\nTo: <sip:200@{domain}>\r\n"
    f"Call-ID: {ocid}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n"
    f"Content-Length: 0\r\n\r\n").encode())
r = final(lambda: read_msg(conn, buf))
code = int(first(r).split()[1])
print(f"OUT-INVITE {code}", flush=True)
if code != 200:
    sys.exit(r)
routes = list(reversed(record_routes(r)))
conn.sendall(in_dialog("ACK", target(r), routes, tls_via(), frm, header(r, "To"), ocid, 1))
conn.sendall(in_dialog("BYE", target(r), routes, tls_via(), frm, header(r, "To"), ocid, 2))
r = final(lambda: read_msg(conn, buf))
print(f"OUT-BYE {first(r).split()[1]}", flush=True)

# (2) The phone is called: a caller on UDP through sipwarden's public UDP
# socket; the stand-in routes the INVITE by the Path back through
# sipwarden, down this TLS connection. The phone answers 200; the caller
# ACKs and hangs up along the route set: the BYE comes down the TLS
# connection too.
caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
caller.bind((caller_ip, 0))
caller.settimeout(WAIT)
cport = caller.getsockname()[1]
icid = uuid.uuid4().hex
cfrom = f"<sip:2000@{domain}>;tag=caller"
caller.sendto((
    f"INVITE sip:{user}@{domain} SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP {caller_ip}:{cport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
    f"Max-Forwards: 70\r\nFrom: {cfrom}\r\n"
    f"To: <sip:{user}@{domain}>\r\nCall-ID: {icid}\r\nCSeq: 1 INVITE\r\n"
    f"Contact: <sip:2000@{caller_ip}:{cport}>\r\nContent-Length: 0\r\n\r\n").encode(),
    (host, udp_port))

inv = read_msg(conn, buf)
if not first(inv).startswith("INVITE "):
    sys.exit("expected an INVITE on the TLS connection: " + inv)
print(f"INVITE via={header(inv, 'Via')} rr={header(inv, 'Record-Route')}", flush=True)
conn.sendall(answer(inv, 200, "OK", f"Contact: {contact}\r\n"))


def caller_read():
    data, _ = caller.recvfrom(65536)
    return data.decode(errors="replace")


r = final(caller_read)
code = int(first(r).split()[1])
print(f"CALLER {code}", flush=True)
if code != 200:
    sys.exit(r)
routes = list(reversed(record_routes(r)))
m = re.search(r"sip:(?:[^@;>]*@)?([0-9.]+):(\d+)", routes[0])
first_hop = (m.group(1), int(m.group(2)))


def udp_via():
    return f"SIP/2.0/UDP {caller_ip}:{cport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport"


to = header(r, "To")
caller.sendto(in_dialog("ACK", target(r), routes, udp_via(), cfrom, to, icid, 1), first_hop)
caller.sendto(in_dialog("BYE", target(r), routes, udp_via(), cfrom, to, icid, 2), first_hop)
while True:
    req = read_msg(conn, buf)
    if first(req).startswith("BYE "):
        break
print(f"BYE via={header(req, 'Via')}", flush=True)
conn.sendall(answer(req, 200, "OK"))
r = final(caller_read)
code = int(first(r).split()[1])
print(f"CALLER-BYE {code}", flush=True)
sys.exit(0 if code == 200 else 1)
