"""The command line end to end, on a few dozen CoNLL-2000 sentences: outputs, tag, errors at the door,
learning above a floor, and torchrun with two processes against one."""

import json
import subprocess
import sys

import pytest

from core.lab.datasets import resolve_data_root
from text.__main__ import main


def first_sentences(path, start, count):
    blocks = path.read_text().split("\n\n")
    return "\n\n".join(blocks[start : start + count]) + "\n"


def write_splits(folder, sizes):
    source = resolve_data_root() / "conll2000" / "train.txt"
    start = 0
    for name, count in zip(("train.txt", "dev.txt", "test.txt"), sizes):
        (folder / name).write_text(first_sentences(source, start, count))
        start += count
    return folder


def splits(folder, *more):
    return ["--train", str(folder / "train.txt"), "--dev", str(folder / "dev.txt"), "--test", str(folder / "test.txt"),
            "--label-column", "2", "--feature-columns", "1", "--no-progress", "--threads", "1", *more]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("conll"), (60, 10, 10))


@pytest.fixture(scope="module")
def compared(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main(["compare", *splits(files, "--epochs", "1", "--batch-size", "16", "--dim", "32", "--heads", "4",
                             "--hidden", "16", "--out", str(out))])
    return out


def test_compare_writes_metrics_report_figures_and_run_folders(compared):
    metrics = json.loads((compared / "metrics.json").read_text())
    assert [r["model"] for r in metrics["results"]] == ["attention", "bilstm", "cnn"]
    assert metrics["metric"] == "f1" and metrics["columns"]["feature_columns"] == [1]
    assert metrics["contract"] == {"headline": "test_f1", "select": "val_f1", "mode": "max", "rule": ""}
    assert metrics["time_budget_s"] is None and metrics["data"]["train"]["name"] == "train.txt"
    for result in metrics["results"]:
        assert 0.0 <= result["metrics"]["test_f1"] <= 1.0 and result["params"] > 0
        assert all(k.split("_")[0] in ("val", "test") for k in result["metrics"])
        assert result["bookkeeping"]["epochs"] == 1 and "test_sentences_per_s" in result["bookkeeping"]
    report = (compared / "report.md").read_text()
    assert "| attention | attention |" in report and "test_f1 (%)" in report and "val_f1 (%)" in report
    assert "chosen on the validation split, by the best val_f1 (max)" in report
    for figure in ["learning_curves.png", "attention_layer1.png", "attention_layer2.png", "relative_bias_layer1.png"]:
        assert (compared / figure).stat().st_size > 1000


def test_tag_needs_pos_columns_and_accepts_word_bar_pos(compared, capsys):
    checkpoint = str(compared / "attention" / "seed0" / "best.pt")
    with pytest.raises(SystemExit, match="^error: this model reads 1 extra column.*word\\|feature"):
        main(["tag", "--checkpoint", checkpoint, "He reckons ."])
    long_sentence = " ".join(["the|DT", "deficit|NN"] * 60)  # 120 words: longer than any training sentence
    tagged = main(["tag", "--checkpoint", checkpoint, "He|PRP reckons|VBZ the|DT deficit|NN .|.", long_sentence])
    assert [w for w, _ in tagged[0]] == ["He", "reckons", "the", "deficit", "."] and len(tagged[1]) == 120
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("He/") and len(printed) == 2
    with pytest.raises(SystemExit, match="^error: .*not a tagger checkpoint"):
        main(["tag", "--checkpoint", str(compared / "attention" / "seed0" / "last.pt"), "He|PRP left|VBD"])


def test_bad_input_is_one_line_naming_file_line_or_flag(files, tmp_path, capsys):
    broken = tmp_path / "broken.txt"
    broken.write_text("He PRP B-NP\nreckons B-VP\n")
    with pytest.raises(SystemExit, match=r"^error: .*broken\.txt:2: expected 3 columns"):
        main(["compare", "--train", str(broken), "--test", str(files / "test.txt"), "--out", str(tmp_path / "o")])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit, match=r"^error: .*empty\.txt: no sentences"):
        main(["compare", "--train", str(files / "train.txt"), "--test", str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="^error: give --dataset conll2000, or --train and --test"):
        main(["compare", "--train", str(files / "train.txt"), "--out", str(tmp_path / "o")])
    for flag, value, message in [("--epochs", "0", "--epochs: must be >= 1"),
                                 ("--time-budget", "-2", "--time-budget: must be >= 0"),
                                 ("--models", "gru", "--models: models are a comma-separated subset")]:
        with pytest.raises(SystemExit):
            main(["compare", "--dataset", "conll2000", flag, value])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_tag_fills_the_pos_column_with_a_pos_tagger(files, compared, tmp_path, capsys):
    main(["compare", "--train", str(files / "train.txt"), "--test", str(files / "test.txt"), "--label-column", "1",
          "--models", "attention", "--epochs", "1", "--dim", "32", "--heads", "4", "--out", str(tmp_path),
          "--no-progress", "--threads", "1"])
    pos_tagger = str(tmp_path / "attention" / "seed0" / "best.pt")
    (tagged,) = main(["tag", "--checkpoint", pos_tagger, "He reckons the deficit ."])
    assert len(tagged) == 5
    (chunked,) = main(["tag", "--checkpoint", str(compared / "cnn" / "seed0" / "best.pt"), "--feature-tagger",
                       pos_tagger, "He reckons the deficit ."])
    assert [w for w, _ in chunked] == ["He", "reckons", "the", "deficit", "."]
    assert capsys.readouterr().out.count("/") >= 10


def test_attention_tagger_learns_chunks_above_the_majority_tag(tmp_path):
    folder = write_splits(tmp_path, (150, 30, 40))
    result = main(["compare", *splits(folder, "--models", "attention", "--epochs", "3", "--batch-size", "16", "--dim",
                                      "32", "--heads", "4", "--ffn-dim", "64", "--layers", "2", "--lr", "0.005",
                                      "--no-chars", "--out", str(tmp_path / "run"))])
    (attention,) = result.results
    # the majority tag (I-NP) covers 35% of these test words; span F1 of the majority tagger is 0
    assert attention.metrics["test_accuracy"] >= 0.35 + 0.2 and attention.metrics["test_f1"] >= 0.4


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    folder = write_splits(tmp_path, (48, 10, 10))
    # no dropout anywhere: the two runs then differ only in how the loss is averaged (per rank's words, then
    # over ranks, vs over all words of the global batch)
    argv = ["compare", *splits(folder, "--models", "attention", "--epochs", "2", "--batch-size", "8", "--dim", "16",
                               "--heads", "2", "--ffn-dim", "32", "--layers", "1", "--no-chars", "--dropout", "0",
                               "--word-dropout", "0", "--layer-dropout", "0")]
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "text", *argv, "--out", str(tmp_path / "ddp")], capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stderr.count("wrote ") == 1  # rank 0 alone writes
    assert sorted(p.name for p in (tmp_path / "ddp").glob("**/metrics.json")) == ["metrics.json"]
    main([*argv, "--out", str(tmp_path / "one")])
    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert (ddp["world_size"], one["world_size"]) == (2, 1)
    for name in ("val_f1", "val_accuracy", "test_f1", "test_accuracy"):  # tolerance: 3 points
        assert ddp["results"][0]["metrics"][name] == pytest.approx(one["results"][0]["metrics"][name], abs=0.03), name
    losses = [[row["train_loss"] for row in json.loads((tmp_path / d / "attention" / "seed0" / "record.json")
                                                       .read_text())["history"]] for d in ("ddp", "one")]
    assert losses[0] == pytest.approx(losses[1], rel=0.05)  # rank 0's half of each batch against the whole


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_weights(files, tmp_path, monkeypatch):
    import torch

    from core.lab.harness import load_checkpoint
    from text.models import Tagger

    argv = ["compare", *splits(files, "--models", "attention", "--epochs", "2", "--batch-size", "16", "--dim", "16",
                               "--heads", "2", "--ffn-dim", "32", "--layers", "1", "--checkpoint-every", "1")]
    main([*argv, "--out", str(tmp_path / "full")])

    calls, original = [], Tagger.forward

    def dies_at_step_6(self, batch):  # the 2nd batch of epoch 2 (4 batches per epoch)
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt("killed")
        return original(self, batch)

    monkeypatch.setattr(Tagger, "forward", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(tmp_path / "cut")])
    monkeypatch.setattr(Tagger, "forward", original)
    state = load_checkpoint(tmp_path / "cut" / "attention" / "seed0" / "last.pt")
    assert (state["epoch"], state["position"]) == (1, 1)
    main([*argv, "--out", str(tmp_path / "cut")])
    full, cut = (load_checkpoint(tmp_path / d / "attention" / "seed0" / "best.pt")["model"] for d in ("full", "cut"))
    assert all(torch.equal(full[k], cut[k]) for k in full)
    runs = [json.loads((tmp_path / d / "metrics.json").read_text())["results"][0]["runs"] for d in ("full", "cut")]
    assert runs[0] == runs[1]
