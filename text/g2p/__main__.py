"""``python -m text g2p``: grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary.

    python -m text g2p compare --threads 2                              # transformer vs LSTMs, 12 epochs, ~33 min
    python -m text g2p compare --quick                                  # small subset, 3 epochs, < 2 min
    python -m text g2p compare --stress                                 # phonemes with stress digits
    python -m text g2p pronounce --checkpoint runs/text/g2p/transformer/seed0/best.pt attention tomato
    python -m text g2p average runs/text/g2p/transformer/seed0/epochs/*.pt --out runs/text/g2p/average
    python -m text g2p ensemble runs/a/transformer/seed0/best.pt runs/b/transformer/seed0/best.pt --out runs/text/g2p/ens
    python -m text g2p compare --models transformer --teacher runs/a/.../best.pt runs/b/.../best.pt  # distil

``compare`` trains the Transformer encoder–decoder and the LSTM encoder–decoders with and without
additive attention under one protocol (same split, epochs, schedule; weights kept on validation WER) and
writes metrics.json, report.md and figures to ``--out``. ``pronounce`` prints ``word<TAB>phonemes``.
``average`` averages the weights of a run's last epochs (kept by ``compare --keep-epochs K``), validation
choosing how many (with ``--each-epoch``, each epoch alone is a candidate too). ``ensemble`` decodes with
several trained models at once, validation choosing which. ``compare --teacher`` trains on a trained model's (or
an ensemble's) pronunciations of the training words instead of the dictionary's: a single student that learns
from the ensemble (sequence-level knowledge distillation).
``python -m text.g2p`` is the same command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

from core.lab.cli import (UsageError, add_common_args, add_precision_arg, add_schedule_args, apply_common_args,
                          apply_profile, check_common_args, cli_main, positive_int, precision_from_args, subset_of)
from core.lab.bench import machine, write_result
from core.lab.harness import (CheckpointError, atomic_open, load_checkpoint, read_json_object, save_checkpoint,
                              select_device)
from core.lab.runner import (Experiment, MetricsContract, ModelSpec, RunnerOptions, check_out_dir, run_experiment,
                             stored_record, stored_runs)
from text.data import file_identity
from text.g2p.data import G2PDataError, Vocab, check_word, cmudict_path, read_cmudict, split_words
from text.g2p.models import (MODELS, ROLES, G2PEnsemble, LSTMConfig, TransformerG2PConfig, build_model,
                             config_from_dict, default_config)
from text.g2p.plots import make_figures
from text.g2p.train import (G2PData, TrainConfig, average_last_epochs, choose_ensemble, distil, make_train_one,
                            prepare, pronounce_words, teacher_pronunciations)

DEFAULT_OUT = "runs/text/g2p"
#: ``ensemble`` scores every subset of its checkpoints on validation: 2**n - 1 of them
MAX_ENSEMBLE_CANDIDATES = 6
#: what a torch file that is not one of our checkpoints raises when read as one (a file that is no checkpoint
#: at all raises core.lab.harness.CheckpointError, which the command line prints as it is)
NOT_A_CHECKPOINT = (KeyError, TypeError, ValueError, RuntimeError)
CONTRACT = MetricsContract(headline="test_wer", select="val_wer", mode="min")
# --quick: the tour's profile. A few thousand words, small models, three epochs: it shows the machinery
# end to end in under two minutes, not what the models can do.
QUICK = {"limit_words": 3000, "epochs": 3, "batch_size": 64, "warmup_steps": 40, "dim": 64, "layers": 2,
         "ffn_dim": 256, "hidden": 128}


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"must be in (0, 0.5), got {value}")
    return value


def read_lexicon(args: argparse.Namespace):
    """The dictionary: ``--data-dir/cmudict/cmudict.dict`` when given, else the pinned package's copy."""
    path = cmudict_path()
    if args.data_dir is not None:
        path = Path(args.data_dir) / "cmudict" / "cmudict.dict"
        if not path.is_file():
            raise UsageError(f"--data-dir {args.data_dir}: no cmudict/cmudict.dict there (leave --data-dir out to "
                             f"use the copy in the pinned cmudict package)")
    lexicon, report = read_cmudict(path)
    return path, lexicon, report


def build_specs(args: argparse.Namespace) -> list[ModelSpec]:
    specs = []
    for name in args.models:
        config = default_config(name)
        if isinstance(config, TransformerG2PConfig):
            config = replace(config, dim=args.dim, heads=args.heads, encoder_layers=args.layers,
                             decoder_layers=args.layers, ffn_dim=args.ffn_dim, dropout=args.dropout)
        else:
            config = replace(config, hidden=args.hidden)
        specs.append(ModelSpec(name, ROLES[name], config))
    return specs


