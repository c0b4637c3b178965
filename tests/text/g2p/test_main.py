"""End to end: a tiny compare on 300 CMUdict words learns, writes what the runner promises, and its
checkpoints pronounce; bad words get a message, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from core.lab.runner import check_metrics_payload
from core.lab import harness
from core.lab.cli import precision_from_args
from core.lab.harness import bf16_supported
from text.g2p.__main__ import build_parser, build_specs, main

TINY = ["--limit-words", "300", "--epochs", "3", "--batch-size", "16", "--dim", "32", "--heads", "2", "--layers", "1",
        "--ffn-dim", "64", "--hidden", "32", "--lr", "5e-3", "--warmup-steps", "10", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("g2p")
    assert main(["compare", *TINY, "--keep-epochs", "2", "--out", str(out)]) == 0
    return out


def test_compare_learns_and_writes_the_report(tiny_run):
    payload = json.loads((tiny_run / "metrics.json").read_text())
    assert check_metrics_payload(payload) == []
    contract = payload["contract"]
    assert (contract["headline"], contract["select"], contract["mode"]) == ("test_wer", "val_wer", "min")
    assert payload["data"]["sizes"]["train"]["words"] == 270
    results = {r["model"]: r for r in payload["results"]}
    assert set(results) == {"transformer", "lstm-attention", "lstm"}
    for name, result in results.items():
        assert (tiny_run / name / "seed0" / "best.pt").is_file()
        assert set(result["metrics"]) >= {"val_wer", "val_per", "test_wer", "test_per"}
        record = json.loads((tiny_run / name / "seed0" / "record.json").read_text())
        losses = [row["train_loss"] for row in record["history"]]
        assert losses[-1] < losses[0] - 0.3, f"{name} did not learn: {losses}"
        # an untrained decoder is wrong on about every phoneme (PER >= 1); these have learned some
        # (300 words and 3 epochs get no word right yet: WER stays 1, so the kept epoch is the first)
        val_per = [row["val_per"] for row in record["history"]]
        assert min(val_per) < 0.92, f"{name}: {val_per}"
    for figure in ("wer_by_length.png", "learning_curves.png", "lstm_attention.png"):
        assert (tiny_run / figure).is_file()
    assert list(tiny_run.glob("cross_attention_*.png"))
    report = (tiny_run / "report.md").read_text()
    assert "split by word" in report.lower() and "trailing comments stripped" in report
    # --precision auto is resolved before training and recorded, and the report says what ran
    precision = payload["config"]["train"]["precision"]
    assert precision == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")
    assert ("bfloat16 (autocast" in report) == (precision == "bf16") and "decoding in float32" in report


def test_pronounce_good_and_bad_words(tiny_run, capsys):
    checkpoint = str(tiny_run / "transformer" / "seed0" / "best.pt")
    assert main(["pronounce", "--checkpoint", checkpoint, "Hello", "x-ray"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == ["Hello", "x-ray"]
    status = main(["pronounce", "--checkpoint", checkpoint, "", "abc123", "#$%", "a" * 60, "cat"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.startswith("cat\t")  # the good word is still pronounced
    err = captured.err
    assert "empty word" in err and "outside a-z" in err and "'aaaaa" in err and "60 characters; this model reads at most 32" in err
    assert "Traceback" not in err


def test_pronounce_beam_and_bad_checkpoints(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run / "lstm-attention" / "seed0" / "best.pt")
    assert main(["pronounce", "--checkpoint", checkpoint, "--beam", "3", "cat"]) == 0
    with pytest.raises(SystemExit, match="no such file"):
        main(["pronounce", "--checkpoint", str(tmp_path / "missing.pt"), "cat"])
    with pytest.raises(SystemExit, match="--beam must be >= 1"):
        main(["pronounce", "--checkpoint", checkpoint, "--beam", "0", "cat"])
    not_ours = tmp_path / "other.pt"
    torch.save({"model": {}}, not_ours)
    with pytest.raises(SystemExit, match="is not a g2p best.pt"):
        main(["pronounce", "--checkpoint", str(not_ours), "cat"])
    text_file = tmp_path / "notes.json"
    text_file.write_text('{"not": "a checkpoint"}')
    for command in (["pronounce", "--checkpoint", str(text_file), "cat"],
                    ["average", str(text_file), "--out", str(tmp_path / "avg")],
                    ["ensemble", checkpoint, str(text_file), "--out", str(tmp_path / "ens")]):
        with pytest.raises(SystemExit, match="notes.json: cannot be read as a checkpoint"):
            main(command)


def test_average_lets_validation_choose_how_many_epochs_and_writes_a_record(tiny_run, tmp_path, capsys):
    kept = tiny_run / "transformer" / "seed0" / "epochs"
    assert sorted(p.name for p in kept.iterdir()) == ["epoch002.pt", "epoch003.pt"]  # --keep-epochs 2 of 3
    out = tmp_path / "avg"
    assert main(["average", str(kept / "epoch003.pt"), str(kept / "epoch002.pt"), "--out", str(out), "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    candidates = record["candidates"]
    assert [(c["k"], c["epochs"]) for c in candidates] == [(1, [3]), (2, [2, 3])]
    assert record["val_wer_by_k"] == {str(c["k"]): c["val_wer"] for c in candidates}
    assert check_metrics_payload(record) == []  # the runner's contract: headline test_wer, chosen on val_wer
    # k = 1 is the last epoch's own weights: its validation WER/PER are those compare recorded for epoch 3
    history = json.loads((tiny_run / "transformer" / "seed0" / "record.json").read_text())["history"]
    assert candidates[0]["val_per"] == pytest.approx(history[2]["val_per"], abs=1e-12)
    best = min(candidates, key=lambda c: (c["val_wer"], c["k"]))
    assert record["chosen"]["k"] == best["k"] and record["chosen"]["val_wer"] == best["val_wer"]
    assert 0 <= record["chosen"]["test_per"] and "test" in record["selection_note"]
    averaged = torch.load(out / "averaged.pt", weights_only=True)
    assert averaged["averaged_epochs"] == record["chosen"]["epochs"]
    if record["chosen"]["k"] == 2:  # the mean of the two epochs' weights
        two = [torch.load(kept / n, weights_only=True)["model"] for n in ("epoch002.pt", "epoch003.pt")]
        key = next(k for k, v in two[0].items() if v.is_floating_point() and not torch.equal(v, two[1][k]))
        assert torch.allclose(averaged["model"][key], (two[0][key] + two[1][key]) / 2)
    assert "(chosen)" in (out / "report.md").read_text()
    assert main(["pronounce", "--checkpoint", str(out / "averaged.pt"), "cat"]) == 0  # pronounce reads it
    capsys.readouterr()
    # --out: the same command over the same checkpoints writes there again; anything else there is refused before
    # decoding, the folder left as it was
    kept_files = {f: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(SystemExit, match=r"holds the record of `average` over other checkpoints"):
        main(["average", str(kept / "epoch003.pt"), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"holds the record of `average` \(.*\); this `ensemble` would overwrite"):
        main(["ensemble", str(tiny_run / "transformer" / "seed0" / "best.pt"), str(kept / "epoch003.pt"),
              "--out", str(out)])
    assert {f: f.read_bytes() for f in out.iterdir()} == kept_files
    with pytest.raises(SystemExit, match=r"holds the runs of `compare`"):
        main(["average", str(kept / "epoch003.pt"), "--out", str(tiny_run)])
    assert main(["average", str(kept / "epoch002.pt"), str(kept / "epoch003.pt"), "--out", str(out)]) == 0
    other = tiny_run / "lstm" / "seed0" / "epochs" / "epoch003.pt"
    with pytest.raises(SystemExit, match="come from different runs \\(they differ in config, model, role\\)"):
        main(["average", str(kept / "epoch003.pt"), str(other), "--out", str(tmp_path / "mixed")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["average", str(kept / "missing.pt"), "--out", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="--keep-epochs must be >= 0"):
        main(["compare", *TINY, "--keep-epochs", "-1", "--out", str(tmp_path / "neg")])


@pytest.mark.parametrize("beam_val_wer, expected_beam", [(0.20, 4), (0.30, 1), (0.25, 1)])
def test_average_lets_validation_choose_the_decoding(monkeypatch, beam_val_wer, expected_beam):
    """Greedy validation WER 0.25 for the chosen average; the beam's is lower, higher or equal (ties: greedy).
    Test is decoded once, with what validation chose."""
    from text.g2p import train

    calls = []

    def fake_evaluate(model, lexicon, vocab, device, *, beam=1, batch_size=512):
        split = "val" if lexicon is data.val else "test"
        calls.append((split, beam))
        wer = 0.25 if beam == 1 else beam_val_wer
        return {"wer": wer if split == "val" else 0.5 + beam, "per": wer / 4}, {}

    monkeypatch.setattr(train, "evaluate_lexicon", fake_evaluate)
    data = type("Data", (), {"val": object(), "test": object(), "vocab": None})()
    model = torch.nn.Linear(2, 2)
    states = [{k: v + i for k, v in model.state_dict().items()} for i in range(2)]
    chosen = train.average_last_epochs(model, states, [1, 2], data, torch.device("cpu"), beam=4)
    assert calls == [("val", 1), ("val", 1), ("val", 4), ("test", expected_beam)]  # test once, last
    assert chosen.beam == expected_beam and chosen.test["wer"] == 0.5 + expected_beam
    assert chosen.decodings == [{"beam": 1, "val_wer": 0.25, "val_per": 0.0625},
                                {"beam": 4, "val_wer": beam_val_wer, "val_per": beam_val_wer / 4}]
    calls.clear()
    assert train.average_last_epochs(model, states, [1, 2], data, torch.device("cpu")).beam == 1
    assert calls == [("val", 1), ("val", 1), ("test", 1)]  # greedy only: no beam offered, none decoded


def test_average_each_epoch_offers_every_epoch_alone_beside_the_last_k(monkeypatch):
    """Three epochs whose weights are the model's plus 0, 1 and 2: the validation WER depends on the offset the
    model holds when it decodes, so each call shows which weights were scored. Epoch 2 alone (offset 1) and the
    average of all three (offset 1 too) tie at the lowest WER: the fewer epochs win, and test is decoded once,
    with epoch 2's weights."""
    from text.g2p import train

    model = torch.nn.Linear(2, 2)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    states = [{k: v + i for k, v in base.items()} for i in range(3)]
    wer_of_offset = {0.0: 0.25, 1.0: 0.20, 1.5: 0.22, 2.0: 0.30}
    calls = []

    def fake_evaluate(model, lexicon, vocab, device, *, beam=1, batch_size=512):
        offset = round(float((model.weight - base["weight"]).detach().mean()), 6)
        split = "val" if lexicon is data.val else "test"
        calls.append((split, offset))
        return {"wer": wer_of_offset[offset] if split == "val" else 0.9, "per": offset / 10}, {}

    monkeypatch.setattr(train, "evaluate_lexicon", fake_evaluate)
    data = type("Data", (), {"val": object(), "test": object(), "vocab": None})()
    chosen = train.average_last_epochs(model, states, [1, 2, 3], data, torch.device("cpu"), each_epoch=True)
    assert [(c["k"], c["epochs"]) for c in chosen.candidates] == [(1, [3]), (1, [2]), (1, [1]), (2, [2, 3]),
                                                                  (3, [1, 2, 3])]
    assert [c["val_wer"] for c in chosen.candidates] == [0.30, 0.20, 0.25, 0.22, 0.20]
    assert (chosen.k, chosen.epochs) == (1, [2])  # tied with all three averaged: fewer epochs win
    assert calls[-1] == ("test", 1.0) and [split for split, _ in calls].count("test") == 1
    assert torch.equal(chosen.state["weight"], states[1]["weight"])
    calls.clear()
    plain = train.average_last_epochs(model, states, [1, 2, 3], data, torch.device("cpu"))
    assert [c["epochs"] for c in plain.candidates] == [[3], [2, 3], [1, 2, 3]]  # without it: the last k only
    assert (plain.k, plain.epochs) == (3, [1, 2, 3]) and calls[-1] == ("test", 1.0)


