"""The end of every stand-in vLLM server script of the tests: an HTTP server on ``args.host:args.port``
that answers ``/health`` to anyone and everything else only with ``Bearer <key>`` (when ``key`` is set),
like a quantgate server. A script defines ``args`` (with ``served_model_name``) and ``key`` first."""

SERVE_UNTIL_STOPPED = """
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if key and self.path != "/health" and self.headers.get("Authorization") != "Bearer " + key:
                self.send_response(401); self.end_headers(); return
            self.send_response(200); self.end_headers(); self.wfile.write(args.served_model_name.encode())
        def log_message(self, *a):
            pass
    http.server.HTTPServer((args.host, int(args.port)), Handler).serve_forever()
"""
