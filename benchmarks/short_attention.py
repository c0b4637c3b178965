"""Attention over few keys on the CPU: torch's fused kernel against the textbook's three steps.

`core.attention` sends attention over few keys on the CPU to the explicit steps (scores, softmax, weighted sum)
rather than to `F.scaled_dot_product_attention`'s fused kernel; how many keys count as few depends on the head
size, the precision and whether a backward pass follows (`core.attention.cpu_explicit_max_keys`). This
benchmark is the evidence for that rule and its numbers: for S = 4 ... 512 keys (T = S queries), 16, 32, 48 and
64 channels a head, with and without a causal mask, it times both on the same q, k, v, forward + backward
(training) and forward alone without a gradient (evaluation, decoding). Each point holds the work about
constant (rows × S × Dh = 2²¹), so short sequences come in many rows, as a batch of words or of 4 × 4 windows
does.

The contenders run in interleaved rounds in alternating order (`core.lab.bench`); each figure is the median
of the per-round ratios kernel / explicit (> 1: the explicit steps are faster). The record also says which
side `core.attention` takes at each point and mode.

`--models g2p,vision,vision-convstem` times what the rule changes in the project's own training steps instead:
the default g2p Transformer (`python -m text g2p compare`'s size, bfloat16 autocast where the CPU has it, as
`--precision auto` trains, batches of 256 real CMUdict pronunciations), the default vision attention model
(float32, a batch of 128 random CIFAR-shaped images) and the conv-stem one in bfloat16 (`--conv-stages 1
--precision bf16`, the hour's recipe on a CPU with native bfloat16), each once with `core`'s rule and once with
every call sent to the kernel (`CPU_EXPLICIT_MAX_KEYS = 0`), from the same weights on the same batches.

    python benchmarks/short_attention.py --threads 2 [--precision bf16] [--out benchmarks/results/short_attention.json]
    python benchmarks/short_attention.py --plot RECORD.json [RECORD.json ...] --png FILE   # draw records
    python benchmarks/short_attention.py --models g2p,vision,vision-convstem --threads 2 --out FILE  # training steps
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.attention import _explicit_attention, cpu_explicit_max_keys  # noqa: E402
from core.lab.bench import interleaved_rounds, machine, paired_ratio, summarize, write_result  # noqa: E402
from core.lab.harness import autocast  # noqa: E402

LENGTHS = (4, 8, 16, 32, 64, 128, 256, 512)
HEAD_DIMS = (16, 32, 48, 64)
WORK = 2**21  # rows × S × Dh at every point


def limit(precision: str, head_dim: int, train: bool) -> int:
    """The most keys `core.attention` computes explicitly on the CPU in this precision, for this head size, in
    training (a backward pass follows) or not."""
    return cpu_explicit_max_keys(torch.bfloat16 if precision == "bf16" else torch.float32, head_dim, train)


def rule(precision: str, dims) -> dict:
    """The rule's limits for each head size, as the record keeps them."""
    return {str(Dh): {mode: limit(precision, Dh, mode == "train") for mode in ("train", "eval")} for Dh in dims}


def bench_point(S: int, Dh: int, causal: bool, precision: str, rounds: int) -> dict:
    rows = max(1, WORK // (S * Dh))
    g = torch.Generator().manual_seed(S * 1000 + Dh)
    q, k, v = (torch.randn(rows, 1, S, Dh, generator=g) for _ in range(3))
    grad_out = torch.randn(rows, 1, S, Dh, generator=g)
    mask = torch.ones(S, S, dtype=torch.bool).tril() if causal else None
    scale = Dh**-0.5
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]

    def kernel(train: bool):
        with autocast(torch.device("cpu"), precision), torch.set_grad_enabled(train):
            out = F.scaled_dot_product_attention(*(leaves if train else (q, k, v)), attn_mask=mask, scale=scale)
        if train:
            out.backward(grad_out.to(out.dtype))

    def explicit(train: bool):
        with autocast(torch.device("cpu"), precision), torch.set_grad_enabled(train):
            out = _explicit_attention(*(leaves if train else (q, k, v)), mask, 0.0, scale)
        if train:
            out.backward(grad_out.to(out.dtype))

    row: dict = {"S": S, "head_dim": Dh, "rows": rows, "causal": causal,
                 "core_takes": {mode: "explicit" if S <= limit(precision, Dh, mode == "train") else "kernel"
                                for mode in ("train", "eval")}}
    for mode, train in (("train", True), ("eval", False)):
        times = interleaved_rounds({"kernel": lambda: kernel(train), "explicit": lambda: explicit(train)}, rounds)
        stats = summarize(times)
        row[mode] = {"kernel_ms": stats["kernel"]["median_ms"], "explicit_ms": stats["explicit"]["median_ms"],
                     "kernel_over_explicit": paired_ratio(times, "kernel", "explicit")}
    print(f"  S={S:4d} Dh={Dh:3d} {'causal' if causal else 'no mask':7s} rows={rows:6d}: kernel / explicit "
          f"{row['train']['kernel_over_explicit']:5.2f}x forward+backward, {row['eval']['kernel_over_explicit']:5.2f}x "
          f"forward  (core takes the {row['core_takes']['train']}, the {row['core_takes']['eval']})", flush=True)
    return row


