"""`a2a-quiescence dashboards push` against a fake Grafana HTTP API."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from a2a_quiescence.dashboards import cli
from a2a_quiescence.dashboards.deployment import DASHBOARD_UID, DEFAULT

TOKEN = "glsa_test_token"
VIEWER_TOKEN = "glsa_viewer_token"


class FakeGrafana(ThreadingHTTPServer):
    """A fake of the few Grafana HTTP API endpoints the push command uses.

    It is a fake because no Grafana server can be installed on these machines.
    It keeps folders and dashboards in memory and answers like Grafana does:
    401 for an unknown token, 403 for a token without write access, 409 for a
    second folder with the same title, 412 for an existing dashboard without
    ``overwrite``.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folders: list[dict[str, Any]] = []
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self, write: bool) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth == f"Bearer {TOKEN}":
            return True
        if auth == f"Bearer {VIEWER_TOKEN}":
            if not write:
                return True
            self._send(403, {"message": "You'll need additional permissions to perform this action."})
            return False
        self._send(401, {"message": "Invalid API key"})
        return False

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(("GET", self.path))
            if not self._authorized(write=False):
                return
            path = self.path.split("?")[0]
            if path == "/api/folders":
                self._send(200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.server.folders])
            elif path.startswith("/api/dashboards/uid/"):
                stored = self.server.dashboards.get(path.rsplit("/", 1)[1])
                if stored is None:
                    self._send(404, {"message": "Dashboard not found"})
                else:
                    self._send(200, stored)
            else:
                self._send(404, {"message": "Not found"})

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.requests.append(("POST", self.path))
            if not self._authorized(write=True):
                return
            body = self._body()
            if self.path == "/api/folders":
                if any(f["title"] == body["title"] for f in self.server.folders):
                    self._send(409, {"message": "a folder or dashboard in the general folder with the same name already exists"})
                    return
                folder = {"id": len(self.server.folders) + 1,
                          "uid": body.get("uid") or f"f{len(self.server.folders) + 1}",
                          "title": body["title"]}
                self.server.folders.append(folder)
                self._send(200, folder)
            elif self.path == "/api/dashboards/db":
                board = body["dashboard"]
                uid = board["uid"]
                previous = self.server.dashboards.get(uid)
                if previous is not None and not body.get("overwrite"):
                    self._send(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
                    return
                if body.get("folderUid") and not any(f["uid"] == body["folderUid"] for f in self.server.folders):
                    self._send(400, {"message": "folder not found"})
                    return
                version = (previous["meta"]["version"] + 1) if previous else 1
                self.server.dashboards[uid] = {
                    "dashboard": board,
                    "meta": {"folderUid": body.get("folderUid", ""), "version": version},
                }
                self._send(200, {"id": 1, "uid": uid, "url": f"/d/{uid}/a2a-mesh",
                                 "status": "success", "version": version})
            else:
                self._send(404, {"message": "Not found"})


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="a2a-quiescence")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dashboards", "push", *argv])
    return args.func(args)


def test_push_creates_folder_and_dashboard(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--grafana-url", grafana.url, "--token", TOKEN, "--folder", "Agents") == 0

    assert [f["title"] for f in grafana.folders] == ["Agents"]
    stored = grafana.dashboards[DASHBOARD_UID]
    assert stored["meta"]["folderUid"] == grafana.folders[0]["uid"]
    assert stored["dashboard"] == {k: v for k, v in cli.load_dashboard().items() if k != "id"}
    assert f"/d/{DASHBOARD_UID}/" in capsys.readouterr().out


def test_push_with_another_job_renders_its_dashboard(grafana: FakeGrafana) -> None:
    assert run("--grafana-url", grafana.url, "--token", TOKEN, "--job", "mesh-monitoring") == 0

    from a2a_quiescence.dashboards.dashboard import promql_expressions

    exprs = promql_expressions(grafana.dashboards[DASHBOARD_UID]["dashboard"])
    default = promql_expressions(cli.load_dashboard())
    assert exprs == [e.replace(f'job="{DEFAULT.job}"', 'job="mesh-monitoring"') for e in default]
    assert exprs != default


def test_push_with_another_job_needs_the_dashboards_extra(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "a2a_quiescence.dashboards.dashboard", None)
    assert run("--grafana-url", grafana.url, "--token", TOKEN, "--job", "mesh-monitoring") == 1
    assert "pip install 'a2a-quiescence[dashboards]'" in capsys.readouterr().err
    assert grafana.requests == []


def test_second_push_is_idempotent(grafana: FakeGrafana) -> None:
    assert run("--grafana-url", grafana.url, "--token", TOKEN, "--folder", "Agents") == 0
    first = json.dumps(grafana.dashboards[DASHBOARD_UID]["dashboard"], sort_keys=True)
    assert run("--grafana-url", grafana.url, "--token", TOKEN, "--folder", "Agents") == 0

    assert [f["title"] for f in grafana.folders] == ["Agents"]
    assert list(grafana.dashboards) == [DASHBOARD_UID]
    assert json.dumps(grafana.dashboards[DASHBOARD_UID]["dashboard"], sort_keys=True) == first
    assert grafana.dashboards[DASHBOARD_UID]["meta"]["folderUid"] == grafana.folders[0]["uid"]
    assert sum(1 for method, path in grafana.requests if (method, path) == ("POST", "/api/folders")) == 1


def test_token_from_environment(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_GRAFANA_TOKEN, TOKEN)
    assert run("--grafana-url", grafana.url) == 0
    assert [f["title"] for f in grafana.folders] == [cli.DEFAULT_FOLDER]


def test_missing_token_is_a_usage_error(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.ENV_GRAFANA_TOKEN, raising=False)
    assert run("--grafana-url", grafana.url) == 2
    assert cli.ENV_GRAFANA_TOKEN in capsys.readouterr().err
    assert grafana.requests == []


@pytest.mark.parametrize(("token", "status"), [("wrong", 401), (VIEWER_TOKEN, 403)])
def test_refused_token_gives_one_clear_line(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str],
                                            token: str, status: int) -> None:
    assert run("--grafana-url", grafana.url, "--token", token) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert f"refused the token (HTTP {status})" in err
    assert "Traceback" not in err
    assert grafana.dashboards == {}


def test_unreachable_grafana_gives_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    assert run("--grafana-url", url, "--token", TOKEN) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: cannot reach Grafana at {url}")
    assert "Traceback" not in err


def test_missing_grafana_client_is_explained(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "grafana_client", None)  # import now raises ImportError
    assert run("--grafana-url", "http://127.0.0.1:1", "--token", TOKEN) == 1
    assert "pip install 'a2a-quiescence[grafana]'" in capsys.readouterr().err
