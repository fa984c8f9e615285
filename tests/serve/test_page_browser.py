"""The web page in a real browser: Playwright drives Debian's Chromium against the running Serve
app of this package (`base_url`, shared with the other Serve tests: no extra start-up).

The API-key checks need a server configured with keys: the same app is served in-process by
uvicorn with keys over the running synthesis deployment (as `test_fuzz_auth` does), so they too
start no second Serve application.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")

from .conftest import free_port, write_reference

# Debian's package; VOICEFLEET_CHROMIUM names another Chromium build
CHROMIUM = os.environ.get("VOICEFLEET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NO_CHROMIUM = (f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; "
               f"scripts/setup.sh installs it)")
pytestmark = [pytest.mark.slow,  # runs the real Serve app (Ray actors, HTTP) and a browser
              # checked before any fixture, so a machine without a browser starts no Serve app for nothing
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=NO_CHROMIUM)]
TEXT = "今天天气很好。"
MAX_TOKENS = 30  # 1.2 s per fragment: random tiny GPTs rarely stop on their own
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        # the system's Chromium, never a browser Playwright would download
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


class Tab:
    """A fresh browser tab on the page, recording console errors and uncaught exceptions."""

    def __init__(self, browser, url: str, context=None):
        self.context = context or browser.new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.goto(url + "/")

    def close(self):
        self.context.close()

    def message(self) -> str:
        self.page.wait_for_selector("#message:not([hidden])")
        return self.page.inner_text("#message")

    def voices(self) -> list[str]:
        return self.page.eval_on_selector_all("#voice-rows tr", "rows => rows.map(r => r.dataset.voice)")

    def wait_for_clip(self, audio_id: str, min_s: float = 0.5) -> float:
        """The <audio> element's duration once the browser has decoded the clip's header."""
        self.page.wait_for_function(
            f"() => {{ const a = document.getElementById('{audio_id}'); "
            f"return a.src.startsWith('blob:') && a.readyState >= 1 && a.duration > {min_s}; }}")
        return self.page.eval_on_selector(f"#{audio_id}", "a => a.duration")

    def blob_bytes(self, audio_id: str) -> bytes:
        encoded = self.page.evaluate(
            f"""async () => {{
                const buf = new Uint8Array(await (await fetch(document.getElementById('{audio_id}').src)).arrayBuffer());
                let s = ''; for (let i = 0; i < buf.length; i += 8192) s += String.fromCharCode(...buf.subarray(i, i + 8192));
                return btoa(s);
            }}""")
        return base64.b64decode(encoded)

    def set_knobs(self, **values):
        for name, value in values.items():
            self.page.fill(f"#{name}", str(value))


@pytest.fixture
def tab(browser, base_url):
    t = Tab(browser, base_url)
    t.page.wait_for_selector("#voice-rows tr")
    yield t
    t.close()


def _streamed_pcm(base_url: str, **body) -> bytes:
    with httpx.stream("POST", f"{base_url}/v1/tts", json={"format": "pcm", "stream": True, **body}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return b"".join(r.iter_raw())


def test_page_loads_without_errors_and_lists_the_voices(tab, base_url):
    api_voices = [v["voice_id"] for v in httpx.get(f"{base_url}/v1/voices").json()["voices"]]
    assert tab.voices() == api_voices and len(api_voices) >= 2
    assert tab.page.is_hidden("#key-panel")  # this server has no keys
    # the knobs start at the API's own defaults and bounds (read from its OpenAPI schema)
    tts = httpx.get(f"{base_url}/openapi.json").json()["components"]["schemas"]["TTSRequest"]["properties"]
    assert float(tab.page.input_value("#top_k")) == tts["top_k"]["default"]
    assert float(tab.page.get_attribute("#top_k", "max")) == tts["top_k"]["maximum"]
    assert float(tab.page.input_value("#temperature")) == tts["temperature"]["default"]
    assert tab.page.input_value("#seed") == ""  # no default: the server picks one
    kinds = tab.page.eval_on_selector_all("#voice-rows tr td:nth-child(3)", "cells => cells.map(c => c.textContent)")
    assert kinds == [v["kind"] for v in httpx.get(f"{base_url}/v1/voices").json()["voices"]]
    assert tab.errors == []


def test_synthesis_streams_into_a_playable_clip_and_a_download(tab, base_url):
    voice = tab.voices()[0]
    tab.page.select_option("#voice-a", voice)
    tab.page.fill("#text", TEXT)
    tab.set_knobs(seed=3, max_tokens=MAX_TOKENS)
    tab.page.focus("#synthesise")
    tab.page.keyboard.press("Enter")  # keyboard only
    duration = tab.wait_for_clip("audio-main")
    assert duration > 0.5
    wav = tab.blob_bytes("audio-main")
    # the clip is exactly what the streaming route sends, behind a complete WAV header
    expected = _streamed_pcm(base_url, voice=voice, text=TEXT, lang="zh", seed=3, max_tokens=MAX_TOKENS)
    assert wav[:4] == b"RIFF" and wav[44:] == expected
    assert abs(duration - len(expected) / 2 / 32000) < 0.01
    link = tab.page.locator("#download")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download") == f"{voice}-seed3.wav"
    assert "seed 3" in tab.page.inner_text("#result-info")
    assert tab.errors == []


def test_ab_renders_the_same_text_and_seed_with_two_voices(tab):
    a, b = tab.voices()[:2]
    tab.page.select_option("#voice-a", a)
    tab.page.select_option("#voice-b", b)
    tab.page.fill("#text", TEXT)
    tab.set_knobs(seed=5, max_tokens=MAX_TOKENS)
    tab.page.click("#compare")
    assert tab.wait_for_clip("audio-a") > 0.5 and tab.wait_for_clip("audio-b") > 0.5
    assert tab.page.inner_text("#label-a").startswith(f"A: {a}") and "seed 5" in tab.page.inner_text("#label-a")
    assert tab.page.inner_text("#label-b").startswith(f"B: {b}") and "seed 5" in tab.page.inner_text("#label-b")
    assert tab.blob_bytes("audio-a") != tab.blob_bytes("audio-b")  # two voices, two clips
    assert tab.errors == []


def test_upload_registers_a_voice_then_deletion_asks_first(tab, base_url, tmp_path):
    clip = write_reference(tmp_path / "upload.wav", 180.0, seconds=4.0)
    voice = "page-upload"
    tab.page.fill("#new-voice-id", voice)
    tab.page.set_input_files("#reference", str(clip))
    tab.page.fill("#prompt-text", "你好。")
    tab.page.click("#register")
    tab.page.wait_for_selector(f'#voice-rows tr[data-voice="{voice}"]')
    assert f"Registered voice {voice}" in tab.message()
    row = tab.page.locator(f'#voice-rows tr[data-voice="{voice}"]')
    assert row.locator("td").nth(2).inner_text() == "zero-shot"
    assert voice in [v["voice_id"] for v in httpx.get(f"{base_url}/v1/voices").json()["voices"]]

    tab.page.click(f'button[aria-label="Delete {voice}"]')
    assert tab.page.is_visible("#confirm-delete") and voice in tab.page.inner_text("#confirm-text")
    tab.page.keyboard.press("Escape")  # cancelled: nothing deleted
    assert tab.page.is_hidden("#confirm-delete")
    time.sleep(0.5)
    assert voice in tab.voices()
    tab.page.click(f'button[aria-label="Delete {voice}"]')
    tab.page.click("#confirm-yes")
    tab.page.wait_for_selector(f'#voice-rows tr[data-voice="{voice}"]', state="detached")
    assert f"Deleted voice {voice}" in tab.message()
    assert voice not in [v["voice_id"] for v in httpx.get(f"{base_url}/v1/voices").json()["voices"]]
    assert tab.errors == []


def test_too_long_text_and_unknown_voice_show_their_messages(tab, serve_settings):
    tab.page.fill("#text", "你" * (serve_settings.max_text_chars + 1))
    tab.page.click("#synthesise")
    assert f"accepts at most {serve_settings.max_text_chars}" in tab.message()
    assert tab.page.get_attribute("#audio-main", "src") is None
    tab.page.fill("#text", TEXT)
    # a voice deleted since the list was loaded
    tab.page.evaluate("() => { const s = document.getElementById('voice-a'); s.add(new Option('ghost', 'ghost')); "
                      "s.value = 'ghost'; }")
    tab.page.click("#synthesise")
    tab.page.wait_for_function("() => document.getElementById('message').textContent.includes('ghost')")
    assert tab.message() == "voice 'ghost' not found"


@pytest.fixture
def swept_voice(storage, tiny_pretrained, tmp_path):
    """A voice whose lineage names a sweep, with the sweep's report files in the storage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voicefleet.platform.voices import registry_for

    sweep = storage / "sweeps" / "page-sweep"
    sweep.mkdir(parents=True)
    trials = "index,trial_id,status,best_objective\n0,t0,TERMINATED,0.52\n1,t1,TERMINATED,0.47\n"
    (sweep / "trials.csv").write_text(trials)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [0.6, 0.5, 0.47])
    fig.savefig(sweep / "objective_per_trial.png")
    plt.close(fig)
    registry = registry_for(str(storage))
    registry.register("page-swept", gpt=tiny_pretrained.gpt, sovits=tiny_pretrained.sovits_g,
                      reference=write_reference(tmp_path / "r.wav", 150.0), prompt_text="你好。", prompt_lang="zh",
                      lineage={"sweep": "page-sweep", "trial": "t1", "round": 2})
    yield "page-swept", trials
    registry.delete("page-swept")
    shutil.rmtree(sweep)


