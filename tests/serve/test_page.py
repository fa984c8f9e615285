"""The web page's routes in-process (no Ray): the page and its files, the voice list's kind and
lineage, and the read-only report routes (what they serve, what they refuse)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx")
from fastapi.testclient import TestClient

from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.asgi import create_app
from voicefleet.serve.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "voicefleet" / "serve" / "static"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
TRIALS = "index,trial_id,status,best_objective\n0,t0,TERMINATED,0.41\n1,t1,TERMINATED,0.37\n"


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """A storage folder with one voice of each kind, a sweep report and a run's curves."""
    root = tmp_path_factory.mktemp("page-storage")
    files = root / "files"
    files.mkdir()
    for name in ("gpt.ckpt", "sovits.pth", "reference.wav"):
        (files / name).write_bytes(b"stand-in")  # the registry copies files; these routes never load them
    registry = VoiceRegistry(root / "registry")
    common = dict(gpt=files / "gpt.ckpt", sovits=files / "sovits.pth", reference=files / "reference.wav",
                  prompt_text="你好。", prompt_lang="zh")
    registry.register("swept", lineage={"sweep": "s1", "trial": "t1", "round": 2, "sovits_run": "s1-t1",
                                        "gpt_run": "s1-t1", "dataset": str(root / "data" / "alice-ds")}, **common)
    registry.register("trained", lineage={"sovits_run": "alice-s2", "gpt_run": "alice-s1"}, **common)
    registry.register("uploaded", lineage={"source": "zero-shot upload"}, **common)
    registry.register("plain", **common)
    # lineage edited by hand to point outside the storage: it must name no folder
    registry.register("tampered", lineage={"sweep": "../outside", "sovits_run": "/etc", "gpt_run": ".."}, **common)

    sweep = root / "sweeps" / "s1"
    sweep.mkdir(parents=True)
    (sweep / "trials.csv").write_text(TRIALS)
    (sweep / "objective_per_trial.png").write_bytes(PNG)
    (sweep / "sweep_result.json").write_text('{"sweep_dir": "/srv/private"}')  # not a report file
    run = root / "alice-s2" / "voicefleet"
    run.mkdir(parents=True)
    (run / "curves.png").write_bytes(PNG)
    (run / "report.json").write_text("{}")  # not served: names server paths
    (root / "outside").mkdir()
    (root / "outside" / "trials.csv").write_text(TRIALS)  # inside the storage, but not a sweep's folder
    (root.parent / f"{root.name}-secret.csv").write_text("secret\n")
    return root


def _client(storage: Path, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(storage=str(storage), pretrained=str(storage / "none"), **settings)))


@pytest.fixture(scope="module")
def client(storage):
    with _client(storage) as c:
        yield c


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/app.js"' in page.text and 'href="static/app.css"' in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    for name in ("index.html", "..%2F__init__.py", "app.js.map"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found", name
    assert "/" not in {p for p in client.get("/openapi.json").json()["paths"]}  # the page is not an API route


