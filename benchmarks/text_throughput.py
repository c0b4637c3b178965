"""Tagging throughput: sentences per second of the attention tagger against the BiLSTM (and CNN), CPU.

    python benchmarks/text_throughput.py --out runs/text/throughput.json
    python benchmarks/text_throughput.py --checkpoint-dir runs/text/conll2000-chunk   # trained weights

Tags the CoNLL-2000 test sentences (all 2012, or an evenly spaced ``--sentences`` subset; batched by length,
as ``compare`` does) with each model. For each batch size every contender (each model, with and without
its CRF) tags the set once per round; rounds are interleaved with alternating order (``core.lab.bench``),
throughput is taken from the median round, and each speed ratio is the median of the per-round ratios, so
background load on a shared CPU hits both sides of a ratio alike. Speed does not depend on the weights, so
without checkpoints the models are freshly initialised with the default configuration. The self-attention layers process
all words of a batch in parallel; the BiLSTM must take T sequential steps; Viterbi decoding (CRF) is
sequential for every model and is timed separately by also running each model without it.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lab.bench import cpu_model, interleaved_rounds, load_average, paired_ratio, summarize, write_result  # noqa: E402
from core.lab.datasets import require_dataset, resolve_data_root  # noqa: E402
from core.lab.experiment import count_parameters  # noqa: E402
from core.lab.harness import seed_everything, set_num_threads_from_env  # noqa: E402
from text.data import CONLL2000_URL, TaggingDataset, Vocabularies, make_loader, read_conll  # noqa: E402
from text.models import TaggerConfig, build_tagger  # noqa: E402
from text.train import load_tagger  # noqa: E402


def tagging_pass(model, dataset: TaggingDataset, batch_size: int):
    """A call that tags every sentence of ``dataset`` once (batches built beforehand, not timed)."""
    batches = list(make_loader(dataset, batch_size, shuffle=False))
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                model.predict(batch)

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data root (default: $ATTNLAB_DATA, else ~/.cache/attnlab)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="a 'python -m text compare' --out folder: its <model>/seed0/best.pt weights are timed "
                             "(default: fresh models)")
    parser.add_argument("--models", default="attention,bilstm,cnn", help="comma-separated (default: all three)")
    parser.add_argument("--batch-sizes", default="1,64", help="comma-separated sentences per batch (default: 1,64)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved timed rounds per batch size, after a warm-up round (default: 5)")
    parser.add_argument("--sentences", type=int, default=None,
                        help="tag an evenly spaced subset of this many test sentences (default: all 2012)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $ATTNLAB_THREADS or torch's)")
    parser.add_argument("--out", default="runs/text/throughput.json", help="JSON output (default: runs/text/throughput.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        set_num_threads_from_env()
    seed_everything(0)

    root = require_dataset(resolve_data_root(args.data_dir), name="CoNLL-2000 chunking", subdir="conll2000",
                           expected=["train.txt", "test.txt"], layout="train.txt, test.txt: 'word POS chunk' lines",
                           url=CONLL2000_URL)
    train = read_conll(root / "train.txt", label_column=2, feature_columns=[1])
    test = read_conll(root / "test.txt", label_column=2, feature_columns=[1])
    fresh_vocabs = Vocabularies.build(train, min_word_count=2)
    if args.sentences:  # evenly spaced, so the subset keeps the test set's mix of lengths
        test = test[:: max(1, len(test) // args.sentences)][: args.sentences]
    words = sum(len(s) for s in test)
    contenders = {}  # "attention+crf" -> (model name, crf, model, dataset, weights)
    for name in args.models.split(","):
        checkpoint = Path(args.checkpoint_dir) / name / "seed0" / "best.pt" if args.checkpoint_dir else None
        if checkpoint is not None and not checkpoint.exists():
            parser.error(f"--checkpoint-dir: {checkpoint} does not exist (train it with python -m text compare "
                         f"--models {name} --out {args.checkpoint_dir})")
        if checkpoint is not None:
            model, vocabs, _ = load_tagger(checkpoint)
            source = str(checkpoint)
        else:
            vocabs = fresh_vocabs
            config = TaggerConfig(model=name, num_words=len(vocabs.words), num_chars=len(vocabs.chars),
                                  num_labels=len(vocabs.labels), feature_vocab_sizes=[len(v) for v in vocabs.features])
            model, source = build_tagger(config), "fresh (default config)"
        dataset = TaggingDataset(test, vocabs)
        for crf in ([True, False] if model.crf is not None else [False]):
            variant = model
            if not crf and model.crf is not None:
                variant = build_tagger(replace(model.config, crf=False))
                variant.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("crf.")})
            contenders[f"{name}+crf" if crf else name] = (name, crf, variant, dataset, source)
    load_start = load_average()
    rows, ratios = [], []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        calls = {key: tagging_pass(variant, dataset, batch_size) for key, (_, _, variant, dataset, _) in contenders.items()}
        rounds = interleaved_rounds(calls, args.repeats)
        timing = summarize(rounds)
        for key, (name, crf, variant, _, source) in contenders.items():
            seconds = timing[key]["median_ms"] / 1000
            rows.append({
                "model": name, "crf": crf, "batch_size": batch_size, "sentences": len(test), "words": words,
                "seconds": seconds, "rounds": len(rounds), "sentences_per_s": len(test) / seconds,
                "words_per_s": words / seconds, "params": count_parameters(variant), "weights": source,
            })
            print(f"{name:9s} crf={crf!s:5s} batch {batch_size:3d}: {len(test) / seconds:8.1f} sentences/s "
                  f"({words / seconds:9.0f} words/s)", file=sys.stderr)
        # Throughput of the attention tagger over each other tagger's, same CRF setting (> 1: attention faster):
        # time(other) / time(attention) within a round.
        for other, (name, crf, *_) in contenders.items():
            mine = "attention+crf" if crf else "attention"
            if name != "attention" and mine in contenders:
                ratios.append({"batch_size": batch_size, "crf": crf, "attention_over": name,
                               "throughput_ratio": paired_ratio(rounds, other, mine), "rounds": len(rounds)})
    result = {
        "benchmark": "text tagging throughput, CoNLL-2000 test set",
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "processor": cpu_model(),
        "command": sys.argv, "timing": "interleaved rounds, alternating order; throughput from the median round; "
        "ratios: median of per-round ratios (core.lab.bench)", "load_average_start": load_start,
        "load_average_end": load_average(), "default_config": asdict(TaggerConfig()), "results": rows,
        "attention_throughput_ratios": ratios,
    }
    print(f"wrote {write_result(args.out, result)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