def test_average_each_epoch_from_the_command_line(tiny_run, tmp_path):
    kept = tiny_run / "transformer" / "seed0" / "epochs"
    out = tmp_path / "avg-each"
    assert main(["average", str(kept / "epoch003.pt"), str(kept / "epoch002.pt"), "--each-epoch", "--out", str(out),
                 "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(record) == []
    assert [(c["k"], c["epochs"]) for c in record["candidates"]] == [(1, [3]), (1, [2]), (2, [2, 3])]
    by_epochs = {tuple(c["epochs"]): c for c in record["candidates"]}
    assert record["val_wer_by_k"] == {"1": by_epochs[(3,)]["val_wer"], "2": by_epochs[(2, 3)]["val_wer"]}
    assert record["val_wer_by_epoch"] == {"3": by_epochs[(3,)]["val_wer"], "2": by_epochs[(2,)]["val_wer"]}
    # each epoch alone is that epoch's own weights: the validation PER compare recorded for it
    history = json.loads((tiny_run / "transformer" / "seed0" / "record.json").read_text())["history"]
    assert by_epochs[(2,)]["val_per"] == pytest.approx(history[1]["val_per"], abs=1e-12)
    assert by_epochs[(3,)]["val_per"] == pytest.approx(history[2]["val_per"], abs=1e-12)
    best = min(record["candidates"], key=lambda c: c["val_wer"])  # first of the lowest: the tie order
    assert record["chosen"]["epochs"] == best["epochs"] and "each epoch alone" in record["selection_note"]
    assert sum("(chosen)" in line for line in (out / "report.md").read_text().splitlines()) == 1


def test_average_with_a_beam_records_both_decodings(tiny_run, tmp_path):
    kept = tiny_run / "transformer" / "seed0" / "epochs"
    out = tmp_path / "avg-beam"
    assert main(["average", str(kept / "epoch003.pt"), str(kept / "epoch002.pt"), "--beam", "2", "--out", str(out),
                 "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(record) == []
    decodings = record["decodings"]
    assert [d["beam"] for d in decodings] == [1, 2]
    picked = min(decodings, key=lambda d: (d["val_wer"], d["beam"]))
    assert record["chosen"]["beam"] == picked["beam"] and record["chosen"]["val_wer"] == picked["val_wer"]
    assert record["test_decoding"] == ("greedy" if picked["beam"] == 1 else "beam search, 2 beams")
    report = (out / "report.md").read_text()
    assert "| beam search, 2 beams" in report and "between greedy decoding and the beam" in report


def test_ensemble_lets_validation_choose_the_members_and_pronounce_decodes_with_them(tiny_run, tmp_path, capsys):
    names = ["transformer", "lstm-attention", "lstm"]
    paths = [str(tiny_run / name / "seed0" / "best.pt") for name in names]
    out = tmp_path / "ens"
    assert main(["ensemble", *paths, "--out", str(out), "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(record) == []  # the runner's contract: headline test_wer, chosen on val_wer
    labels = ["1", "2", "3", "1+2", "1+3", "2+3", "1+2+3"]
    assert [c["members"] for c in record["candidates"]] == labels
    assert list(record["val_wer_by_members"]) == labels
    assert record["best_val_wer_by_size"] == {str(k): min(c["val_wer"] for c in record["candidates"] if c["size"] == k)
                                              for k in (1, 2, 3)}
    assert [record["members"][str(i + 1)]["model"] for i in range(3)] == names
    # a subset of one is that model alone: its validation figures are those compare kept it for
    for i, path in enumerate(paths):
        kept = torch.load(path, weights_only=True)["metrics"]
        assert record["candidates"][i]["val_per"] == pytest.approx(kept["val_per"], abs=1e-12)
    best = min(record["candidates"], key=lambda c: (c["val_wer"], c["size"]))
    assert record["chosen"]["members"] == best["members"] and record["chosen"]["val_wer"] == best["val_wer"]
    assert record["results"][0]["bookkeeping"]["members"] == best["size"]
    report = (out / "report.md").read_text()
    assert "(chosen)" in report and "--checkpoint" in report
    capsys.readouterr()
    assert main(["pronounce", "--checkpoint", paths[0], "--checkpoint", paths[1], "--beam", "2", "cat", "dog"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.strip().split("\n")] == ["cat", "dog"]


def test_ensemble_refuses_members_that_do_not_belong_together(tiny_run, tmp_path):
    path = tiny_run / "transformer" / "seed0" / "best.pt"
    with pytest.raises(SystemExit, match="given twice"):
        main(["ensemble", str(path), str(path), "--out", str(tmp_path / "twice")])
    with pytest.raises(SystemExit, match="at most 6"):
        main(["ensemble", *(str(tmp_path / f"m{i}.pt") for i in range(7)), "--out", str(tmp_path / "many")])
    ckpt = torch.load(path, weights_only=True)
    other_split = tmp_path / "split.pt"
    ckpt["config"]["data"]["split_seed"] = 1
    torch.save(ckpt, other_split)
    with pytest.raises(SystemExit, match="different splits"):
        main(["ensemble", str(path), str(other_split), "--out", str(tmp_path / "split")])
    stressed = tmp_path / "stress.pt"
    ckpt["vocab"]["stress"] = True
    torch.save(ckpt, stressed)
    with pytest.raises(SystemExit, match="different vocabularies"):
        main(["pronounce", "--checkpoint", str(path), "--checkpoint", str(stressed), "cat"])


def test_precision_and_dropout_flags(monkeypatch):
    args = build_parser().parse_args(["compare", "--dropout", "0.25", "--precision", "fp32"])
    assert precision_from_args(args) == "fp32"
    transformer = {spec.name: spec.config for spec in build_specs(args)}["transformer"]
    assert transformer.dropout == 0.25
    assert {spec.name: spec.config for spec in build_specs(args)}["lstm"].dropout == 0.2  # the LSTMs keep theirs
    # a device without native bfloat16: auto falls back to fp32, an explicit bf16 is refused with the reason
    monkeypatch.setattr(harness, "bf16_supported", lambda device: False)
    assert precision_from_args(build_parser().parse_args(["compare"])) == "fp32"
    with pytest.raises(SystemExit, match="no native bfloat16"):
        main(["compare", "--precision", "bf16", "--limit-words", "50", "--no-progress"])
    monkeypatch.setattr(harness, "bf16_supported", lambda device: True)
    assert precision_from_args(build_parser().parse_args(["compare"])) == "bf16"


def test_compare_distils_from_a_teacher_and_reads_its_pronunciations_back(tiny_run, tmp_path, monkeypatch):
    """`--teacher`: the student trains on the teacher's beam pronunciations of exactly the training words (one
    each), validation and test keep the dictionary's references, and a rerun reads teacher.json back."""
    from text.g2p import train as g2p_train
    from text.g2p.__main__ import load_model, read_lexicon
    from text.g2p.data import split_words
    from text.g2p.train import prepare, pronounce_words

    teacher = tiny_run / "transformer" / "seed0" / "best.pt"
    model, vocab, identity = load_model(teacher, torch.device("cpu"))
    _, lexicon, report = read_lexicon(build_parser().parse_args(["compare"]))
    data = prepare(split_words(lexicon, seed=0, limit_words=300), report, stress=False)
    expected = pronounce_words(model, list(data.splits.train), vocab, torch.device("cpu"), beam=2)
    unlike = sum(expected[w] not in {vocab.convert(p) for p in ps} for w, ps in data.splits.train.items())

    seen = []
    original = g2p_train.BucketBatches
    monkeypatch.setattr(g2p_train, "BucketBatches", lambda entries, *a, **k: seen.append(list(entries))
                        or original(entries, *a, **k))
    out = tmp_path / "student"
    command = ["compare", *TINY, "--models", "transformer", "--epochs", "1", "--teacher", str(teacher),
               "--teacher-beam", "2", "--out", str(out)]
    assert main(command) == 0
    assert [(e.word, e.phonemes) for e in seen[0]] == [(w, expected[w]) for w in data.splits.train]
    payload = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(payload) == []
    taught = payload["data"]["teacher"]
    assert (taught["beam"], taught["words"], payload["distillation"]["unlike_every_reference"]) == (2, 270, unlike)
    assert "sequence-level knowledge distillation" in (out / "report.md").read_text()
    # validation is scored against the dictionary, not the teacher: the kept epoch's figures say so
    student, _, _ = load_model(out / "transformer" / "seed0" / "best.pt", torch.device("cpu"))
    rates, _ = g2p_train.evaluate_lexicon(student, data.val, vocab, torch.device("cpu"))
    assert payload["results"][0]["metrics"]["val_per"] == pytest.approx(rates["per"], abs=1e-12)

    # a rerun (the runner loads the finished seed) reads the teacher's pronunciations back, decoding nothing
    monkeypatch.setattr("text.g2p.__main__.teacher_pronunciations",
                        lambda *a, **k: pytest.fail("the teacher decoded again"))
    assert main(command) == 0


def test_compare_refuses_a_teacher_from_another_split(tiny_run, tmp_path, capsys):
    ckpt = torch.load(tiny_run / "transformer" / "seed0" / "best.pt", weights_only=True)
    ckpt["config"]["data"]["split_seed"] = 1
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    with pytest.raises(SystemExit, match="another split"):
        main(["compare", *TINY, "--models", "transformer", "--teacher", str(other), "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit):
        main(["compare", *TINY, "--models", "transformer", "--teacher", str(other), "--teacher-beam", "0",
              "--out", str(tmp_path / "s")])
    assert "--teacher-beam: must be >= 1, got 0" in capsys.readouterr().err


def test_compare_refuses_another_teachers_folder_before_decoding(tiny_run, tmp_path, monkeypatch):
    """A resumed --out whose run learnt from another teacher (here: another beam) is refused by the runner before
    the teacher decodes anything, teacher.json left as it was; --no-resume starts the folder afresh. A
    teacher.json that no stored run owns (its run folder gone), or one cut short, is decoded afresh."""
    teacher = str(tiny_run / "transformer" / "seed0" / "best.pt")
    out = tmp_path / "student"
    command = ["compare", *TINY, "--models", "transformer", "--epochs", "1", "--teacher", teacher, "--out", str(out)]
    assert main([*command, "--teacher-beam", "1"]) == 0
    kept = (out / "teacher.json").read_bytes()
    decoded = []
    monkeypatch.setattr("text.g2p.__main__.teacher_pronunciations", lambda *a, **k: decoded.append(1) or {})
    with pytest.raises(SystemExit, match=r"transformer/seed0 holds a different run \(saved -> now: data.teacher.beam"):
        main([*command, "--teacher-beam", "2"])
    assert decoded == [] and (out / "teacher.json").read_bytes() == kept
    monkeypatch.undo()
    assert main([*command, "--teacher-beam", "2", "--no-resume"]) == 0
    assert json.loads((out / "teacher.json").read_text())["key"]["beam"] == 2
    shutil.rmtree(out / "transformer")
    (out / "teacher.json").write_text('{"key": ')  # and one cut short is decoded afresh too
    assert main([*command, "--teacher-beam", "1"]) == 0
    assert json.loads((out / "teacher.json").read_text())["key"]["beam"] == 1