def test_a_sweep_voice_shows_its_trials_table_and_plots(browser, base_url, swept_voice):
    voice, trials = swept_voice
    tab = Tab(browser, base_url)
    try:
        tab.page.wait_for_selector(f'#voice-rows tr[data-voice="{voice}"]')
        tab.page.click(f'button[aria-label="Reports of {voice}"]')
        tab.page.wait_for_selector("#reports-body img")
        assert tab.page.inner_text("#reports-title") == f"Reports of {voice}"
        cells = tab.page.eval_on_selector_all(
            "#reports-body table tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent).join(','))")
        assert "\n".join(cells) + "\n" == trials  # the trials table, header first
        tab.page.wait_for_function("() => document.querySelector('#reports-body img').naturalWidth > 0")
        assert tab.errors == []
    finally:
        tab.close()


@pytest.fixture(scope="module")
def keyed_url(base_url, serve_settings):
    """The same app with API keys, served over HTTP in-process on the running synthesis deployment."""
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn (installed with ray[serve]) is missing")
    from ray import serve

    from voicefleet.serve.asgi import create_app

    settings = type(serve_settings).model_validate(serve_settings.model_dump() | {
        "api_keys": [{"key": "admin-key", "voices": ["*"]}, {"key": "alpha-key", "voices": ["alpha"]}]})
    handle = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, handle), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the keyed app did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_keys_are_asked_for_kept_in_the_tab_and_filter_the_voices(browser, keyed_url):
    tab = Tab(browser, keyed_url)
    try:
        assert "This server needs an API key" in tab.message()
        assert tab.page.is_visible("#key-panel") and tab.voices() == []
        tab.page.fill("#api-key", "wrong-key")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_function("() => document.getElementById('message').textContent.includes('invalid')")
        assert tab.message() == "API key refused: invalid API key"
        tab.page.fill("#api-key", "alpha-key")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_selector("#voice-rows tr")
        assert tab.voices() == ["alpha"]  # only what this key may use
        assert tab.page.is_hidden("#key-panel")
        stored = tab.page.evaluate("() => [sessionStorage.getItem('voicefleet.apiKey'), localStorage.length, "
                                   "document.cookie]")
        assert stored == ["alpha-key", 0, ""]
        # another tab of the same browser profile does not have it
        other = Tab(browser, keyed_url, context=tab.context)
        assert "This server needs an API key" in other.message()
        tab.page.reload()  # the same tab keeps it across reloads
        tab.page.wait_for_selector("#voice-rows tr")
        assert tab.voices() == ["alpha"]
        tab.page.click("#show-key")  # the header's button opens the key panel again
        tab.page.click("#forget-key")
        assert tab.page.evaluate("() => sessionStorage.length") == 0 and tab.voices() == []
    finally:
        tab.close()
