#!/usr/bin/python3
"""WebSocket clients for tests/e2e/ws.sh: upgrades sipwarden must refuse, and
a scanner that speaks SIP over an accepted WebSocket. Debian's python3 with
python3-websockets (scripts/setup.sh). Prints one line per case:

    CASE <name> STATUS <code> <first line of the body>   refused with HTTP
    CASE <name> UPGRADED                                 101, subprotocol sip
    CASE <name> CLOSED <bytes read>                      closed without HTTP
    CASE <name> ANSWER <SIP status line> | NO-ANSWER     the scanner's REGISTER

usage: ws_client.py HOST WS_PORT WSS_PORT TCP_PORT GOOD_ORIGIN
Every wait is bounded (5 s).
"""

import asyncio
import socket
import ssl
import sys

import websockets
from websockets.exceptions import InvalidStatusCode

HOST, WS_PORT, WSS_PORT, TCP_PORT, ORIGIN = (
    sys.argv[1],
    int(sys.argv[2]),
    int(sys.argv[3]),
    int(sys.argv[4]),
    sys.argv[5],
)
TIMEOUT = 5
# How long a dropped REGISTER is waited on for an answer that must not come.
SILENCE = 2


def out(*parts):
    print("CASE", *parts, flush=True)


async def upgrade(name, url, origin, protocols, **kw):
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, origin=origin, subprotocols=protocols, open_timeout=TIMEOUT, **kw),
            TIMEOUT,
        )
    except InvalidStatusCode as e:
        out(name, "STATUS", e.status_code)
        return None
    except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
        out(name, "CLOSED", type(e).__name__)
        return None
    out(name, "UPGRADED", ws.subprotocol)
    return ws


def raw_request(name, request):
    """A request written by hand (what no WebSocket library sends): the
    status line and the body's first line."""
    with socket.create_connection((HOST, WS_PORT), timeout=TIMEOUT) as s:
        s.sendall(request)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    out(name, "STATUS", status.split(" ")[1] if " " in status else "-", "|", body.decode(errors="replace").strip())


def tls_no_sni(name):
    """A wss: client that sends no server name (a scanner by IP): closed
    before the handshake, 0 bytes read."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, WSS_PORT), timeout=TIMEOUT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=None) as s:
                s.sendall(b"GET /ws HTTP/1.1\r\n\r\n")
                out(name, "HANDSHAKE-DONE", s.version())
        except (ssl.SSLError, OSError) as e:
            out(name, "CLOSED", type(e).__name__)


SCANNER_REGISTER = (
    "REGISTER sip:{host} SIP/2.0\r\n"
    "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKscan1\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:100@{host}>\r\n"
    "From: <sip:100@{host}>;tag=scan1\r\n"
    "Call-ID: scan-ws-1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:100@df7jal23ls0d.invalid;transport=ws>\r\n"
    "User-Agent: JsSIP 3.13.8\r\n"
    "Content-Length: 0\r\n\r\n"
)


def tcp_scanner(name):
    """The scanner's REGISTER over plain TCP: dropped the same way."""
    msg = SCANNER_REGISTER.format(host=HOST).replace("SIP/2.0/WS df7jal23ls0d.invalid", f"SIP/2.0/TCP {HOST}:1")
    msg = msg.replace("scan-ws-1", "scan-tcp-1").replace(";transport=ws", ";transport=tcp")
    with socket.create_connection((HOST, TCP_PORT), timeout=TIMEOUT) as s:
        s.sendall(msg.encode())
        s.settimeout(SILENCE)
        try:
            data = s.recv(4096)
            out(name, "ANSWER", data.decode(errors="replace").split("\r\n", 1)[0] if data else "closed")
        except socket.timeout:
            out(name, "NO-ANSWER")


async def main():
    url = f"ws://{HOST}:{WS_PORT}/ws"
    await upgrade("wrong-origin", url, "https://evil.example", ["sip"])
    await upgrade("wrong-subprotocol", url, ORIGIN, ["chat"])
    await upgrade("no-subprotocol", url, ORIGIN, None)
    await upgrade("wrong-path", f"ws://{HOST}:{WS_PORT}/", ORIGIN, ["sip"])
    raw_request("plain-get", f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    tls_no_sni("wss-no-sni")
    # The scanner: a correct upgrade (it copied a browser), then SIP to the IP.
    ws = await upgrade("scanner-upgrade", url, ORIGIN, ["sip"])
    if ws is not None:
        await ws.send(SCANNER_REGISTER.format(host=HOST))
        try:
            msg = await asyncio.wait_for(ws.recv(), SILENCE)
            out("scanner-register", "ANSWER", str(msg).split("\r\n", 1)[0])
        except asyncio.TimeoutError:
            out("scanner-register", "NO-ANSWER")
        await ws.close()
    # The same scanner over TCP, for comparison.
    tcp_scanner("scanner-tcp")


if __name__ == "__main__":
    asyncio.run(main())
