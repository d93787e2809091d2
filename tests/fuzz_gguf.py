"""Fuzzing with mutated GGUF files: ``inspect``, ``estimate`` and ``Server`` on each case.

    python tests/fuzz_gguf.py --cases 10000 --max-seconds 3600 --save fuzz-findings

Each case is a seed model (real vocabulary GGUFs from llama.cpp, tiny synthetic models)
mutated by ``gguf_mutations.mutate`` with ``random.Random(seed * 1_000_003 + case)``, so
``--seed S --only N`` reproduces case N. Worker processes run the cases under an
address-space limit (RLIMIT_AS) and a per-case timeout; a worker that dies (a crash in
the engine) or overruns (a hang) is counted and replaced.

Outcomes per stage: ``ok``; a clear rejection, by exception type (``InvalidModelError``,
``ModelLoadError``, ...: llamahost's own errors); or a finding: ``crash``, ``hang``,
``alloc`` (MemoryError, or the engine reporting a failed allocation) or ``unclear`` (any
other exception). The exit status is 1 when there are findings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gguf_mutations  # noqa: E402

STAGES = ("inspect", "estimate", "server")
FINDINGS = ("crash", "hang", "alloc", "unclear")
# llama.cpp's server answers a completion on a context without memory (an encoder-only model, such as
# the BERT seeds and their mutations) with a server error; docs/HARDENING.md says so
UPSTREAM_NO_LOGITS = "the current context does not support logits computation"
ALLOC_MARKERS = ("bad_alloc", "failed to allocate", "cannot allocate memory", "out of memory")
VOCAB_DIR = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models"


# -- seeds -------------------------------------------------------------------------------------

def write_seeds(folder: Path) -> list[list[Path]]:
    """Real GGUFs (llama.cpp's vocabulary files) and tiny synthetic models that load, one a
    split GGUF (each seed: its files, the first part first)."""
    import synthetic
    from llamahost.gguf.info import split_parts

    folder.mkdir(parents=True, exist_ok=True)
    template = (synthetic.TEMPLATE_DIR / "Qwen-Qwen3-0.6B.jinja").read_text()
    small = dict(n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=512)
    seeds = [
        synthetic.write_model(folder / "llama-q4_0.gguf", "llama", weight_type="Q4_0", chat_template=template, **small),
        synthetic.write_model(folder / "llama-f32.gguf", "llama", vocab="phi-3", n_layer=1, **small),
        synthetic.write_model(folder / "qwen3moe-q8_0.gguf", "qwen3moe", vocab="gpt-2", weight_type="Q8_0", **small),
        synthetic.write_model(folder / "bert-q8_0.gguf", "bert", weight_type="Q8_0", **small),
        synthetic.write_model(folder / "split-q8_0.gguf", "llama", weight_type="Q8_0", split_max_tensors=10, **small),
    ]
    for vocab in ("llama-spm", "bert-bge"):
        shutil.copy(VOCAB_DIR / f"ggml-vocab-{vocab}.gguf", folder / f"vocab-{vocab}.gguf")
        seeds.append(folder / f"vocab-{vocab}.gguf")
    return [split_parts(path) for path in seeds]


@dataclass
class Seed:
    parts: list[Path]  # one file, or a split GGUF's parts
    data: list[bytes]
    layouts: list[gguf_mutations.Layout]

    @property
    def name(self) -> str:
        return self.parts[0].name


def load_seeds(seeds: list[list[Path]]) -> list[Seed]:
    return [Seed(parts, [p.read_bytes() for p in parts], [gguf_mutations.layout(p) for p in parts]) for parts in seeds]


def make_case(seeds: list[Seed], seed: int, case: int) -> tuple[Seed, dict[str, bytes], list[str]]:
    """The files of case ``case``: a seed with one of its files mutated (name -> bytes)."""
    rng = random.Random(seed * 1_000_003 + case)
    # the synthetic models load, so the engine sees their mutations: picked twice as often
    chosen = rng.choices(seeds, [1 if s.name.startswith("vocab-") else 2 for s in seeds])[0]
    part = rng.randrange(len(chosen.parts)) if len(chosen.parts) > 1 else 0
    data, notes = gguf_mutations.mutate(rng, chosen.data[part], chosen.layouts[part])
    files = {p.name: d for p, d in zip(chosen.parts, chosen.data)}
    files[chosen.parts[part].name] = data
    if len(chosen.parts) > 1:
        notes = [f"in {chosen.parts[part].name}"] + notes
    return chosen, files, notes


# -- the worker: runs the stages on each path its parent sends ---------------------------------

def _stage_calls(path: str):
    import llamahost

    def serve() -> None:
        with llamahost.Server(path, n_ctx=256, parallel=1, threads=1, n_batch=64) as srv:
            srv.chat([{"role": "user", "content": "Hi"}], max_tokens=2)

    return (("inspect", lambda: llamahost.inspect(path)),
            ("estimate", lambda: llamahost.estimate(path, n_ctx=256, parallel=1)),
            ("server", serve))


def _classify(call) -> tuple[str, str]:
    from llamahost.errors import APIError, InvalidModelError, ModelLoadError

    try:
        call()
    except MemoryError as exc:
        return "alloc", f"MemoryError: {exc}"
    except APIError as exc:  # the model loaded; its request failed: a client error, or a server fault
        if UPSTREAM_NO_LOGITS in str(exc):  # a chat to an encoder-only model: upstream's own 500
            return "APIError 500, encoder-only", str(exc)[:300]
        if exc.status >= 500 and exc.status != 501:
            return "unclear", f"APIError {exc.status}: {exc}"[:300]
        return f"APIError {exc.status}", str(exc)[:300]
    except (InvalidModelError, ModelLoadError) as exc:  # refused: before the engine, or by it
        return type(exc).__name__, str(exc)[:300]
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        return "unclear", f"{type(exc).__name__}: {exc}"[:300]
    return "ok", ""


def _new_log(log_fd: int) -> str:
    """What the engine logged (fd 2) since the last call; the log starts over."""
    os.lseek(log_fd, 0, os.SEEK_SET)
    text = os.read(log_fd, 1 << 20).decode("utf-8", "replace")
    os.ftruncate(log_fd, 0)
    os.lseek(log_fd, 0, os.SEEK_SET)
    return text


def worker_main(memory_limit: int) -> None:
    # the protocol gets stdout; anything the engine prints goes to the log (fd 2)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import llamahost  # noqa: F401 - loaded (and the engine's backends initialised) before the limit
    from llamahost import devices

    devices()
    base = _address_space()
    resource.setrlimit(resource.RLIMIT_AS, (base + memory_limit, base + memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort ends the process now, without a core dump
    proto.write(json.dumps({"ready": base}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        _new_log(2)
        for stage, call in _stage_calls(request["path"]):
            outcome, message = _classify(call)
            log = _new_log(2)
            if outcome not in FINDINGS and any(m in log.lower() for m in ALLOC_MARKERS):
                outcome, message = "alloc", f"{outcome}: {message}; the engine logged a failed allocation"
            proto.write(json.dumps({"stage": stage, "outcome": outcome, "message": message,
                                    "log": log[-1500:] if outcome in FINDINGS else ""}) + "\n")
        proto.write(json.dumps({"done": request["case"]}) + "\n")


def _address_space() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


# -- the parent: cases to workers, outcomes counted --------------------------------------------

class Worker:
    def __init__(self, folder: Path, memory_limit: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.models = folder / "model"  # a case's files, alone in their folder: a folder reference resolves to them
        self.path = self.models / "model.gguf"
        self.log = open(folder / "engine.log", "w+b")
        # an abort prints its assertion, not a backtrace through gdb (which can take minutes)
        env = dict(os.environ, MALLOC_ARENA_MAX="2", PYTHONFAULTHANDLER="1", GGML_NO_BACKTRACE="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--memory-limit", str(memory_limit)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self._buffer = b""
        try:
            ready = self.read(120)
        except EOFError:
            ready = None
        if ready is None or "ready" not in ready:
            raise RuntimeError(f"the fuzz worker did not start: {self.log_tail()}")

    def read(self, timeout: float) -> dict | None:
        """The next protocol line; None if the worker said nothing in ``timeout`` s.
        EOFError if it died."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.proc.wait()
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def write_case(self, files: dict[str, bytes]) -> None:
        shutil.rmtree(self.models, ignore_errors=True)
        self.models.mkdir()
        for name, data in files.items():
            (self.models / name).write_bytes(data)
        self.path = self.models / next(iter(files))  # the first part

    def send(self, case: int) -> None:
        self.proc.stdin.write(json.dumps({"case": case, "path": str(self.path)}).encode() + b"\n")
        self.proc.stdin.flush()

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-1500:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.log.close()


@dataclass
class Report:
    seed: int
    cases: int = 0
    counts: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in STAGES})
    findings: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    workers_started: int = 0

    def as_dict(self) -> dict:
        return {"seed": self.seed, "cases": self.cases, "seconds": round(self.seconds, 1),
                "workers_started": self.workers_started,
                "counts": {s: dict(c.most_common()) for s, c in self.counts.items()}, "findings": self.findings}

    def summary(self) -> str:
        lines = [f"{self.cases} cases in {self.seconds:.0f} s (seed {self.seed}, {self.workers_started} worker starts)"]
        for stage in STAGES:
            lines.append(f"  {stage:<9} " + ", ".join(f"{k} {v}" for k, v in self.counts[stage].most_common()))
        lines.append(f"  findings: {len(self.findings)}")
        for f in self.findings[:20]:
            lines.append(f"    case {f['case']} {f['stage']}: {f['outcome']} {f['message'][:160]} ({'; '.join(f['notes'])})")
        return "\n".join(lines)


