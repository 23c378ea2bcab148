"""The kernel-matrix guest's Pyroscope stand-in: answers every request with 200 and reports what it got.

For each request it prints one line for the host: `@@push PATH CONTENT-TYPE BYTES service=yes|no
functions=NAME,...`, where service says whether the PushRequest names the service `kernels-smoke` and functions
lists which of the native-burn functions the gzipped pprof inside it names (protobuf strings are stored as they
are, so no decoder is needed). Plain sockets: http.server's imports hang at start in the guest.

Usage: python3 receiver.py PORT
"""
import socket
import sys
import zlib

WANTED = [b"hot_main_a", b"hot_main_b", b"lib_hot_x", b"hot_b"]


def serve(connection):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    profile = b""
    start = body.find(b"\x1f\x8b")
    if start >= 0:
        try:
            profile = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body[start:])
        except zlib.error:
            pass
    found = ",".join(name.decode() for name in WANTED if name in profile) or "none"
    service = "yes" if b"kernels-smoke" in body else "no"
    path = lines[0].split(" ")[1] if " " in lines[0] else "?"
    print(f"@@push {path} {headers.get('content-type')} {len(body)} service={service} functions={found}", flush=True)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n")


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(8)
print("@@receiver listening", flush=True)
while True:
    connection, _ = listener.accept()
    with connection:
        try:
            serve(connection)
        except OSError:
            pass
