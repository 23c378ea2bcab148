"""The kernel-matrix guest's Pyroscope stand-in: answers every push with 200 and reports what it got.

For each request it prints one line for the host: `@@push PATH CONTENT-TYPE BYTES service=yes|no
functions=NAME,...`, where service says whether the PushRequest names the service `kernels-smoke` and functions
lists which of the native-burn functions the gzipped pprof inside it names (protobuf strings are stored as they
are, so no decoder is needed).

Usage: python3 receiver.py PORT
"""
import http.server
import socketserver
import sys
import zlib

WANTED = [b"hot_main_a", b"hot_main_b", b"lib_hot_x", b"hot_b"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        profile = b""
        start = body.find(b"\x1f\x8b")
        if start >= 0:
            try:
                profile = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body[start:])
            except zlib.error:
                pass
        found = ",".join(name.decode() for name in WANTED if name in profile) or "none"
        service = "yes" if b"kernels-smoke" in body else "no"
        print(f"@@push {self.path} {self.headers.get('Content-Type')} {len(body)} service={service} "
              f"functions={found}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/proto")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(http.server.HTTPServer):
    def server_bind(self):
        # HTTPServer's own looks the host's name up (getfqdn), which needs a resolver the guest does not have.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