def summarise(points: list[dict]) -> dict:
    """Per side core takes and mode: the smallest and largest kernel / explicit ratio over the points."""
    out: dict = {}
    for side, taken in (("explicit_side", "explicit"), ("kernel_side", "kernel")):
        out[side] = {}
        for mode in ("train", "eval"):
            ratios = [p[mode]["kernel_over_explicit"] for p in points if p["core_takes"][mode] == taken]
            if ratios:
                out[side][mode] = {"min": min(ratios), "max": max(ratios)}
    return out


def plot(records: list[dict], png: str | Path) -> Path:
    """One row of panels per record (precision), forward + backward on the left and forward alone on the right:
    kernel time / explicit time against the number of keys, one line per head size, without a mask; a filled
    marker where `core.attention` takes the explicit steps, a hollow one where it takes the kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(len(records), 2, figsize=(10.5, 4.0 * len(records)), sharey=True, squeeze=False)
    for row_axes, record in zip(axes, records):
        points = record["points"]
        dims = sorted({p["head_dim"] for p in points})
        colours = dict(zip(dims, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
        lengths = sorted({p["S"] for p in points})
        for ax, (mode, what) in zip(row_axes, (("train", "forward + backward"), ("eval", "forward alone"))):
            for Dh in dims:
                line = sorted((p["S"], p[mode]["kernel_over_explicit"], p["core_takes"][mode]) for p in points
                              if p["head_dim"] == Dh and not p["causal"])
                ax.plot([x for x, _, _ in line], [y for _, y, _ in line], "-", color=colours[Dh], linewidth=1.2)
                for x, y, taken in line:
                    ax.plot(x, y, "o", markersize=5, color=colours[Dh],
                            markerfacecolor=colours[Dh] if taken == "explicit" else "white")
            ax.axhline(1.0, color="0.3", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_xticks(lengths, [str(n) for n in lengths])
            ax.set_yticks([0.125, 0.25, 0.5, 1, 2, 4, 8], ["⅛", "¼", "½", "1", "2", "4", "8"])
            ax.set_xlabel("keys S (= queries T), no mask")
            ax.set_title(f"{record['precision']}, {what}; {record.get('cpu') or 'CPU'}, "
                         f"{record.get('threads', '?')} thread(s)", fontsize=9)
        row_axes[0].set_ylabel("fused kernel time / explicit steps' time\n(> 1: the explicit steps are faster)")
    handles = [Line2D([], [], color=c, marker="o", label=f"{Dh} channels a head") for Dh, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker="o", linestyle="", label="core takes the explicit steps"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
                       label="core takes the kernel")]
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle("Attention over few keys on the CPU: torch's fused kernel against the textbook's three steps",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 if len(records) > 1 else 0.08, 1, 1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


@contextlib.contextmanager
def kernel_only():
    """Every attention call to the fused kernel, as before the rule: `CPU_EXPLICIT_MAX_KEYS = 0`."""
    import core.attention as attention

    saved = attention.CPU_EXPLICIT_MAX_KEYS
    attention.CPU_EXPLICIT_MAX_KEYS = 0
    try:
        yield
    finally:
        attention.CPU_EXPLICIT_MAX_KEYS = saved


def g2p_contender(batches: int) -> tuple[dict, Callable[[], None]]:
    """The default g2p Transformer's training steps over ``batches`` fixed batches of real words."""
    from core.lab.harness import resolve_precision
    from text.g2p.data import BucketBatches, read_cmudict, split_words
    from text.g2p.models import build_model, default_config
    from text.g2p.train import TrainConfig, _loss, prepare

    lexicon, report = read_cmudict()
    data = prepare(split_words(lexicon), report, stress=False)
    train = TrainConfig()
    precision = resolve_precision(torch.device("cpu"), "auto")
    fixed = list(itertools.islice(iter(BucketBatches(data.train, data.vocab, train.batch_size, seed=0)), batches))
    torch.manual_seed(0)
    model = build_model("transformer", default_config("transformer"), len(data.vocab.letters), len(data.vocab.phonemes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cpu = torch.device("cpu")

    def run() -> None:
        for batch in fixed:
            optimizer.zero_grad(set_to_none=True)
            _loss(model, batch, cpu, train.label_smoothing, precision).backward()
            optimizer.step()

    return {"model": "g2p transformer (default size)", "precision": precision, "batches": batches,
            "batch_size": train.batch_size, "letters_max": max(b.letters.shape[1] for b in fixed)}, run


def vision_contender(steps: int, conv_stages: int = 0, precision: str = "fp32") -> tuple[dict, Callable[[], None]]:
    """A vision attention model's training steps on one fixed batch of random images: the default (float32),
    or with ``conv_stages`` convolutional stages in ``precision``."""
    from vision.models import default_config
    from vision.train import train_config_for, training_contender

    config = default_config("attention", 3, 32, 32, num_classes=10, conv_stages=conv_stages)
    train = train_config_for("attention", batch_size=128, precision=precision)
    _, call = training_contender(config, train, (3, 32, 32), 10, steps, torch.device("cpu"))
    name = "vision attention (default)" if not conv_stages else f"vision attention (conv stem {conv_stages})"
    return {"model": name, "precision": precision, "steps": steps, "batch_size": 128}, call


def bench_models(names: list[str], rounds: int) -> list[dict]:
    """Each model's training steps with `core`'s rule against the kernel for everything (the same weights at the
    start: each side is its own copy, built from the same seed)."""
    rows = []
    for name in names:
        make = {"g2p": lambda: g2p_contender(8), "vision": lambda: vision_contender(3),
                "vision-convstem": lambda: vision_contender(3, conv_stages=1, precision="bf16")}[name]
        row, rule = make()
        _, kernel = make()

        def kernel_side(call=kernel):
            with kernel_only():
                call()

        times = interleaved_rounds({"rule": rule, "kernel": kernel_side}, rounds)
        stats = summarize(times)
        row.update(rule_ms=stats["rule"]["median_ms"], kernel_ms=stats["kernel"]["median_ms"],
                   speedup=paired_ratio(times, "kernel", "rule"), rounds=rounds)
        print(f"  {row['model']}, {row['precision']}: with the rule {row['rule_ms']:8.1f} ms, kernel only "
              f"{row['kernel_ms']:8.1f} ms: the rule {row['speedup']:.2f}x faster", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default="runs/benchmarks/short_attention.json", help="JSON output path")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per point (default: 7)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="float32, or both sides under bfloat16 autocast (default: fp32)")
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help=f"key counts S (default: {LENGTHS})")
    parser.add_argument("--quick", action="store_true", help="S = 8 and 128, Dh = 32, 2 rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--models", default=None, metavar="g2p,vision,vision-convstem",
                        help="time these models' training steps with the rule and with the kernel only, instead")
    parser.add_argument("--plot", nargs="+", metavar="RECORD", help="draw these records (one panel each) and exit")
    parser.add_argument("--png", default="runs/benchmarks/short_attention.png", help="where --plot draws")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        records = [json.loads(Path(f).read_text()) for f in args.plot]
        print(f"wrote {plot(records, args.png)}")
        return {}
    if args.models:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: training steps, core's rule against "
              "the kernel for every call")
        result = {"benchmark": "short_attention_models", **machine(), "models": bench_models(args.models.split(","),
                  args.rounds), "command": " ".join(["python", "benchmarks/short_attention.py", *(argv or sys.argv[1:])])}
        print(f"wrote {write_result(args.out, result)}")
        return result
    lengths, dims, rounds = ((8, 128), (32,), 2) if args.quick else (args.lengths, HEAD_DIMS, args.rounds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}; core takes the explicit "
          f"steps for S <= {rule(args.precision, dims)} (by head size: training, evaluation)")
    points = [bench_point(S, Dh, causal, args.precision, rounds)
              for S, Dh, causal in itertools.product(lengths, dims, (False, True))]
    result = {"benchmark": "short_attention", **machine(), "precision": args.precision, "rounds": rounds,
              "work_per_point": WORK, "cpu_explicit_max_keys": rule(args.precision, dims), "points": points,
              "summary": summarise(points),
              "command": " ".join(["python", "benchmarks/short_attention.py", *(argv or sys.argv[1:])])}
    path = write_result(args.out, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
