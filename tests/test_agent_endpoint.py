"""compare/endpoint.py: the comparison drives the agent front as its operator (its own admin token), so
the replies it measures carry the front's diagnostics; a request without the token carries none."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from unlearnkit.compare.endpoint import AgentServer, chat
from unlearnkit.guard.boundary import ADMIN_TOKEN_ENV


def _front(token: str) -> HTTPServer:
    """Answers like the front: the `unlearn` diagnostics only for `Authorization: Bearer <token>`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = {"choices": [{"message": {"content": "It is Utrecht."}}]}
            if self.headers.get("Authorization") == f"Bearer {token}":
                body["unlearn"] = {"path": "agents", "route": "rewritten", "llm_calls": 4}
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_comparison_presents_the_admin_token_it_started_the_front_with(tmp_path):
    front = AgentServer("m", str(tmp_path), tmp_path / "log")
    assert front.env[ADMIN_TOKEN_ENV] == front.token and len(front.token) >= 24
    assert AgentServer("m", str(tmp_path), tmp_path / "log").token != front.token      # one per server
    assert AgentServer("m", str(tmp_path), tmp_path / "log", env={ADMIN_TOKEN_ENV: "given"}).token == "given"
    server = _front(front.token)
    try:
        front.url = f"http://127.0.0.1:{server.server_port}/v1"
        got = front.ask_many(["Where was Kalo born?"] * 2, 8, workers=2)
        assert [r["unlearn"]["route"] for r in got] == ["rewritten", "rewritten"]
        assert chat(front.url, "Where was Kalo born?")["unlearn"] == {}          # any other client
        assert chat(front.url, "Where was Kalo born?", token="wrong")["unlearn"] == {}
    finally:
        server.shutdown()
