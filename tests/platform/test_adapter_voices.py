"""Adapter voices in the registry: only the adapters, the reference and the base fingerprints are
stored; `export` writes merged official files equal to base + adapter; a different base is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from voicefleet.cli.app import app
from voicefleet.models import adapters as lora
from voicefleet.models.adapter_config import ADAPTER_SUFFIX
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.pretrained import init_pretrained
from voicefleet.platform.registry import RegistryError, file_names
from voicefleet.platform.voices import export_voice, registry_for

runner = CliRunner()


def _adapter_file(model, stage: str, path: Path, seed: int) -> Path:
    adapter = lora.Adapter.create(model, lora.AdapterSpec(stage, rank=4))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in adapter.items():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)
    return lora.save_adapter(adapter, path)


@pytest.fixture
def adapter_files(tiny_pretrained, tmp_path) -> dict[str, Path]:
    return {"sovits": _adapter_file(load_sovits(tiny_pretrained.sovits_g).model, "sovits",
                                    tmp_path / "bob.sovits.lora.safetensors", 1),
            "gpt": _adapter_file(load_gpt(tiny_pretrained.gpt)[0], "gpt", tmp_path / "bob.gpt.lora.safetensors", 2)}


@pytest.fixture
def storage(tiny_pretrained, reference_wav, adapter_files, tmp_path) -> str:
    root = str(tmp_path / "runs")
    registry_for(root).register("bob", gpt=adapter_files["gpt"], sovits=adapter_files["sovits"],
                                reference=reference_wav, prompt_text="hello there", prompt_lang="en",
                                lineage={"pretrained": str(tiny_pretrained.root)})
    return root


def test_an_adapter_voice_stores_adapters_and_base_fingerprints(storage, tiny_pretrained, adapter_files):
    record = registry_for(storage).get("bob")
    assert record.is_adapter and set(record.adapters) == {"gpt", "sovits"}
    assert record.files["gpt"] == "gpt.lora.safetensors" and record.files["sovits"] == "sovits.lora.safetensors"
    assert record.adapters["gpt"]["base_fingerprint"] == lora.base_fingerprint_of(load_gpt(tiny_pretrained.gpt)[0],
                                                                                   "gpt")
    assert record.adapters["sovits"]["rank"] == 4
    files = registry_for(storage).local_files("bob")
    assert {k: p.name for k, p in files.items()} == record.files and all(p.is_file() for p in files.values())
    stored = files["gpt"].stat().st_size + files["sovits"].stat().st_size
    full = tiny_pretrained.gpt.stat().st_size + tiny_pretrained.sovits_g.stat().st_size
    assert stored < full / 4  # tiny models; at full v2 size the default adapters are ~2% of a voice


def test_a_voice_re_registered_as_full_drops_its_adapter_files(storage, tiny_pretrained, reference_wav):
    registry = registry_for(storage)
    registry.register("bob", gpt=tiny_pretrained.gpt, sovits=tiny_pretrained.sovits_g, reference=reference_wav,
                      prompt_text="hi", prompt_lang="en", overwrite=True)
    record = registry.get("bob")
    names = file_names(record.version)  # a re-registration's files carry its version
    assert not record.is_adapter and record.files == names and not names["gpt"].endswith(ADAPTER_SUFFIX)
    assert sorted(p.name for p in registry.local_files("bob")["gpt"].parent.iterdir()) == \
        sorted([*names.values(), "voice.json"])


def test_an_adapter_given_as_the_wrong_stage_is_refused(tmp_path, reference_wav, adapter_files):
    with pytest.raises(RegistryError, match="is a sovits adapter, given as the gpt weights"):
        registry_for(str(tmp_path / "r")).register("x", gpt=adapter_files["sovits"], sovits=adapter_files["sovits"],
                                                    reference=reference_wav, prompt_text="a", prompt_lang="en")


def test_export_writes_merged_official_files(storage, tiny_pretrained, adapter_files, tmp_path):
    exported = export_voice("bob", storage, tmp_path / "GPT-SoVITS")
    # GPT: the exported (float16) weights equal the pretrained weights + the adapter's update
    base = load_gpt(tiny_pretrained.gpt)[0]
    expected = lora.merge_(base, lora.load_adapter(adapter_files["gpt"]).build(base))
    gpt = load_gpt(exported.gpt)[0]
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(gpt.state_dict()[key], value.half().float(), atol=0, rtol=0, msg=key)
    sovits = load_sovits(exported.sovits)
    assert not sovits.has_posterior
    base_s = load_sovits(tiny_pretrained.sovits_g).model
    plain = lora.base_fingerprint_of(base_s, "sovits")
    assert lora.base_fingerprint_of(sovits.model, "sovits") != plain  # the adapter is in the weights
    merged = lora.merge_(base_s, lora.load_adapter(adapter_files["sovits"]).build(base_s))
    theirs = lora.effective_tensors(sovits.model)
    for key, value in lora.effective_tensors(merged).items():
        if not key.startswith("posterior_encoder."):
            torch.testing.assert_close(theirs[key], value.half().float(), atol=1e-3, rtol=1e-3, msg=key)


def test_export_on_a_different_base_is_refused_and_writes_nothing(storage, tmp_path):
    other = init_pretrained(tmp_path / "other", "tiny", seed=5)
    out = tmp_path / "GPT-SoVITS"
    done = runner.invoke(app, ["export", "bob", "--storage", storage, "--to", str(out), "--pretrained", str(other.root)])
    assert done.exit_code == 2, done.output
    assert "trained on a different sovits base" in done.output and "Traceback" not in done.output
    assert not out.exists()
    done = runner.invoke(app, ["export", "bob", "--storage", storage, "--to", str(out)])
    assert done.exit_code == 0, done.output
    assert (out / "GPT_weights_v2" / "bob_v1.ckpt").is_file()


@pytest.mark.slow
def test_onnx_export_of_an_adapter_voice_holds_merged_weights_in_the_registry(storage, tiny_pretrained):
    pytest.importorskip("onnx", reason="exporting ONNX needs the onnx package (pip install 'voicefleet[onnx]')")
    from voicefleet.inference.onnx_engine import file_sha256, read_manifest
    from voicefleet.platform.onnx_exports import ONNX_FOLDER, served_export

    done = runner.invoke(app, ["export", "onnx", "bob", "--storage", storage, "--pretrained",
                               str(tiny_pretrained.root)])
    assert done.exit_code == 0, done.output
    registry = registry_for(storage)
    folder = registry.local_dir("bob") / ONNX_FOLDER
    manifest = read_manifest(folder)
    files = registry.local_files("bob")
    # the graphs come from merged weights, neither the adapter files nor the plain pretrained ones
    sources = {manifest["sources"][k]["sha256"] for k in ("gpt", "sovits")}
    assert not sources & {file_sha256(files["gpt"]), file_sha256(files["sovits"]), file_sha256(tiny_pretrained.gpt),
                          file_sha256(tiny_pretrained.sovits_g)}
    # and the export is current for the voice as registered: an ONNX replica serves it
    record = registry.get("bob")
    assert manifest["voice"]["registry"]["version"] == record.version
    assert served_export(registry, record, files, storage=storage, pretrained=str(tiny_pretrained.root)) == folder