def run_compare(args: argparse.Namespace):
    kept = apply_profile(args, build_parser_defaults(), QUICK) if args.quick else []
    if args.keep_epochs < 0:
        raise UsageError(f"--keep-epochs must be >= 0, got {args.keep_epochs}")
    check_common_args(args)
    apply_common_args(args)
    if args.dim % args.heads:
        raise UsageError(f"--dim {args.dim} must be divisible by --heads {args.heads}")
    path, lexicon, report = read_lexicon(args)
    splits = split_words(lexicon, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         seed=args.split_seed, limit_words=args.limit_words)
    data = prepare(splits, report, args.stress)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                        label_smoothing=args.label_smoothing, beam=args.beam, precision=precision_from_args(args),
                        keep_epochs=args.keep_epochs)
    sizes = splits.sizes()
    convention = "with stress digits (84 symbols)" if args.stress else "without stress digits (39 phonemes)"
    data_identity = {
        "file": str(path), "file_bytes": path.stat().st_size, "parse": report.to_dict(), "stress": args.stress,
        "split_seed": args.split_seed, "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
        "limit_words": args.limit_words, "sizes": sizes, "vocab": data.vocab.to_dict(),
    }
    take_teacher = None
    if args.teacher:
        data_identity["teacher"], take_teacher = distil_from_teacher(args, data, data_identity)
    split_text = ", ".join(f"{k} {v['words']:,} words ({v['pronunciations']:,} pronunciations)"
                           for k, v in sizes.items())
    experiment = Experiment(
        domain="text", dataset="cmudict" + ("-stress" if args.stress else ""),
        title="Grapheme-to-phoneme on CMUdict (" + ("84 symbols, with stress digits" if args.stress
                                                   else "39 phonemes, no stress digits") + ")",
        contract=CONTRACT, specs=build_specs(args), train_one=make_train_one(data, train), config=train,
        data_identity=data_identity,
        intro=(f"CMU Pronouncing Dictionary from the pinned `cmudict` package, phonemes {convention}. Split by word "
               f"(all pronunciations of a word in one split), seed {args.split_seed}: {split_text}. "
               f"WER: a word is wrong unless the prediction equals one of its references; PER: Levenshtein distance "
               f"to the closest reference over that reference's length, summed over words."),
        notes=[*kept, f"dictionary: {report.summary()}",
               f"test decoding: {'greedy' if args.beam == 1 else f'beam search, {args.beam} beams'}; validation "
               "(selection) decoding: greedy",
               f"training: {train.epochs} epochs, batch {train.batch_size}, AdamW lr {train.lr:g} with "
               f"{train.warmup_steps} warm-up steps then cosine to 0, label smoothing {train.label_smoothing:g}, "
               f"teacher forcing; transformer dropout {args.dropout:g}; training forward passes in "
               + ("bfloat16 (autocast; weights and optimizer in float32)" if train.precision == "bf16" else "float32")
               + ", decoding in float32",
               *([f"the weights after each of the last {train.keep_epochs} epochs are kept in <model>/seed<k>/epochs/ "
                  "(`python -m text g2p average` averages them)"] if train.keep_epochs else [])],
        table=["test_per", "val_per"], bookkeeping_table=["best_epoch", "epochs", "seconds"],
        distributed=False, figures=lambda records, out: make_figures(records, out, data), prepare=take_teacher,
    )
    result = run_experiment(experiment, RunnerOptions.from_args(args))
    return result


