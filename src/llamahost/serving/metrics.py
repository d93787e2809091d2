"""The router's /metrics in Prometheus' text format: series per model (``model`` label)
and for the whole pool, plus each loaded model's own llama.cpp series, relabeled.

A model's own series (``llamacpp:*``, among them ``predicted_tokens_seconds``, averaged
between two scrapes, and ``requests_deferred``) come from its server's /metrics, which
needs ``--metrics``; reading them does not count as using the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ..errors import LlamahostError

if TYPE_CHECKING:
    from .pool import Handle, Pool

PER_MODEL = (  # name, type, help, the value from the model's stats and engine series
    ("loaded", "gauge", "1 when the model is loaded", lambda s, e: int(s["state"] == "loaded")),
    ("memory_bytes", "gauge", "Memory the model holds, by its estimate (host and devices)",
     lambda s, e: s["memory_bytes"]),
    ("requests_total", "counter", "Requests sent to the model", lambda s, e: s["requests"]),
    ("requests_in_flight", "gauge", "Requests being answered", lambda s, e: s["in_flight"]),
    ("queue_length", "gauge", "Requests waiting: for the model to load, or deferred by its server",
     lambda s, e: s["waiting"] + e.get("llamacpp:requests_deferred", 0)),
    ("tokens_per_second", "gauge", "Generation throughput in tokens/s, averaged since the last scrape",
     lambda s, e: e.get("llamacpp:predicted_tokens_seconds", 0)),
    ("loads_total", "counter", "Loads, restarts included", lambda s, e: s["loads"]),
    ("unloads_total", "counter", "Unloads after idle_ttl or on request", lambda s, e: s["unloads"]),
    ("evictions_total", "counter", "Unloads to make room for another model", lambda s, e: s["evictions"]),
    ("failures_total", "counter", "Times the model's server died or stopped answering", lambda s, e: s["failures"]),
    ("restarts_total", "counter", "Restarts after a failure", lambda s, e: s["restarts"]),
)
POOL_TOTALS = ("requests_total", "queue_length", "tokens_per_second", "loads_total", "unloads_total",
               "evictions_total", "failures_total", "restarts_total")


def prometheus(pool: "Pool", models: Mapping[str, "Handle"]) -> str:
    per_model = {name: (handle.stats(), engine_series(handle)) for name, handle in models.items()}
    lines: list[str] = []
    pool_values: dict[str, float] = {}
    for metric, kind, text, value in PER_MODEL:
        name = f"llamahost_model_{metric}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for model, (stats, engine) in per_model.items():
            number = value(stats, engine[1])
            lines.append(f'{name}{{model="{_escape(model)}"}} {_number(number)}')
            pool_values[metric] = pool_values.get(metric, 0) + number
    pool_series = [("memory_budget_bytes", "gauge", "The pool's memory budget", pool.memory_budget),
                   ("memory_used_bytes", "gauge", "Memory the loaded models hold, by their estimates", pool.memory_used),
                   ("models_loaded", "gauge", "Models loaded", pool_values.get("loaded", 0))]
    pool_series += [(m, kind, f"All models: {text[0].lower()}{text[1:]}", pool_values.get(m, 0))
                    for m, kind, text, _ in PER_MODEL if m in POOL_TOTALS]
    for metric, kind, text, number in pool_series:
        name = f"llamahost_pool_{metric}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {_number(number)}"]
    lines += _relabeled({model: engine[0] for model, (_, engine) in per_model.items()})
    return "\n".join(lines) + "\n"


def engine_series(handle: "Handle") -> tuple[str, dict[str, float]]:
    """The model's own /metrics text and its unlabeled values, when it is loaded and has them."""
    backend = handle._peek()
    if backend is None:
        return "", {}
    try:
        response = backend.request("GET", "/metrics")
    except LlamahostError:  # unloaded meanwhile
        return "", {}
    if not response.ok:
        return "", {}
    text = response.body.decode("utf-8", "replace")
    values = {}
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            values[name] = float(number)
    return text, values


def _relabeled(texts: Mapping[str, str]) -> list[str]:
    """The models' own series, each sample with a model label, grouped by family."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for model, text in texts.items():
        label = f'model="{_escape(model)}"'
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                if len(headers.setdefault(family, [])) < 2:
                    headers[family].append(line)
            elif line and not line.startswith("#"):
                name, _, rest = line.partition(" ")
                family, brace, labels = name.partition("{")
                labelled = f"{family}{{{label},{labels}" if brace else f"{family}{{{label}}}"
                samples.setdefault(family, []).append(f"{labelled} {rest}")
    out = []
    for family, lines in samples.items():
        out += headers.get(family, []) + lines
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
