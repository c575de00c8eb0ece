#!/usr/bin/env python3
"""Minimal DNS responder for the egress benchmark: answers A queries for the names given on the
command line (name=ip) with TTL 300, NXDOMAIN for everything else, NODATA for other types."""
import socket
import struct
import sys

port = int(sys.argv[1])
table = dict(arg.split("=", 1) for arg in sys.argv[2:])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
while True:
    data, peer = sock.recvfrom(1500)
    if len(data) < 12:
        continue
    pos, labels = 12, []
    while pos < len(data) and data[pos] != 0:
        n = data[pos]
        labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace").lower())
        pos += 1 + n
    qend = pos + 5
    if qend > len(data):
        continue
    qtype = struct.unpack("!H", data[pos + 1:pos + 3])[0]
    name = ".".join(labels)
    head = bytearray(data[:qend])
    head[2], head[3] = 0x81, 0x80
    head[6:12] = b"\0\0\0\0\0\0"
    if name not in table:
        head[3] = 0x83
        sock.sendto(bytes(head), peer)
        continue
    if qtype == 1:
        head[7] = 1
        head += b"\xc0\x0c\x00\x01\x00\x01" + struct.pack("!IH", 300, 4) + socket.inet_aton(table[name])
    sock.sendto(bytes(head), peer)
