"""Tagging throughput: sentences per second of the attention tagger against the BiLSTM (and CNN), CPU.

    python benchmarks/text_throughput.py --out runs/text/throughput.json
    python benchmarks/text_throughput.py --checkpoint-dir runs/text/conll2000-chunk   # trained weights

Tags the 2012 CoNLL-2000 test sentences (batched by length, as ``compare`` does) with each model and
reports the best of ``--repeats`` passes. Speed does not depend on the weights, so without checkpoints
the models are freshly initialised with the default configuration. The self-attention layers process
all words of a batch in parallel; the BiLSTM must take T sequential steps; Viterbi decoding (CRF) is
sequential for every model and is timed separately by also running each model without it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lab.datasets import require_dataset, resolve_data_root  # noqa: E402
from core.lab.experiment import count_parameters  # noqa: E402
from core.lab.harness import atomic_open, seed_everything, set_num_threads_from_env  # noqa: E402
from text.__main__ import CONLL2000_URL, load_tagger  # noqa: E402
from text.data import TaggingDataset, Vocabularies, make_loader, read_conll  # noqa: E402
from text.models import TaggerConfig, build_tagger  # noqa: E402


def time_tagging(model, dataset: TaggingDataset, batch_size: int, repeats: int) -> float:
    """Best wall time (seconds) of tagging every sentence of ``dataset`` once."""
    batches = list(make_loader(dataset, batch_size, shuffle=False))
    model.eval()
    best = float("inf")
    with torch.inference_mode():
        model.predict(batches[0])  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            for batch in batches:
                model.predict(batch)
            best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data root (default: $ATTNLAB_DATA, else ~/.cache/attnlab)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="folder with <model>-seed0.pt from 'python -m text compare' (default: fresh models)")
    parser.add_argument("--models", default="attention,bilstm,cnn", help="comma-separated (default: all three)")
    parser.add_argument("--batch-sizes", default="1,64", help="comma-separated sentences per batch (default: 1,64)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the test set; the best counts (default: 3)")
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
    rows = []
    for name in args.models.split(","):
        checkpoint = Path(args.checkpoint_dir) / f"{name}-seed0.pt" if args.checkpoint_dir else None
        if checkpoint is not None and checkpoint.exists():
            model, vocabs, _ = load_tagger(checkpoint)
            source = str(checkpoint)
        else:
            vocabs = fresh_vocabs
            config = TaggerConfig(model=name, num_words=len(vocabs.words), num_chars=len(vocabs.chars),
                                  num_labels=len(vocabs.labels), feature_vocab_sizes=[len(v) for v in vocabs.features])
            model, source = build_tagger(config), "fresh (default config)"
        dataset = TaggingDataset(test, vocabs)
        words = sum(len(s) for s in test)
        for crf in ([True, False] if model.crf is not None else [False]):
            variant = model
            if not crf and model.crf is not None:
                variant = build_tagger(replace(model.config, crf=False))
                variant.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("crf.")})
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                seconds = time_tagging(variant, dataset, batch_size, args.repeats)
                rows.append({
                    "model": name, "crf": crf, "batch_size": batch_size, "sentences": len(test), "words": words,
                    "seconds": seconds, "sentences_per_s": len(test) / seconds, "words_per_s": words / seconds,
                    "params": count_parameters(variant), "weights": source,
                })
                print(f"{name:9s} crf={crf!s:5s} batch {batch_size:3d}: {len(test) / seconds:8.1f} sentences/s "
                      f"({words / seconds:9.0f} words/s)", file=sys.stderr)
    result = {
        "benchmark": "text tagging throughput, CoNLL-2000 test set",
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "processor": platform.processor(),
        "default_config": asdict(TaggerConfig()), "results": rows,
    }
    out = Path(args.out)
    with atomic_open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