def distil_from_teacher(args: argparse.Namespace, data: G2PData,
                        data_identity: dict) -> tuple[dict, Callable[[Path], tuple[list[str], dict]]]:
    """Sequence-level knowledge distillation: train on the pronunciations of ``--teacher`` (one checkpoint, or
    several decoding as an ensemble, with ``--teacher-beam`` beams) instead of the dictionary's.

    Checks the teacher now and returns its identity for the run's data identity (the files' SHA-256, the beam,
    the number of training words: a run resumed with another teacher is refused by the runner) and the
    runner's ``prepare`` step, which replaces ``data``'s training targets with the teacher's pronunciations.
    That step decodes only once the runner holds ``--out``'s lock and has checked the stored runs, and keeps
    the pronunciations in ``<out>/teacher.json``, read back when the same teacher comes again (a resumed run
    decodes nothing twice); a teacher.json from another teacher or other training words is decoded afresh.

    Raises:
        UsageError: a teacher trained on another split or phoneme convention (its training words could be
            this run's validation or test words), or any reason ``load_models`` gives.
    """
    device = select_device(args.device)
    models, vocab, identities = load_models(args.teacher, device, "--teacher")
    ours, theirs = split_settings({"data": data_identity}), split_settings(identities[0])  # load_models: one split
    if theirs != ours:
        raise UsageError(f"--teacher {args.teacher[0]} was trained on another split or phoneme convention ({theirs}, "
                         f"this run: {ours}): its training words could be this run's validation or test words, so "
                         "it cannot teach this run")
    if vocab.to_dict() != data.vocab.to_dict():
        raise UsageError(f"--teacher {args.teacher[0]}: its vocabulary differs from this run's")
    key = {"sha256": [file_identity(p)["sha256"] for p in args.teacher], "beam": args.teacher_beam}
    words = list(data.splits.train)

    def take_teacher(out: Path) -> tuple[list[str], dict]:
        cache = out / "teacher.json"
        saved = read_json_object(cache) or {}  # one cut short or unreadable is decoded afresh
        started = time.perf_counter()
        if saved.get("key") == key and set(saved.get("pronunciations", {})) == set(words):
            pronunciations = {w: tuple(p.split()) for w, p in saved["pronunciations"].items()}
            decoded = "read back from teacher.json"
        else:
            teacher = models[0] if len(models) == 1 else G2PEnsemble(models)
            print(f"the teacher ({len(models)} model(s), {args.teacher_beam} beams) pronounces the "
                  f"{len(words):,} training words", file=sys.stderr)
            pronunciations = teacher_pronunciations(teacher, words, vocab, device, beam=args.teacher_beam,
                                                    progress=not args.no_progress)
            with atomic_open(cache, "w") as f:
                json.dump({"key": key, "checkpoints": list(args.teacher),
                           "pronunciations": {w: " ".join(p) for w, p in pronunciations.items()}}, f)
            decoded = f"decoded in {time.perf_counter() - started:.0f} s"
        unlike = distil(data, pronunciations)
        note = (f"training targets: sequence-level knowledge distillation (Kim & Rush, 2016): each of the "
                f"{len(pronunciations):,} training words is pronounced once, as the teacher pronounces it "
                f"({', '.join(f'`{p}`' for p in args.teacher)}, "
                + ("decoding as an ensemble, " if len(models) > 1 else "")
                + f"{args.teacher_beam} beams; {unlike:,} unlike every dictionary reference; {decoded}); validation "
                "and test are scored against the dictionary's references as always")
        return [note], {"distillation": {"checkpoints": list(args.teacher), "unlike_every_reference": unlike}}

    return {**key, "words": len(words)}, take_teacher


def build_parser_defaults() -> argparse.Namespace:
    return build_parser().parse_args(["compare"])


def load_model(path: Path, device: torch.device, flag: str = "--checkpoint") -> tuple[torch.nn.Module, Vocab, dict]:
    """The model a ``best.pt`` (or ``averaged.pt``) holds, its vocabulary and the identity of its run.

    Raises:
        UsageError: a missing file, or one ``compare`` or ``average`` did not write.
    """
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file (compare writes <out>/<model>/seed<k>/best.pt)")
    try:
        ckpt = load_checkpoint(path)
        name, vocab, identity = ckpt["model_name"], Vocab.from_dict(ckpt["vocab"]), ckpt["config"]
        config = config_from_dict(name, identity["config"])
        model = build_model(name, config, len(vocab.letters), len(vocab.phonemes)).to(device)
        model.load_state_dict(ckpt["model"])
    except CheckpointError:
        raise
    except NOT_A_CHECKPOINT as error:
        raise UsageError(f"{flag} {path} is not a g2p best.pt written by `python -m text g2p compare` "
                         f"({type(error).__name__}: {error})") from None
    return model.eval(), vocab, identity


def load_models(paths: Sequence[str], device: torch.device,
                flag: str) -> tuple[list[torch.nn.Module], Vocab, list[dict]]:
    """Several checkpoints to decode together: the models, their shared vocabulary, their runs' identities.

    Raises:
        UsageError: as ``load_model``, or two checkpoints with different vocabularies or data splits.
    """
    models, identities, vocab, identity = [], [], None, None
    for name in paths:
        model, other_vocab, other = load_model(Path(name), device, flag)
        if vocab is None:
            vocab, identity = other_vocab, other
        elif other_vocab.to_dict() != vocab.to_dict():
            raise UsageError(f"{name} and {paths[0]} have different vocabularies (with and without stress digits?): "
                             "an ensemble's members must share one")
        elif split_settings(other) != split_settings(identity):
            raise UsageError(f"{name} and {paths[0]} were trained on different splits ({split_settings(other)} vs "
                             f"{split_settings(identity)}): validation would choose on words one of them trained on")
        models.append(model)
        identities.append(other)
    return models, vocab, identities


def split_settings(identity: dict) -> dict:
    """The settings of a run that fix its word split and its phoneme convention."""
    data = identity.get("data", {})
    return {k: data.get(k) for k in ("stress", "split_seed", "val_fraction", "test_fraction", "limit_words", "sizes")}