def test_static_files_load_nothing_from_elsewhere():
    external = re.compile(r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|\burl\(\s*['"]?(?!data:)""")
    for path in STATIC.iterdir():
        text = path.read_text()
        hits = [m.group(0) for m in external.finditer(text)]
        assert not hits, f"{path.name} refers to another site or file: {hits}"
    assert sorted(p.name for p in STATIC.iterdir()) == ["app.css", "app.js", "index.html"]


def test_static_files_are_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    serve = patterns["voicefleet.serve"]
    for path in STATIC.iterdir():
        assert any(fnmatch.fnmatch(f"static/{path.name}", p) for p in serve), f"{path.name} would miss the wheel"


def test_the_page_controls_are_labelled():
    html = (STATIC / "index.html").read_text()
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    wrapped = re.findall(r"<label[^>]*>[^<]*<(?:input|select|textarea)[^>]*\bid=\"([^\"]+)\"", html)
    labelled |= set(wrapped)
    controls = re.findall(r"<(?:input|select|textarea)[^>]*\bid=\"([^\"]+)\"", html)
    assert controls and set(controls) <= labelled, f"unlabelled controls: {set(controls) - labelled}"


def test_voice_list_says_kind_and_lineage_without_server_paths(client, storage):
    voices = {v["voice_id"]: v for v in client.get("/v1/voices").json()["voices"]}
    assert {k: v["kind"] for k, v in voices.items()} == {
        "plain": "imported", "swept": "sweep", "tampered": "sweep", "trained": "trained", "uploaded": "zero-shot"}
    assert voices["swept"]["lineage"]["dataset"] == "alice-ds"
    assert voices["swept"]["lineage"]["trial"] == "t1"
    assert str(storage) not in client.get("/v1/voices").text


def test_reports_list_only_the_files_there(client):
    body = client.get("/v1/voices/swept/reports").json()
    assert body["voice_id"] == "swept"
    assert [(g["group"], g["name"], [f["name"] for f in g["files"]]) for g in body["groups"]] == [
        ("sweep", "s1", ["trials.csv", "objective_per_trial.png"])]
    trials = client.get("/" + body["groups"][0]["files"][0]["url"])  # urls are relative to the API root
    assert trials.status_code == 200 and trials.text == TRIALS and trials.headers["content-type"].startswith("text/csv")
    png = client.get("/v1/voices/swept/reports/sweep/objective_per_trial.png")
    assert png.content == PNG and png.headers["content-type"] == "image/png"

    trained = client.get("/v1/voices/trained/reports").json()["groups"]
    assert [(g["group"], g["name"], [f["name"] for f in g["files"]]) for g in trained] == [
        ("sovits_run", "alice-s2", ["curves.png"])]  # alice-s1 has no folder: not listed
    assert client.get("/v1/voices/trained/reports/sovits_run/curves.png").content == PNG
    for voice in ("uploaded", "plain", "tampered"):
        assert client.get(f"/v1/voices/{voice}/reports").json()["groups"] == [], voice


@pytest.mark.parametrize("path", [
    "/v1/voices/swept/reports/sweep/sweep_result.json",  # in the folder, but not a report file
    "/v1/voices/trained/reports/sovits_run/report.json",
    "/v1/voices/trained/reports/gpt_run/curves.png",  # the run has no folder
    "/v1/voices/swept/reports/sweep/..%2F..%2Fregistry%2Fvoices%2Fswept%2Fvoice.json",
    "/v1/voices/swept/reports/sweep/%2E%2E",
    "/v1/voices/tampered/reports/sweep/trials.csv",
    "/v1/voices/tampered/reports/gpt_run/curves.png",
    "/v1/voices/nobody/reports/sweep/trials.csv",
])
def test_report_files_refuse_anything_else(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text)
    assert r.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("path,status", [
    ("/v1/voices/swept/reports/registry/voice.json", 422),  # not a group
    ("/v1/voices/Swept!/reports", 422),  # not a voice id
    ("/v1/voices/swept/reports/sweep/" + "x" * 65, 422),
    ("/v1/voices/swept/reports/..%2F..%2Fetc/passwd", 404),  # the decoded slashes match no route
    ("/v1/voices/..%2Fregistry/reports", 404),
    ("/v1/voices/swept/reports/sweep/../../../registry/voices/swept/voice.json", 404),  # normalised by the client
])
def test_report_routes_refuse_paths(client, path, status):
    r = client.get(path)
    assert r.status_code == status, (path, r.text)
    assert r.json()["error"]["message"]


def test_report_file_that_links_outside_the_storage_is_refused(storage, client):
    link = storage / "sweeps" / "s1" / "ratio_vs_warmup.png"
    link.symlink_to(storage.parent / f"{storage.name}-secret.csv")
    try:
        names = [f["name"] for f in client.get("/v1/voices/swept/reports").json()["groups"][0]["files"]]
        assert "ratio_vs_warmup.png" not in names
        assert client.get("/v1/voices/swept/reports/sweep/ratio_vs_warmup.png").status_code == 404
    finally:
        link.unlink()


def test_reports_follow_the_api_keys(storage):
    keys = [{"key": "admin-key", "voices": ["*"]}, {"key": "trained-key", "voices": ["trained"]}]
    with _client(storage, api_keys=keys) as c:
        assert c.get("/v1/voices/swept/reports").status_code == 401
        limited = {"Authorization": "Bearer trained-key"}
        assert c.get("/v1/voices/trained/reports", headers=limited).status_code == 200
        for path in ("/v1/voices/swept/reports", "/v1/voices/swept/reports/sweep/trials.csv",
                     "/v1/voices/nobody/reports"):  # a key cannot probe for voices
            assert c.get(path, headers=limited).status_code == 403, path
        assert [v["voice_id"] for v in c.get("/v1/voices", headers=limited).json()["voices"]] == ["trained"]
        assert c.get("/", headers={}).status_code == 200  # the page itself needs no key: it asks for one