def run(cases: int, *, seed: int = 0, workers: int = 2, timeout: float = 60.0, memory_limit: int = 1 << 30,
        max_seconds: float | None = None, workdir: Path | None = None, save: Path | None = None,
        only: list[int] | None = None, progress: bool = False, report_path: Path | None = None) -> Report:
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="llamahost-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
                   if own_dir else workdir)
    try:
        seeds = load_seeds(write_seeds(workdir / "seeds"))
        report = Report(seed)
        todo = iter(only if only is not None else range(cases))
        lock = threading.Lock()
        started = time.monotonic()
        deadline = started + max_seconds if max_seconds else None

        def next_case() -> int | None:
            with lock:
                if deadline and time.monotonic() > deadline:
                    return None
                return next(todo, None)

        def record(case: int, stage: str, outcome: str, message: str, notes: list[str], seed_model: Seed,
                   files: dict[str, bytes], log: str) -> None:
            with lock:
                report.counts[stage][outcome] += 1
                if outcome in FINDINGS:
                    finding = {"case": case, "stage": stage, "outcome": outcome, "message": message,
                               "seed_model": seed_model.name, "notes": notes, "log": log}
                    if save is not None:
                        folder = save / f"case-{seed}-{case}"
                        folder.mkdir(parents=True, exist_ok=True)
                        for name, data in files.items():
                            (folder / name).write_bytes(data)
                        (save / f"case-{seed}-{case}.json").write_text(json.dumps(finding, indent=2))
                    report.findings.append(finding)

        failures: list[BaseException] = []

        def drive(k: int) -> None:
            worker = None
            try:
                while (case := next_case()) is not None:
                    if worker is None:
                        worker = Worker(workdir / f"w{k}", memory_limit)
                        with lock:
                            report.workers_started += 1
                    seed_model, files, notes = make_case(seeds, seed, case)
                    worker.write_case(files)
                    worker.send(case)
                    case_deadline = time.monotonic() + timeout
                    done = set()
                    while True:
                        try:
                            line = worker.read(max(case_deadline - time.monotonic(), 0))
                            outcome = "hang" if line is None else ""
                        except EOFError:
                            line, outcome = None, "crash"
                        if line is None:  # died or overran: the stage it was in is the finding
                            stage = next(s for s in STAGES if s not in done)
                            log = worker.log_tail()
                            message = (f"no answer in {timeout:.0f} s" if outcome == "hang" else
                                       f"the worker died ({_signal_name(worker.proc.returncode)}): {_cause(log)}")
                            worker.stop()
                            worker = None
                            record(case, stage, outcome, message, notes, seed_model, files, log)
                            break
                        if "done" in line:
                            break
                        done.add(line["stage"])
                        record(case, line["stage"], line["outcome"], line["message"], notes, seed_model, files,
                               line["log"])
                    with lock:
                        report.cases += 1
                        if progress and report.cases % 500 == 0:
                            print(f"{report.cases} cases, {len(report.findings)} findings, "
                                  f"{time.monotonic() - started:.0f} s", flush=True)
                            if report_path:  # so far: a run that is stopped keeps its figures
                                report.seconds = time.monotonic() - started
                                report_path.write_text(json.dumps(report.as_dict(), indent=2))
            except BaseException as exc:  # the harness itself failed: the run must not pass
                failures.append(exc)
            finally:
                if worker is not None:
                    worker.stop()

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        report.seconds = time.monotonic() - started
        return report
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _cause(log: str) -> str:
    """The line of an engine log that says why the process ended (an assertion, an abort)."""
    lines = [ln for ln in log.splitlines() if re.search(r"\.(c|cpp|h):\d+: |terminate called|what\(\)", ln)]
    return lines[-1].strip() if lines else log.strip().splitlines()[-1:][0] if log.strip() else "no log"


def _signal_name(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: random, printed)")
    parser.add_argument("--only", type=int, nargs="+", help="run just these case numbers (to reproduce)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case (all stages)")
    parser.add_argument("--memory-limit", type=int, default=1 << 30,
                        help="bytes of address space a worker may add to what it holds after start-up")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop starting cases after this long")
    parser.add_argument("--save", type=Path, help="folder for the files of findings (and a JSON note each)")
    parser.add_argument("--report", type=Path, help="write the report as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.memory_limit)
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    report = run(args.cases, seed=seed, workers=args.workers, timeout=args.timeout, memory_limit=args.memory_limit,
                 max_seconds=args.max_seconds, save=args.save, only=args.only, progress=True, report_path=args.report)
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps(report.as_dict(), indent=2))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
