#!/usr/bin/env python3
"""A SIP phone over TLS for tests/e2e/tls.sh, standard library only.

Registers USER through sipwarden's TLS listener (SNI = the secret domain,
the certificate checked against CAFILE), answers the 401 with digest
credentials (qop=auth), then has a UDP caller on CALLER_IP send an INVITE
for USER through sipwarden's UDP listener: the registrar (Kamailio) routes
it by the stored Path back through sipwarden, down this TLS connection.
The phone answers 486 and the caller must see it. Prints one line per
step ("REGISTER 401", "REGISTER 200", "INVITE via=...", "CALLER 486");
exits non-zero at the first step that fails. Every wait is bounded.
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

# The caller, on UDP through sipwarden's public UDP socket.
caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
caller.bind((caller_ip, 0))
caller.settimeout(WAIT)
cport = caller.getsockname()[1]
icid = uuid.uuid4().hex
caller.sendto((
    f"INVITE sip:{user}@{domain} SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP {caller_ip}:{cport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
    f"Max-Forwards: 70\r\nFrom: <sip:2000@{domain}>;tag=caller\r\n"
    f"To: <sip:{user}@{domain}>\r\nCall-ID: {icid}\r\nCSeq: 1 INVITE\r\n"
    f"Contact: <sip:2000@{caller_ip}:{cport}>\r\nContent-Length: 0\r\n\r\n").encode(),
    (host, udp_port))

inv = read_msg(conn, buf)
if not first(inv).startswith("INVITE "):
    sys.exit("expected an INVITE on the TLS connection: " + inv)
print(f"INVITE via={header(inv, 'Via')} rr={header(inv, 'Record-Route')}", flush=True)
vias = "".join(l + "\r\n" for l in inv.split("\r\n") if re.match(r"(?i)^(via|v)\s*:", l))
conn.sendall((
    f"SIP/2.0 486 Busy Here\r\n{vias}From: {header(inv, 'From')}\r\n"
    f"To: {header(inv, 'To')};tag=phone\r\nCall-ID: {header(inv, 'Call-ID')}\r\n"
    f"CSeq: {header(inv, 'CSeq')}\r\nContent-Length: 0\r\n\r\n").encode())

while True:
    data, _ = caller.recvfrom(65536)
    r = data.decode(errors="replace")
    code = int(first(r).split()[1])
    if code >= 200:
        break
print(f"CALLER {code}", flush=True)
# The caller's ACK for the final answer ends the transaction.
caller.sendto((
    f"ACK sip:{user}@{domain} SIP/2.0\r\n{header(r, 'Via') and 'Via: ' + header(r, 'Via')}\r\n"
    f"Max-Forwards: 70\r\nFrom: {header(r, 'From')}\r\nTo: {header(r, 'To')}\r\n"
    f"Call-ID: {icid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode(), (host, udp_port))
sys.exit(0 if code == 486 else 1)
