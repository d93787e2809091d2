"""Parameters: names, types, environment variables, llama-server's own flags."""

from __future__ import annotations

import pytest

import llamahost
from llamahost.core import config


def test_unknown_parameter_names_it(tiny_model):
    with pytest.raises(ValueError, match="n_ctxx"):
        llamahost.Server(tiny_model, n_ctxx=512)


@pytest.mark.parametrize("name, value", [
    ("n_ctx", "512"), ("n_ctx", 1.5), ("n_ctx", True), ("parallel", "4"),
    ("n_gpu_layers", "most"), ("n_gpu_layers", -3), ("cache_type_k", "q9"), ("flash_attn", "maybe"),
    ("embedding", "yes"), ("pooling", "max"), ("mmproj", ""), ("seed", "42"),
])
def test_wrong_type_names_the_parameter(tiny_model, name, value):
    with pytest.raises(ValueError, match=name):
        llamahost.Server(tiny_model, **{name: value})


def test_engine_rejects_bad_values_with_its_own_message(tiny_model):
    with pytest.raises(ValueError, match="cache"):
        llamahost.Server.from_args(["-m", str(tiny_model), "--cache-type-k", "nonsense"])
    with pytest.raises(ValueError, match="--no-such-flag"):
        llamahost.Server.from_args(["-m", str(tiny_model), "--no-such-flag"])
    with pytest.raises(ValueError, match="--help"):
        llamahost.Server.from_args(["--help"])


def test_spelling_of_documented_and_upstream_options():
    args = config.server_args("m.gguf", {"n_ctx": 1024, "flash_attn": True, "jinja": False, "lora": ["a", "b"],
                                         "cache_ram": 0, "no_warmup": True, "load_mode": "mmap", "temp": 0.5, "cont_batching": False},
                              environ={})
    assert args[:2] == ["--model", "m.gguf"]
    joined = " ".join(args)
    for part in ("--ctx-size 1024", "--flash-attn on", "--no-jinja", "--lora a --lora b", "--cache-ram 0",
                 "--no-warmup", "--load-mode mmap", "--temp 0.5", "--host 127.0.0.1", "--port 0"):
        assert part in joined
    assert "cont-batching" in joined and "--cont-batching" not in args


def test_environment_variables(tiny_model, monkeypatch):
    monkeypatch.setenv("LLAMAHOST_N_CTX", "1024")
    monkeypatch.setenv("LLAMAHOST_PARALLEL", "2")
    with llamahost.Server(tiny_model) as srv:
        props = srv.props()
        assert props["default_generation_settings"]["n_ctx"] == 512  # 1024 over 2 slots
        assert props["total_slots"] == 2
    with llamahost.Server(tiny_model, n_ctx=512, parallel=1) as srv:  # keywords win
        assert srv.props()["default_generation_settings"]["n_ctx"] == 512
    monkeypatch.setenv("LLAMAHOST_N_CTX", "lots")
    with pytest.raises(ValueError, match="LLAMAHOST_N_CTX"):
        llamahost.Server(tiny_model)


def test_every_documented_parameter_is_a_llama_server_option():
    flags = {a for opt in config.llama_server_options() for a in opt["args"] + opt["args_neg"]}
    for param in config.PARAMS:
        assert param.flag in flags, param
        if param.negative:
            assert param.negative in flags, param


def test_from_args_takes_llama_server_flags_verbatim(tiny_model):
    with llamahost.Server.from_args(["-m", str(tiny_model), "-c", "768", "-np", "1", "--port", "0",
                                     "-lv", "1", "--alias", "tiny"]) as srv:
        assert srv.props()["default_generation_settings"]["n_ctx"] == 768
        assert srv.models()["data"][0]["id"] == "tiny"


# A child per option of upstream's table, forked from a process that has not started the engine yet
# (no engine thread to inherit): the parse must come back to Python, whatever the option does.
_EVERY_OPTION = r"""
import json, os, sys
from llamahost.core import _native

RETURNED = 77
options = json.loads(sys.argv[1])
ended = []
for opt in options:
    values = {"flag": [], "bool": [], "pair": ["1", "1"]}.get(opt["kind"], ["1"])
    args = ["--model", "m.gguf", opt["args"][-1], *values]
    pid = os.fork()
    if pid == 0:
        try:
            _native.load_params(args)
        except BaseException:
            pass
        os._exit(RETURNED)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != RETURNED:
        ended.append(" ".join(args[2:]))
print(json.dumps(ended))
"""


def test_no_option_of_upstreams_table_ends_the_process(tmp_path):
    """Every option llama-server's parser knows, with a value where it takes one: the parse returns
    (ValueError or not); none ends the process, as --version, --help or --list-devices would."""
    import json
    import subprocess
    import sys

    options = config.llama_server_options()
    assert {"--version", "--help", "--list-devices", "--cache-list", "--completion-bash"} <= config.exiting_options()
    done = subprocess.run([sys.executable, "-c", _EVERY_OPTION, json.dumps(options)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert len(options) > 200


def test_every_entry_point_refuses_exiting_options(tiny_model):
    for name in ("version", "list_devices", "help", "usage", "completion_bash", "cache_list"):
        flag = "--" + name.replace("_", "-")
        with pytest.raises(ValueError, match=flag):
            llamahost.Server(tiny_model, **{name: True})
        with pytest.raises(ValueError, match=flag):
            llamahost.Server.from_args(["-m", str(tiny_model), flag])
        with pytest.raises(ValueError, match=flag):
            llamahost.estimate(tiny_model, **{name: True})
        with pytest.raises(ValueError, match=flag):
            llamahost.count_tokens(tiny_model, "hi", **{name: True})
    with llamahost.Pool(memory_budget="1GiB") as pool:
        with pytest.raises(ValueError, match="--version"):
            pool.get(tiny_model, version=True)
        with pytest.raises(ValueError, match="--list-devices"):
            pool.get(tiny_model, args=["--list-devices"])
        with llamahost.Provider(pool, version=True) as provider, pytest.raises(ValueError, match="--version"):
            provider.handle(tiny_model)


def test_a_template_upstream_cannot_verify_is_an_error_not_an_exit(tiny_model):
    """The parser's other exit: an exception that is not an invalid argument (exit(1) in llama-server)."""
    with pytest.raises(ValueError, match="chat template is not supported"):
        llamahost.Server(tiny_model, chat_template="{% if %}", jinja=True)


_STDERR_WRITER = r"""
import os, sys, threading
from llamahost.core import _native

def write():
    for i in range(3000):
        os.write(2, b"line %d\n" % i)

writer = threading.Thread(target=write)
writer.start()
while writer.is_alive():
    for bad in (["--model", "m.gguf", "--ctx-size", "x"], ["--model", "m.gguf", "-c", "512"]):
        try:
            _native.load_params(bad)
        except ValueError:
            pass
writer.join()
"""


def test_parsing_leaves_the_process_stderr_alone():
    """Another thread's stderr lines, written while arguments are parsed over and over, all arrive."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _STDERR_WRITER], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(3000)]
