"""Model references, the Hugging Face Hub and the local library.

The Hub is ``hub_server.FakeHub``: real HTTP on a loopback port, real GGUF files, and the
real ``huggingface_hub`` client pointed at it by HF_ENDPOINT.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import llamahost
import synthetic
from hub_server import TOKEN, FakeHub
from llamahost import (AmbiguousModelError, ChecksumError, DownloadError, GatedModelError, ModelNotFoundError,
                       list_models, list_quantizations, pull, resolve, search_models)
from llamahost.models.variants import group, quant_tag

HUGE = 1 << 50  # a listed file no machine here holds


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Real GGUFs: one small llama in three quantizations, a split model, a larger F32 model."""
    folder = tmp_path_factory.mktemp("hubfiles")
    files = {f"tiny-{t}.gguf": synthetic.write_llama(folder / f"tiny-{t}.gguf", n_layer=1, weight_type=t)
             for t in ("Q4_0", "Q8_0", "F16")}
    first = synthetic.write_llama(folder / "split-Q4_0.gguf", n_layer=1, weight_type="Q4_0", split_max_tensors=6)
    files.update({p.name: p for p in sorted(folder.glob("split-Q4_0-*.gguf"))})
    assert first.name in files and len(files) == 5
    files["chat-F32.gguf"] = tiny_model  # larger than huggingface_hub's 10 MiB download chunk
    return files


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLAMAHOST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def hub(gguf_files, home, tmp_path, monkeypatch):
    from huggingface_hub import constants

    fake = FakeHub().start()
    f = gguf_files
    fake.add_repo("test-org/tiny-GGUF", {"tiny-Q4_0.gguf": f["tiny-Q4_0.gguf"], "tiny-Q8_0.gguf": f["tiny-Q8_0.gguf"],
                                         "tiny-F16.gguf": f["tiny-F16.gguf"], "tiny-UD-Q8_K_XL.gguf": HUGE},
                  downloads=100)
    fake.add_repo("test-org/split-GGUF", {
        "split-Q4_0-00001-of-00002.gguf": f["split-Q4_0-00001-of-00002.gguf"],
        "split-Q4_0-00002-of-00002.gguf": f["split-Q4_0-00002-of-00002.gguf"],
        "mmproj-split-Q8_0.gguf": f["tiny-Q8_0.gguf"], "mmproj-split-F16.gguf": f["tiny-Q4_0.gguf"]}, downloads=50)
    fake.add_repo("test-org/chat-GGUF", {"chat-F32.gguf": f["chat-F32.gguf"]}, downloads=10)
    fake.add_repo("test-org/gated-GGUF", {"gated-Q4_0.gguf": f["tiny-Q4_0.gguf"]}, gated=True)
    fake.add_repo("test-org/huge-GGUF", {"huge-Q2_K.gguf": HUGE // 2, "huge-Q4_K_M.gguf": HUGE})
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read these when it was imported; the CLI's subprocesses read the variables
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield fake
    fake.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamahost", *args], capture_output=True, text=True, timeout=120)


# -- names ---------------------------------------------------------------------------------------


def test_quantization_tags_splits_and_projectors():
    variants, projectors = group([
        ("Llama-3-8B-Instruct-Q4_K_M.gguf", 40), ("llama-3-8b-instruct-iq2_xs.gguf", 20), ("README.md", 1),
        ("Q8_0/Llama-3-8B-Instruct-Q8_0-00002-of-00002.gguf", 30), ("Q8_0/Llama-3-8B-Instruct-Q8_0-00001-of-00002.gguf", 50),
        ("mmproj-Llama-3-8B-f16.gguf", 5), ("UD-Q4_K_XL/Llama-3-8B-Instruct-UD-Q4_K_XL.gguf", 45),
        ("llama-3-8b-instruct.BF16.gguf", 160)])
    assert [(v.tag, v.files, v.size) for v in variants] == [
        ("IQ2_XS", ("llama-3-8b-instruct-iq2_xs.gguf",), 20),
        ("Q4_K_M", ("Llama-3-8B-Instruct-Q4_K_M.gguf",), 40),
        ("UD-Q4_K_XL", ("UD-Q4_K_XL/Llama-3-8B-Instruct-UD-Q4_K_XL.gguf",), 45),
        ("Q8_0", ("Q8_0/Llama-3-8B-Instruct-Q8_0-00001-of-00002.gguf",
                  "Q8_0/Llama-3-8B-Instruct-Q8_0-00002-of-00002.gguf"), 80),
        ("BF16", ("llama-3-8b-instruct.BF16.gguf",), 160)]
    assert projectors == ["mmproj-Llama-3-8B-f16.gguf"]
    assert quant_tag("Q5_K_S/model.gguf") == "Q5_K_S" and quant_tag("qwen2-7b.gguf") is None


# -- local references ----------------------------------------------------------------------------


def test_folder_of_quantizations_file_and_split(tmp_path, home, gguf_files):
    folder = tmp_path / "test-org--tiny"  # exo's name for test-org/tiny
    folder.mkdir()
    for name in ("tiny-Q4_0.gguf", "tiny-Q8_0.gguf"):
        shutil.copy(gguf_files[name], folder / name)
    shutil.copy(gguf_files["tiny-Q4_0.gguf"], folder / "mmproj-tiny-F16.gguf")

    best = resolve(folder)  # both fit: the larger quantization
    assert (best.path, best.mmproj, best.source, best.name) == (
        folder / "tiny-Q8_0.gguf", folder / "mmproj-tiny-F16.gguf", "folder", "test-org/tiny:Q8_0")
    assert resolve(f"{folder}:q4_0").path == folder / "tiny-Q4_0.gguf"
    with pytest.raises(ModelNotFoundError) as missing_tag:
        resolve(f"{folder}:Q5_K_M")
    assert missing_tag.value.candidates == [f"{folder}:Q4_0", f"{folder}:Q8_0"]

    one_file = resolve(folder / "tiny-Q4_0.gguf")
    assert (one_file.source, one_file.name, one_file.mmproj) == ("file", "tiny-Q4_0", folder / "mmproj-tiny-F16.gguf")

    shutil.copy(gguf_files["chat-F32.gguf"], folder / "chat.gguf")  # now two models: no tag tells them apart
    with pytest.raises(AmbiguousModelError) as ambiguous:
        resolve(folder)
    assert str(folder) in str(ambiguous.value) and f"{folder}/chat.gguf" in ambiguous.value.candidates
    assert resolve(folder / "chat.gguf").mmproj is None  # whose projector it is, nobody can tell

    split = tmp_path / "split"
    split.mkdir()
    for name in ("split-Q4_0-00001-of-00002.gguf", "split-Q4_0-00002-of-00002.gguf"):
        shutil.copy(gguf_files[name], split / name)
    for ref in (split, split / "split-Q4_0-00002-of-00002.gguf"):
        assert resolve(ref).path == split / "split-Q4_0-00001-of-00002.gguf"


def test_missing_references_name_the_candidates(tmp_path, home, gguf_files):
    assert pickle.loads(pickle.dumps(ModelNotFoundError("x", "why", ["y"]))).candidates == ["y"]  # to a worker
    shutil.copy(gguf_files["tiny-Q4_0.gguf"], tmp_path / "there.gguf")
    with pytest.raises(ModelNotFoundError) as missing:
        resolve(tmp_path / "nope.gguf")
    assert isinstance(missing.value, FileNotFoundError) and "nope.gguf" in str(missing.value)
    assert missing.value.candidates == [str(tmp_path / "there.gguf")]
    with pytest.raises(ModelNotFoundError, match="no model of that name in the library"):
        resolve("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no GGUF model"):
        llamahost.Server(empty)


# -- the Hub -------------------------------------------------------------------------------------


def test_search_and_quantizations(hub, gguf_files):
    assert [m.repo for m in search_models("tiny")] == ["test-org/tiny-GGUF"]
    assert [m.repo for m in search_models("gguf", limit=3)] == ["test-org/tiny-GGUF", "test-org/split-GGUF",
                                                                 "test-org/chat-GGUF"]
    quants = list_quantizations("test-org/tiny-GGUF")
    assert [(q.name, q.size, q.fits) for q in quants] == [
        ("test-org/tiny-GGUF:Q4_0", gguf_files["tiny-Q4_0.gguf"].stat().st_size, True),
        ("test-org/tiny-GGUF:Q8_0", gguf_files["tiny-Q8_0.gguf"].stat().st_size, True),
        ("test-org/tiny-GGUF:F16", gguf_files["tiny-F16.gguf"].stat().st_size, True),
        ("test-org/tiny-GGUF:UD-Q8_K_XL", HUGE, False)]
    with pytest.raises(ModelNotFoundError, match="no such repository"):
        list_quantizations("test-org/nope")
    with pytest.raises(AmbiguousModelError, match="none of its quantizations fits") as none_fits:
        resolve("test-org/huge-GGUF")
    assert none_fits.value.candidates == ["test-org/huge-GGUF:Q2_K", "test-org/huge-GGUF:Q4_K_M"]
    assert not any(r[0] == "GET" and "/resolve/" in r[1] for r in hub.requests)  # nothing was downloaded


def test_download_then_load(hub, gguf_files):
    # the best that fits: the largest quantized file (not F16; not the one too large for this machine)
    model = resolve("test-org/tiny-GGUF")
    assert (model.source, model.name, model.mmproj) == ("hub", "test-org/tiny-GGUF:Q8_0", None)
    assert model.path.read_bytes() == gguf_files["tiny-Q8_0.gguf"].read_bytes()

    seen = len(hub.requests)
    for ref in ("test-org/tiny-GGUF", "test-org/tiny-GGUF:q8_0", "tiny-GGUF:Q8_0", "test-org/tiny-GGUF/tiny-Q8_0.gguf"):
        again = resolve(ref)
        assert (again.source, again.path) == ("library", model.path), ref
    assert len(hub.requests) == seen  # the library answered, not the Hub
    [entry] = list_models()
    assert (entry.name, entry.architecture, entry.quantization, entry.context_length, entry.size) == (
        "test-org/tiny-GGUF:Q8_0", "llama", "Q8_0", 4096, model.path.stat().st_size)

    with llamahost.Server("tiny-GGUF:Q8_0", n_ctx=256, parallel=1) as srv:
        assert srv.model_path == str(model.path)
        out = srv.complete("Once upon a time", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] == 4


def test_a_path_that_does_not_exist_never_reaches_the_hub(hub, home, tmp_path, monkeypatch):
    """The Hub holds test-org/tiny-GGUF; local references of the same shape that name nothing here
    fail with ModelNotFoundError, and nothing is downloaded. hf:// names the Hub explicitly."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test-org").mkdir()  # a local folder named like the organisation
    for ref in ("test-org/tiny-GGUF", "./test-org/tiny-GGUF", "../test-org/tiny-GGUF", str(tmp_path / "nope/tiny-GGUF"),
                "~/test-org/tiny-GGUF", "test-org\\tiny-GGUF", "test-org/tiny-GGUF:Q8_0"):
        with pytest.raises(ModelNotFoundError):
            resolve(ref)
        with pytest.raises(ModelNotFoundError):
            llamahost.count_tokens(ref, "hi")  # no estimate for a typo either
    assert hub.downloads_of("tiny-Q8_0.gguf") == [] and list_models() == []
    model = resolve("hf://test-org/tiny-GGUF:Q8_0")  # the Hub, though test-org/ exists here
    assert (model.source, model.name) == ("hub", "test-org/tiny-GGUF:Q8_0")
    assert resolve("hf://test-org/tiny-GGUF:Q8_0").source == "library"
    (tmp_path / "test-org").rmdir()
    assert resolve("test-org/tiny-GGUF:Q8_0").source == "library"  # the same shape, no folder in the way


def test_split_model_with_projector(hub, home, gguf_files):
    model = resolve("test-org/split-GGUF")
    folder = home / "models" / "test-org--split-GGUF"
    assert (model.name, model.path, model.mmproj) == (
        "test-org/split-GGUF:Q4_0", folder / "split-Q4_0-00001-of-00002.gguf", folder / "mmproj-split-F16.gguf")
    assert sorted(p.name for p in folder.glob("*.gguf")) == [
        "mmproj-split-F16.gguf", "split-Q4_0-00001-of-00002.gguf", "split-Q4_0-00002-of-00002.gguf"]
    assert model.server_params({})["mmproj"] == str(model.mmproj)
    assert "mmproj" not in model.server_params({"mmproj_auto": False})
    assert llamahost.inspect(model.path).parts == (folder / "split-Q4_0-00001-of-00002.gguf",
                                                   folder / "split-Q4_0-00002-of-00002.gguf")


def test_resume_after_a_dropped_connection(hub, gguf_files):
    hub.drop_once_after = 12 << 20  # past the client's first 10 MiB chunk
    model = pull("test-org/chat-GGUF")
    gets = hub.downloads_of("chat-F32.gguf")
    assert [r[2] for r in gets] == [None, f"bytes={12 << 20}-"]  # the second request resumed where the first stopped
    assert model.path.read_bytes() == gguf_files["chat-F32.gguf"].read_bytes()


def test_a_corrupted_download_is_caught_by_the_hash(hub, home):
    hub.corrupt = {"tiny-Q4_0.gguf"}
    with pytest.raises(ChecksumError, match="tiny-Q4_0.gguf"):
        pull("test-org/tiny-GGUF:Q4_0")
    assert not (home / "models" / "test-org--tiny-GGUF" / "tiny-Q4_0.gguf").exists()
    assert list_models() == []
    hub.corrupt = set()
    assert pull("test-org/tiny-GGUF:Q4_0").path.is_file()
    assert [m.name for m in list_models()] == ["test-org/tiny-GGUF:Q4_0"]


def test_a_gated_repository_needs_a_token(hub, monkeypatch):
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        pull("test-org/gated-GGUF")
    assert list_models() == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert pull("test-org/gated-GGUF").name == "test-org/gated-GGUF:Q4_0"


def test_offline_mode(hub, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(ModelNotFoundError, match="download=False"):
        resolve("test-org/tiny-GGUF:Q4_0", download=False)
    pulled = pull("test-org/tiny-GGUF:Q4_0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    assert resolve("test-org/tiny-GGUF:Q4_0").path == pulled.path
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as offline:
        resolve("test-org/chat-GGUF")
    assert offline.value.candidates == ["test-org/tiny-GGUF:Q4_0"]
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        pull("test-org/chat-GGUF")
    assert len(hub.requests) == seen

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the variable, as a user sets it, in a new process
    done = run_cli("inspect", "tiny-GGUF:Q4_0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file_type"] == "Q4_0" and len(hub.requests) == seen


def test_interrupted_pull_and_deleted_file_leave_the_library_consistent(hub, home):
    hub.stall_after = 1 << 20
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "pull", "test-org/chat-GGUF"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert hub.stalled.wait(60), "the download did not start"
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the download
    _, err = proc.communicate(timeout=60)
    hub.release.set()
    assert proc.returncode == 130 and "interrupted" in err
    assert list_models() == [] and not list((home / "models").rglob("chat-F32.gguf"))

    hub.stall_after = None
    model = pull("test-org/chat-GGUF")
    model.path.unlink()  # deleted behind the library's back
    done = run_cli("list", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == []
    assert "dropped test-org/chat-GGUF:F32" in done.stderr


def test_cli_search_pull_list_rm(hub, home):
    found = run_cli("search", "tiny", "--json")
    assert found.returncode == 0, found.stderr
    assert [m["repo"] for m in json.loads(found.stdout)] == ["test-org/tiny-GGUF"]
    quants = json.loads(run_cli("search", "test-org/tiny-GGUF", "--json").stdout)
    assert [(q["name"], q["fits"]) for q in quants][-1] == ("test-org/tiny-GGUF:UD-Q8_K_XL", False)

    pulled = run_cli("pull", "test-org/tiny-GGUF:Q4_0", "--json")
    assert pulled.returncode == 0, pulled.stderr
    path = json.loads(pulled.stdout)["path"]
    [entry] = json.loads(run_cli("list", "--json").stdout)
    assert {k: entry[k] for k in ("name", "quantization", "architecture", "context_length", "path")} == {
        "name": "test-org/tiny-GGUF:Q4_0", "quantization": "Q4_0", "architecture": "llama",
        "context_length": 4096, "path": path}
    table = run_cli("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "QUANT", "ARCH", "CONTEXT", "PATH"]
    assert table[1].split()[0] == "test-org/tiny-GGUF:Q4_0" and table[1].endswith(path)

    removed = run_cli("rm", "tiny-GGUF:Q4_0", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["deleted"] == [path] and not os.path.exists(path)
    assert json.loads(run_cli("list", "--json").stdout) == []
    again = run_cli("rm", "tiny-GGUF:Q4_0")
    assert again.returncode == 2 and "no such model in the library" in again.stderr


def test_serve_a_hub_reference(hub):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", "test-org/tiny-GGUF:Q4_0", "--port", str(port),
                             "-c", "256"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "tiny-Q4_0.gguf" in line, proc.stderr.read() if proc.poll() is not None else line
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()
        assert models["data"][0]["id"].endswith("tiny-Q4_0.gguf")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_fits_here_from_the_header_alone_equals_the_estimate_of_the_download(hub, home):
    """Each quantization's verdict comes from its header, fetched with range requests: a few KB of
    files of MBs, counted; the estimate on that header equals estimate() on the downloaded file."""
    from llamahost.models.remote import verdicts

    params = dict(n_ctx=1024, parallel=2)
    found = {v.tag: v for v in verdicts("test-org/tiny-GGUF", **params)}
    assert set(found) == {"Q4_0", "Q8_0", "F16", "UD-Q8_K_XL"}
    huge = found["UD-Q8_K_XL"]  # 1 PiB: more than all memory here, known without reading it
    assert huge.where == "none" and not huge.fits and huge.fetched == 0 and "larger than" in huge.error
    file_requests = [(method, path, rng) for method, path, rng in hub.requests if path.endswith(".gguf")]
    assert file_requests and all(rng for _, _, rng in file_requests)  # nothing but ranges of the files
    for tag in ("Q4_0", "Q8_0", "F16"):
        verdict = found[tag]
        assert verdict.fits and verdict.where == "cpu" and 0 < verdict.fetched < verdict.size / 2, verdict
        downloaded = pull(f"test-org/tiny-GGUF:{tag}")
        real = llamahost.estimate(downloaded.path, **params)
        assert verdict.estimate.devices == real.devices and verdict.estimate.n_ctx == real.n_ctx
    again = {v.tag: v for v in verdicts("test-org/tiny-GGUF", **params)}
    assert all(v.fetched == 0 for v in again.values())  # cached per revision
