#!/usr/bin/env python3
"""Raw-socket probe of a skynet-cluster listener: shows the exact response frames stock
skynet sends for a few trouble cases (used to check spec/cluster-wire.md claims)."""
import socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])

def sstr(b):  # skynet.pack of one short string (<32 bytes)
    assert len(b) < 32
    return bytes([4 | (len(b) << 3)]) + b

def frame(body):
    return struct.pack(">H", len(body)) + body

def req_name(name, session, msg):
    return frame(b"\x80" + bytes([len(name)]) + name + struct.pack("<I", session) + msg)

def req_addr(addr, session, msg):
    return frame(b"\x00" + struct.pack("<II", addr, session) + msg)

s = socket.create_connection((host, port))
s.settimeout(2)
cases = [
    ("push (session 0) to unknown @name", req_name(b"@nosuch", 0, sstr(b"x"))),
    ("request session 7 to unknown @name", req_name(b"@nosuch", 7, sstr(b"x"))),
    ("query (addr 0) unknown name, session 8", req_addr(0, 8, sstr(b"nosuch"))),
    ("request session 9 to @sink bad command", req_name(b"@sink", 9, sstr(b"bad"))),
    ("request session 10 to @echo", req_name(b"@echo", 10, sstr(b"hi"))),
    ("multi-part push session 11 (0xC1) to unknown @name, 40000 bytes",
     frame(b"\xc1" + bytes([7]) + b"@nosuch" + struct.pack("<II", 11, 40000))
     + frame(b"\x02" + struct.pack("<I", 11) + b"m" * 32768)
     + frame(b"\x03" + struct.pack("<I", 11) + b"m" * (40000 - 32768))),
    ("push (session 0) to dead numeric address 0x00ffffff", req_addr(0xFFFFFF, 0, sstr(b"x"))),
    ("request session 12 to dead numeric address 0x00ffffff", req_addr(0xFFFFFF, 12, sstr(b"x"))),
]
buf = b""
def read_frame():
    global buf
    while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    n = struct.unpack(">H", buf[:2])[0]
    body, buf = buf[2:2 + n], buf[2 + n:]
    return body
for name, data in cases:
    s.sendall(data)
    try:
        body = read_frame()
        sess, typ = struct.unpack("<IB", body[:5])
        print(f"{name}: -> response session={sess} type={typ} data={body[5:]!r}")
    except socket.timeout:
        print(f"{name}: -> no response within 2 s")
