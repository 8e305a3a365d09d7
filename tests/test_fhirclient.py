"""FHIR search with paging: pages merged, the token sent only to the server's own origin."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from clinagent.fhirclient import FetchError, search


class _Pages(BaseHTTPRequestHandler):
    base = ""
    seen: list = []

    def do_GET(self):  # noqa: N802
        _Pages.seen.append((self.path, self.headers.get("Authorization")))
        if "page=2" in self.path:
            page = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": {"resourceType": "Basic", "id": "2"}}],
            }
        elif "foreign" in self.path:
            page = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [],
                "link": [{"relation": "next", "url": "http://198.51.100.7/fhir?page=2"}],
            }
        else:
            page = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": {"resourceType": "Basic", "id": "1"}}],
                "link": [{"relation": "next", "url": f"{_Pages.base}/Basic?page=2"}],
            }
        data = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture()
def server():
    s = HTTPServer(("127.0.0.1", 0), _Pages)
    _Pages.base = f"http://127.0.0.1:{s.server_address[1]}/fhir"
    _Pages.seen = []
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield _Pages.base
    s.shutdown()


def test_pages_are_merged_and_the_token_goes_only_there(server):
    doc = search(server, "Basic?x=1", "tok")
    assert [e["resource"]["id"] for e in doc["entry"]] == ["1", "2"]
    assert all(auth == "Bearer tok" for _, auth in _Pages.seen) and len(_Pages.seen) == 2


def test_a_next_link_to_another_origin_is_refused(server):
    with pytest.raises(FetchError, match="another origin"):
        search(server, "Basic?foreign=1", "tok")
    assert len(_Pages.seen) == 1  # the foreign host was never contacted


def test_too_many_pages_or_no_server(server):
    with pytest.raises(FetchError, match="more than 1 pages"):
        search(server, "Basic?x=1", None, max_pages=1)
    with pytest.raises(FetchError, match="could not reach"):
        search("http://127.0.0.1:9/fhir", "Basic", None, timeout=2)