def run_pronounce(args: argparse.Namespace) -> int:
    if args.beam < 1:
        raise UsageError(f"--beam must be >= 1, got {args.beam}")
    device = select_device(args.device)
    models, vocab, _ = load_models(args.checkpoint, device, "--checkpoint")
    model = models[0] if len(models) == 1 else G2PEnsemble(models)
    max_letters = min(m.config.max_letters for m in models)
    words = args.words if args.words else [line for line in sys.stdin.read().split("\n") if line.strip()]
    checked, failures = {}, 0
    for word in words:
        try:
            checked[word] = check_word(word, max_letters=max_letters)
        except G2PDataError as error:
            print(f"{word!r}: cannot pronounce: {error}", file=sys.stderr)
            failures += 1
    spoken = pronounce_words(model, sorted(set(checked.values())), vocab, device, beam=args.beam) if checked else {}
    for word, cleaned in checked.items():
        print(f"{word}\t{' '.join(spoken[cleaned])}")
    return 1 if failures else 0


def load_epoch_checkpoints(paths: list[str]) -> tuple[list[dict], dict]:
    """The checkpoints at ``paths`` in epoch order, and the run identity they share.

    Raises:
        UsageError: a missing or foreign file, two runs mixed, or an epoch given twice.
    """
    loaded = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"{path}: no such file (compare --keep-epochs K writes <out>/<model>/seed<k>/epochs/)")
        try:
            ckpt = load_checkpoint(path)
            identity, epoch, state = ckpt["config"], int(ckpt["epoch"]), ckpt["model"]
            identity["model"], identity["config"], identity["data"]["vocab"]  # what average reads: present?
        except CheckpointError:
            raise
        except NOT_A_CHECKPOINT as error:
            raise UsageError(f"{path} is not a checkpoint written by `python -m text g2p compare` "
                             f"({type(error).__name__}: {error})") from None
        if ckpt.get("position", 0):
            raise UsageError(f"{path} was written {ckpt['position']} steps into epoch {epoch + 1}, not at the end "
                             "of an epoch")
        loaded.append((epoch, path, identity, state))
    loaded.sort(key=lambda item: item[0])
    _, first_path, identity, _ = loaded[0]
    for epoch, path, other, _ in loaded[1:]:
        if other != identity:
            differs = sorted(k for k in set(identity) | set(other) if identity.get(k) != other.get(k))
            raise UsageError(f"{path} and {first_path} come from different runs (they differ in {', '.join(differs)})")
    epochs = [epoch for epoch, *_ in loaded]
    if len(set(epochs)) != len(epochs):
        raise UsageError(f"epoch given twice among the checkpoints: {epochs}")
    return [{"epoch": epoch, "path": str(path), "state": state} for epoch, path, _, state in loaded], identity


def selection_inputs(record: dict) -> tuple[str | None, list[str]]:
    """Which command wrote a ``metrics.json`` of ``average`` or ``ensemble``, and over which checkpoints
    (resolved paths, in the record's order); ``(None, [])`` for any other record."""
    if isinstance(record.get("members"), dict):
        return "ensemble", [str(Path(m["path"]).resolve()) for m in record["members"].values()]
    if isinstance(record.get("checkpoints"), list):
        return "average", [str(Path(p).resolve()) for p in record["checkpoints"]]
    return None, []


def check_selection_out(out: Path, command: str, checkpoints: Sequence[str | Path]) -> None:
    """Refuse an ``--out`` that holds another result, before anything is decoded: ``compare``'s run folders, or
    a ``metrics.json`` that is not this command's over these same checkpoints (which it would overwrite, with
    ``averaged.pt`` or ``report.md`` beside it). The same command over the same checkpoints may write there
    again: it writes what it wrote before.

    Raises:
        UsageError: naming what the folder holds.
        RunnerError: ``--out`` is a file or not writable (``core.lab.runner.check_out_dir``).
    """
    check_out_dir(out)
    runs = stored_runs(out)
    if runs:
        raise UsageError(f"--out {out} holds the runs of `compare` ({runs[0]}); `{command}` would write its "
                         "metrics.json and report.md over theirs: choose another --out")
    record = stored_record(out)
    if record is None:
        return
    theirs, inputs = selection_inputs(record)
    if (theirs, inputs) != (command, [str(Path(p).resolve()) for p in checkpoints]):
        what = ("another command" if theirs is None else f"`{theirs}` over other checkpoints" if theirs == command
                else f"`{theirs}`")
        raise UsageError(f"--out {out} holds the record of {what} ({out / 'metrics.json'}); this `{command}` would "
                         "overwrite it: choose another --out, or remove that folder first")


def write_selection(out: Path, record: dict, report: Callable[[dict], str], *, beam: int, started: float) -> dict:
    """Complete the record of a command that chooses on validation and scores test once (``average``,
    ``ensemble``) with what every such record holds (the command, the contract, test decoding, wall time, the
    machine), write it as ``out/metrics.json`` and ``report(record)`` as ``out/report.md``; return it."""
    record = {**record,
              "command": list(sys.argv),  # as the runner's records keep it
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "contract": {"headline": CONTRACT.headline, "select": CONTRACT.select, "mode": CONTRACT.mode},
              "test_decoding": "greedy" if beam == 1 else f"beam search, {beam} beams",
              "wall_seconds": time.perf_counter() - started, **machine()}
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "metrics.json", record)
    (out / "report.md").write_text(report(record))
    return record


