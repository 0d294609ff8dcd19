"""compare/endpoint.py: the comparison drives the agent front as its operator (its own admin token), so
the replies it measures carry the front's diagnostics; a request without the token carries none."""

from tests.conftest import loopback_json
from unlearnkit.compare.endpoint import AgentServer, chat
from unlearnkit.guard.boundary import ADMIN_TOKEN_ENV


def _front(token: str):
    """Answers like the front: the `unlearn` diagnostics only for `Authorization: Bearer <token>`."""

    def respond(method, path, headers, body):
        out = {"choices": [{"message": {"content": "It is Utrecht."}}]}
        if headers.get("Authorization") == f"Bearer {token}":
            out["unlearn"] = {"path": "agents", "route": "rewritten", "llm_calls": 4}
        return out, 200

    return loopback_json(respond)


def test_the_comparison_presents_the_admin_token_it_started_the_front_with(tmp_path):
    front = AgentServer("m", str(tmp_path), tmp_path / "log")
    assert front.env[ADMIN_TOKEN_ENV] == front.token and len(front.token) >= 24
    assert AgentServer("m", str(tmp_path), tmp_path / "log").token != front.token      # one per server
    assert AgentServer("m", str(tmp_path), tmp_path / "log", env={ADMIN_TOKEN_ENV: "given"}).token == "given"
    with _front(front.token) as url:
        front.url = f"{url}/v1"
        got = front.ask_many(["Where was Kalo born?"] * 2, 8, workers=2)
        assert [r["unlearn"]["route"] for r in got] == ["rewritten", "rewritten"]
        assert chat(front.url, "Where was Kalo born?")["unlearn"] == {}          # any other client
        assert chat(front.url, "Where was Kalo born?", token="wrong")["unlearn"] == {}
