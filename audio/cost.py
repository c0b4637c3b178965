"""What full, windowed and truncated attention cost as the input grows: time and memory of one
forward + backward pass.

Two memory measures, both for one pass over one utterance:

- ``saved_mb``: bytes autograd keeps for the backward pass (every tensor saved by an op, counted once
  per storage). Deterministic, and where the T×T score matrices of full attention show up.
- ``peak_mb`` (``measure_peak``): the growth of the process's peak resident memory during the pass,
  measured in a fresh subprocess (after a short warm-up pass) so earlier passes cannot hide it.

Legend: B batch, T frames, F mel bins, H heads, Dh head dim.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from audio.models import AudioConfig, build_model, structure_mask
from core.attention import scaled_dot_product_attention
from core.positional import RelativePositionBias


def saved_bytes(run) -> tuple[torch.Tensor, int]:
    """``run()``'s output and the bytes of the distinct tensor storages autograd saved while it ran."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, sum(storages.values())


def _model_pass(config: AudioConfig, T: int):
    model = build_model(config)
    features = torch.randn(1, T, config.n_mels)
    lengths = torch.tensor([T])

    def run():
        return model(features, lengths)

    return model, run


def _attention_pass(config: AudioConfig, T: int):
    """One core attention call (the inner part of a layer) under the model's mask and position bias."""
    H, Dh = config.heads, config.dim // config.heads
    q, k, v = (torch.randn(1, H, T, Dh, requires_grad=True) for _ in range(3))  # (B, H, T, Dh)
    bias = RelativePositionBias(H, config.max_distance)
    mask = structure_mask(config, T)

    def run():
        return scaled_dot_product_attention(q, k, v, mask, position_bias=bias)

    return bias, run


def make_pass(config: AudioConfig, T: int, *, scope: str = "model"):
    """``(module, run)``: ``run()`` is one forward pass over ``T`` random frames (``scope`` as in
    :func:`measure`), built once so that a benchmark can time several variants interleaved."""
    if scope not in ("model", "attention"):
        raise ValueError(f"scope must be 'model' or 'attention', got {scope!r}")
    return (_model_pass if scope == "model" else _attention_pass)(config, T)


def measure(config: AudioConfig, T: int, *, scope: str = "model", repeats: int = 3) -> dict[str, float]:
    """Median seconds and saved-for-backward MB of one forward + backward over ``T`` frames.

    Args:
        config (AudioConfig): the model (its ``attention`` field picks the variant).
        T (int): frames (100 per second of audio).
        scope (str, default "model"): ``"model"`` (the whole network) or ``"attention"`` (one core
            attention call with the model's mask and position bias).
        repeats (int, default 3): timed passes after one warm-up pass.
    """
    module, run = make_pass(config, T, scope=scope)
    out, saved = saved_bytes(run)
    out.sum().backward()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run().sum().backward()
        times.append(time.perf_counter() - started)
    return {"frames": T, "seconds": statistics.median(times), "saved_mb": saved / 2**20}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def _peak_main(config_json: str, T: int, scope: str) -> None:
    """Subprocess entry: one pass, print the growth of peak RSS in MB.

    The peak is the kernel's high-water mark ``VmHWM``, reset just before the pass (``ru_maxrss`` would
    not do: Linux carries it over from the parent process).
    """
    config = AudioConfig(**json.loads(config_json))
    make = _model_pass if scope == "model" else _attention_pass
    make(config, 64)[1]().sum().backward()  # warm-up: lazily loaded kernels are not part of the pass
    _, run = make(config, T)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_mb("VmRSS")
    run().sum().backward()
    print(json.dumps({"peak_mb": _status_mb("VmHWM") - before}))


def measure_peak(config: AudioConfig, T: int, *, scope: str = "model") -> float:
    """Growth of peak resident memory (MB) during one forward + backward, in a fresh subprocess."""
    code = "import sys; from audio.cost import _peak_main; _peak_main(sys.argv[1], int(sys.argv[2]), sys.argv[3])"
    result = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(config)), str(T), scope],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]