def rebuild_data(args: argparse.Namespace, identity: dict) -> G2PData:
    """The split a run trained on, rebuilt from the settings its checkpoints carry.

    Raises:
        UsageError: the dictionary read now (``--data-dir`` or the package's) splits differently.
    """
    _, lexicon, report = read_lexicon(args)
    settings = identity["data"]
    splits = split_words(lexicon, val_fraction=settings["val_fraction"], test_fraction=settings["test_fraction"],
                         seed=settings["split_seed"], limit_words=settings["limit_words"])
    if splits.sizes() != settings["sizes"]:
        raise UsageError(f"the dictionary read now splits into {splits.sizes()}, the run's into {settings['sizes']}: "
                         "not the dictionary the run trained on (see --data-dir)")
    return prepare(splits, report, settings["stress"])


def run_average(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoints, identity = load_epoch_checkpoints(args.checkpoints)
    out = Path(args.out)
    check_selection_out(out, "average", [c["path"] for c in checkpoints])
    settings = identity["data"]
    data = rebuild_data(args, identity)
    name = identity["model"]
    config = config_from_dict(name, identity["config"])
    device = torch.device("cpu")
    model = build_model(name, config, len(data.vocab.letters), len(data.vocab.phonemes)).to(device)
    epochs = [c["epoch"] for c in checkpoints]
    chosen = average_last_epochs(model, [c["state"] for c in checkpoints], epochs, data, device, beam=args.beam,
                                 each_epoch=args.each_epoch)
    out.mkdir(parents=True, exist_ok=True)
    picked = next(d for d in chosen.decodings if d["beam"] == chosen.beam)  # the chosen average, as test decodes
    metrics = {"val_wer": picked["val_wer"], "val_per": picked["val_per"], "test_wer": chosen.test["wer"],
               "test_per": chosen.test["per"]}
    save_checkpoint(out / "averaged.pt", {"model": chosen.state, "config": identity, "epoch": epochs[-1],
                                          "metrics": metrics, "averaged_epochs": chosen.epochs,
                                          "vocab": data.vocab.to_dict(), "model_name": name})
    write_selection(out, {
        "domain": "text", "dataset": identity["dataset"], "model": name, "config": identity["config"],
        "train": identity["train"], "seed": identity["seed"], "data": settings,
        "checkpoints": [c["path"] for c in checkpoints], "candidates": chosen.candidates,
        "val_wer_by_k": {str(c["k"]): c["val_wer"] for c in chosen.candidates if c["epochs"] == epochs[-c["k"]:]},
        **({"val_wer_by_epoch": {str(c["epochs"][0]): c["val_wer"] for c in chosen.candidates if c["k"] == 1}}
           if args.each_epoch else {}),
        "chosen": {"k": chosen.k, "epochs": chosen.epochs, "beam": chosen.beam, **metrics},
        "decodings": chosen.decodings,
        "selection_note": ("validation WER (greedy) chooses among the average of the last k epochs for every k and "
                           "each epoch alone (ties: fewer epochs, then the later epoch)" if args.each_epoch else
                           "validation WER (greedy) chooses how many of the last epochs to average (ties: fewer)")
                          + ("; then validation WER chooses between greedy decoding and the beam (ties: greedy)"
                             if args.beam > 1 else "")
                          + "; test is scored once, with the chosen average and decoding, and chooses nothing",
        "results": [{"model": name, "role": ROLES[name], "metrics": metrics,
                     "bookkeeping": {"averaged_epochs": chosen.k, "first_epoch": chosen.epochs[0],
                                     "last_epoch": chosen.epochs[-1]}}],
    }, average_report, beam=chosen.beam, started=started)
    decoding = "greedy" if chosen.beam == 1 else f"{chosen.beam} beams"
    which = (f"averaged the last {chosen.k} of epochs {epochs[0]}-{epochs[-1]}" if chosen.epochs == epochs[-chosen.k:]
             else f"kept epoch {chosen.epochs[0]} alone, of epochs {epochs[0]}-{epochs[-1]}")
    print(f"{which}, decoding {decoding} (chosen on "
          f"validation): val WER {metrics['val_wer']:.2%}, test WER {metrics['test_wer']:.2%}, PER "
          f"{metrics['test_per']:.2%}; "
          f"wrote {out / 'averaged.pt'}, metrics.json, report.md")
    return 0


def average_report(record: dict) -> str:
    """report.md of ``average``: every candidate's validation WER, the choice, and test once."""
    chosen = record["chosen"]
    lines = [f"# Weight averaging: {record['model']} on {record['dataset']}", "",
             f"Command: `{' '.join(record['command'])}`. The weights after each of the run's last epochs, "
             f"averaged over the last k for every k{', and each epoch alone' if 'val_wer_by_epoch' in record else ''}; "
             f"{record['selection_note']}.", "",
             "| k | epochs averaged | val WER | val PER |", "| --- | --- | --- | --- |"]
    for c in record["candidates"]:
        mark = " (chosen)" if c["epochs"] == chosen["epochs"] else ""
        span = f"{c['epochs'][0]}–{c['epochs'][-1]}" if c["k"] > 1 else f"{c['epochs'][0]}"
        lines.append(f"| {c['k']}{mark} | {span} | {c['val_wer']:.2%} | {c['val_per']:.2%} |")
    if len(record.get("decodings", [])) > 1:
        lines += ["", "The chosen weights on validation, by decoding:", "", "| decoding | val WER | val PER |",
                  "| --- | --- | --- |"]
        for d in record["decodings"]:
            mark = " (chosen)" if d["beam"] == chosen["beam"] else ""
            name = "greedy" if d["beam"] == 1 else f"beam search, {d['beam']} beams"
            lines.append(f"| {name}{mark} | {d['val_wer']:.2%} | {d['val_per']:.2%} |")
    weights = (f"the average of epochs {chosen['epochs'][0]}–{chosen['epochs'][-1]}" if chosen["k"] > 1
               else f"the weights after epoch {chosen['epochs'][0]}")
    lines += ["", f"Test ({record['test_decoding']}), {weights}: WER **{chosen['test_wer']:.2%}**, "
                  f"PER **{chosen['test_per']:.2%}**.", "",
              f"Wall time {record['wall_seconds'] / 60:.1f} min, {record['threads']} thread(s), load average "
              f"{record['load_average']}."]
    return "\n".join(lines) + "\n"


def run_ensemble(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [str(Path(p)) for p in args.checkpoints]
    if len(set(Path(p).resolve() for p in paths)) != len(paths):
        raise UsageError(f"a checkpoint is given twice: {paths}")
    if len(paths) > MAX_ENSEMBLE_CANDIDATES:
        raise UsageError(f"{len(paths)} checkpoints make {2 ** len(paths) - 1} ensembles to score on validation; "
                         f"give at most {MAX_ENSEMBLE_CANDIDATES}")
    device = torch.device("cpu")
    models, _, identities = load_models(paths, device, "checkpoint")
    check_selection_out(Path(args.out), "ensemble", paths)
    data = rebuild_data(args, identities[0])
    chosen = choose_ensemble(models, data, device, beam=args.beam)

    def label(members: Sequence[int]) -> str:  # members are numbered from 1 in the record
        return "+".join(str(i + 1) for i in members)

    picked = next(c for c in chosen.candidates if c["members"] == list(chosen.members))
    metrics = {"val_wer": picked["val_wer"], "val_per": picked["val_per"], "test_wer": chosen.test["wer"],
               "test_per": chosen.test["per"]}
    members = {str(i + 1): {"path": path, "model": identity["model"], "seed": identity.get("seed"),
                            "epochs": identity.get("train", {}).get("epochs"), "config": identity["config"],
                            "params": sum(p.numel() for p in model.parameters())}
               for i, (path, model, identity) in enumerate(zip(paths, models, identities))}
    names = {members[str(i + 1)]["model"] for i in chosen.members}
    out = Path(args.out)
    record = write_selection(out, {
        "domain": "text", "dataset": identities[0]["dataset"], "data": identities[0]["data"],
        "members": members,
        "candidates": [{"members": label(c["members"]), "size": len(c["members"]), "val_wer": c["val_wer"],
                        "val_per": c["val_per"]} for c in chosen.candidates],
        "val_wer_by_members": {label(c["members"]): c["val_wer"] for c in chosen.candidates},
        "best_val_wer_by_size": {str(size): min(c["val_wer"] for c in chosen.candidates if len(c["members"]) == size)
                                 for size in range(1, len(paths) + 1)},
        "chosen": {"members": label(chosen.members), "size": len(chosen.members), **metrics},
        "selection_note": "validation WER (greedy) chooses which of the given models decode together (every non-empty "
                          "subset scored; ties: fewer members); test is scored once, with the chosen ensemble, and "
                          "chooses nothing",
        "results": [{"model": "ensemble", "role": "attention" if names == {"transformer"} else "baseline",
                     "metrics": metrics,
                     "bookkeeping": {"members": len(chosen.members),
                                     "params": sum(members[str(i + 1)]["params"] for i in chosen.members)}}],
    }, ensemble_report, beam=args.beam, started=started)
    print(f"ensemble {record['chosen']['members']} of {len(paths)} model(s) (chosen on validation): val WER "
          f"{metrics['val_wer']:.2%}, test WER {metrics['test_wer']:.2%}, PER {metrics['test_per']:.2%}; "
          f"wrote {out / 'metrics.json'}, report.md")
    return 0


def ensemble_report(record: dict) -> str:
    """report.md of ``ensemble``: the members, every subset's validation WER, the choice, and test once."""
    chosen = record["chosen"]
    lines = [f"# Ensembles on {record['dataset']}", "",
             f"Command: `{' '.join(record['command'])}`. Each subset of the models below decodes as one (at every "
             f"step the normalised mean of the members' log-probabilities); {record['selection_note']}.", "",
             "| member | checkpoint | model | seed | epochs | parameters |", "| --- | --- | --- | --- | --- | --- |"]
    for key, m in record["members"].items():
        lines.append(f"| {key} | `{m['path']}` | {m['model']} | {m['seed']} | {m['epochs']} | {m['params']:,} |")
    lines += ["", "| members | val WER | val PER |", "| --- | --- | --- |"]
    for c in record["candidates"]:
        mark = " (chosen)" if c["members"] == chosen["members"] else ""
        lines.append(f"| {c['members']}{mark} | {c['val_wer']:.2%} | {c['val_per']:.2%} |")
    chosen_paths = [record["members"][k]["path"] for k in chosen["members"].split("+")]
    lines += ["", f"Test ({record['test_decoding']}), ensemble {chosen['members']}: WER **{chosen['test_wer']:.2%}**, "
                  f"PER **{chosen['test_per']:.2%}**.", "",
              "Pronounce with it: `python -m text g2p pronounce "
              + " ".join(f"--checkpoint {p}" for p in chosen_paths) + " WORD...`", "",
              f"Wall time {record['wall_seconds'] / 60:.1f} min, {record['threads']} thread(s), load average "
              f"{record['load_average']}."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m text g2p", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="train the Transformer and the LSTM encoder-decoders, write a report",
                                  description="Train the models on CMUdict with one protocol and write metrics.json, "
                                              "report.md, figures and checkpoints to --out.")
    add_common_args(compare, default_out=DEFAULT_OUT)
    add_schedule_args(compare, epochs=TrainConfig.epochs)
    compare.add_argument("--quick", action="store_true",
                         help="the tour's profile: "
                              + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                              + "; under 2 minutes (a flag given explicitly wins; the report says so)")
    data = compare.add_argument_group("data")
    data.add_argument("--stress", action="store_true",
                      help="keep the stress digits (AH0, AH1, ...): 84 symbols instead of 39 phonemes")
    data.add_argument("--limit-words", type=positive_int, default=None,
                      help="use only this many words (a seeded random subset, split as usual) (default: all)")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the word split (default: 0)")
    data.add_argument("--val-fraction", type=fraction, default=0.05,
                      help="share of words for validation (default: 0.05)")
    data.add_argument("--test-fraction", type=fraction, default=0.05, help="share of words for test (default: 0.05)")
    models = compare.add_argument_group("models")
    models.add_argument("--models", type=subset_of(MODELS), default=list(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    models.add_argument("--dim", type=positive_int, default=TransformerG2PConfig.dim,
                        help=f"transformer model dim (default: {TransformerG2PConfig.dim})")
    models.add_argument("--heads", type=positive_int, default=TransformerG2PConfig.heads,
                        help=f"transformer heads (default: {TransformerG2PConfig.heads})")
    models.add_argument("--layers", type=positive_int, default=TransformerG2PConfig.encoder_layers,
                        help="transformer encoder and decoder layers each "
                             f"(default: {TransformerG2PConfig.encoder_layers})")
    models.add_argument("--ffn-dim", type=positive_int, default=TransformerG2PConfig.ffn_dim,
                        help=f"transformer feed-forward width (default: {TransformerG2PConfig.ffn_dim})")
    models.add_argument("--dropout", type=float, default=TransformerG2PConfig.dropout,
                        help="transformer dropout on embeddings, residual branches and inside the feed-forward "
                             f"(default: {TransformerG2PConfig.dropout}); the LSTMs keep {LSTMConfig.dropout}")
    models.add_argument("--hidden", type=positive_int, default=LSTMConfig.hidden,
                        help=f"LSTM encoder output and decoder state size (default: {LSTMConfig.hidden})")
    training = compare.add_argument_group("training")
    training.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size,
                          help=f"pronunciations per batch (default: {TrainConfig.batch_size})")
    training.add_argument("--lr", type=float, default=TrainConfig.lr,
                          help=f"peak learning rate (default: {TrainConfig.lr})")
    training.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps,
                          help=f"linear warm-up steps before the cosine decay (default: {TrainConfig.warmup_steps})")
    training.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing,
                          help=f"(default: {TrainConfig.label_smoothing})")
    add_precision_arg(training, default="auto", why="Here evaluation is decoding and scoring. bf16 was about "
                      "1.4x faster per training step on this project's CPU with AVX-512 BF16.")
    training.add_argument("--beam", type=positive_int, default=TrainConfig.beam,
                          help="beam width for decoding test (validation is greedy) (default: 1, greedy)")
    training.add_argument("--keep-epochs", type=int, default=TrainConfig.keep_epochs, metavar="K",
                          help="also keep the weights after each of the last K epochs, as <out>/<model>/seed<k>/"
                               "epochs/epoch<NNN>.pt, for `average` (default: 0, none)")
    teacher = compare.add_argument_group("distillation")
    teacher.add_argument("--teacher", nargs="+", default=None, metavar="CKPT",
                         help="train on these trained models' pronunciations of the training words instead of the "
                              "dictionary's (sequence-level knowledge distillation; several checkpoints decode as an "
                              "ensemble, as `ensemble` and `pronounce` do). They must come from runs on this split; "
                              "validation and test are scored against the dictionary as always (default: none)")
    teacher.add_argument("--teacher-beam", type=positive_int, default=5, metavar="K",
                         help="beam width with which the teacher pronounces the training words (default: 5)")
    compare.set_defaults(run=run_compare)

    average = commands.add_parser(
        "average", help="average the weights of a run's last epochs; validation chooses how many",
        description="Average the weights after a run's last k epochs for every k (k = 1: the last epoch alone; "
                    "with --each-epoch, each epoch alone too), let the validation WER (greedy) choose among them, "
                    "score test once with the chosen weights and write "
                    "averaged.pt (which pronounce reads), metrics.json and report.md to --out. The checkpoints are "
                    "the epochs/epoch<NNN>.pt that `compare --keep-epochs K` keeps (or last.pt files copied at the "
                    "end of each epoch); they must come from one run. The split is rebuilt from the settings they "
                    "carry.")
    average.add_argument("checkpoints", nargs="+", help="epoch checkpoints of one run, in any order")
    average.add_argument("--out", required=True, help="folder for averaged.pt, metrics.json and report.md; one that "
                         "holds another result (compare's runs, another command's record) is refused")
    average.add_argument("--beam", type=positive_int, default=1,
                         help="offer beam search of this width beside greedy decoding: validation chooses which "
                              "decodes test (default: 1, greedy only)")
    average.add_argument("--each-epoch", action="store_true",
                         help="offer each epoch's own weights as a candidate too (the epoch compare kept as best is "
                              "usually among them), not only the average of the last k epochs: validation chooses "
                              "among all of them")
    average.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    average.add_argument("--data-dir", default=None,
                         help="read DIR/cmudict/cmudict.dict instead of the pinned package's copy (as compare)")
    average.set_defaults(run=run_average)

    ensemble = commands.add_parser(
        "ensemble", help="decode with several trained models as one; validation chooses which",
        description="Decode with every non-empty subset of the given models as an ensemble (at each step the "
                    "normalised mean of the members' log-probabilities, core.decoding.ensemble_step), let the "
                    "validation WER (greedy) choose the subset (ties: fewer members; a subset of one is a model "
                    "alone), score test once with it and write metrics.json and report.md to --out. The models are "
                    "best.pt (or averaged.pt) files of runs on one split (same split seed, fractions and phoneme "
                    "convention); they may differ in seed, architecture and recipe. `pronounce` decodes with the "
                    "chosen ensemble when given its checkpoints.")
    ensemble.add_argument("checkpoints", nargs="+",
                          help=f"best.pt files of runs on one split (at most {MAX_ENSEMBLE_CANDIDATES})")
    ensemble.add_argument("--out", required=True, help="folder for metrics.json and report.md; one that holds "
                          "another result (compare's runs, another command's record) is refused")
    ensemble.add_argument("--beam", type=positive_int, default=1, help="beam width for test (default: 1, greedy)")
    ensemble.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    ensemble.add_argument("--data-dir", default=None,
                          help="read DIR/cmudict/cmudict.dict instead of the pinned package's copy (as compare)")
    ensemble.set_defaults(run=run_ensemble)

    pronounce = commands.add_parser(
        "pronounce", help="print the pronunciation of words with a trained checkpoint",
        description="Print word<TAB>phonemes per word. Upper case is folded to lower case; a word with digits or "
                    "symbols (other than ' - .), an empty word or one longer than the model's limit gets a message "
                    "on stderr instead, and the exit status is 1.")
    pronounce.add_argument("--checkpoint", required=True, action="append",
                           help="a best.pt written by compare (or averaged.pt by average); give it several times "
                                "to decode with those models as an ensemble, as `ensemble` chose")
    pronounce.add_argument("--beam", type=int, default=1, help="beam width (default: 1, greedy)")
    pronounce.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="(default: cpu)")
    pronounce.add_argument("words", nargs="*", help="words to pronounce (default: one per line from stdin)")
    pronounce.set_defaults(run=run_pronounce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (``pronounce``: 1 when a word could not be pronounced)."""
    result = cli_main(build_parser(), argv, lambda args: args.run(args), errors=(G2PDataError,))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
