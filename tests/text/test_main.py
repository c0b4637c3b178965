"""The command line end to end, on a few hundred CoNLL-2000 words (one short epoch per model)."""

import json

import pytest

from core.lab.datasets import resolve_data_root
from text.__main__ import main


def first_sentences(path, start, count):
    blocks = path.read_text().split("\n\n")
    return "\n\n".join(blocks[start : start + count]) + "\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    source = resolve_data_root() / "conll2000" / "train.txt"
    folder = tmp_path_factory.mktemp("conll")
    for name, start, count in [("train.txt", 0, 60), ("dev.txt", 60, 10), ("test.txt", 70, 10)]:
        (folder / name).write_text(first_sentences(source, start, count))
    return folder


@pytest.fixture(scope="module")
def compared(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["compare", "--train", str(files / "train.txt"), "--dev", str(files / "dev.txt"),
            "--test", str(files / "test.txt"), "--label-column", "2", "--feature-columns", "1",
            "--epochs", "1", "--batch-size", "16", "--dim", "32", "--heads", "4", "--hidden", "16",
            "--out", str(out), "--no-progress", "--threads", "1"]
    main(argv)
    return out


def test_compare_writes_metrics_report_and_figures(compared):
    metrics = json.loads((compared / "metrics.json").read_text())
    assert [r["model"] for r in metrics["results"]] == ["attention", "bilstm", "cnn"]
    assert metrics["metric"] == "f1" and metrics["config"]["columns"]["feature_columns"] == [1]
    for result in metrics["results"]:
        assert 0.0 <= result["metrics"]["test_f1"] <= 1.0 and result["params"] > 0
    report = (compared / "report.md").read_text()
    assert "| attention | attention |" in report and "test_f1 (%)" in report
    for figure in ["learning_curves.png", "attention_layer1.png", "attention_layer2.png", "relative_bias_layer1.png"]:
        assert (compared / figure).stat().st_size > 1000


def test_tag_needs_pos_columns_and_accepts_word_bar_pos(compared, capsys):
    checkpoint = str(compared / "attention-seed0.pt")
    with pytest.raises(SystemExit, match="word\\|feature"):
        main(["tag", "--checkpoint", checkpoint, "He reckons ."])
    long_sentence = " ".join(["the|DT", "deficit|NN"] * 60)  # 120 words: longer than any training sentence
    tagged = main(["tag", "--checkpoint", checkpoint, "He|PRP reckons|VBZ the|DT deficit|NN .|.", long_sentence])
    assert [w for w, _ in tagged[0]] == ["He", "reckons", "the", "deficit", "."] and len(tagged[1]) == 120
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("He/") and len(printed) == 2


def test_bad_input_is_a_clear_error(files, tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_text("He PRP B-NP\nreckons B-VP\n")
    with pytest.raises(SystemExit, match=r"broken\.txt:2: expected 3 columns"):
        main(["compare", "--train", str(broken), "--test", str(files / "test.txt"), "--out", str(tmp_path)])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit, match=r"empty\.txt: no sentences"):
        main(["compare", "--train", str(files / "train.txt"), "--test", str(empty), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # argparse rejects an unknown model name
        main(["compare", "--dataset", "conll2000", "--models", "gru"])


def test_schedule_warms_up_then_decays_by_steps_or_by_the_clock(monkeypatch):
    import text.__main__ as cli

    by_steps = cli.warmup_cosine(total_steps=100, warmup_steps=10)
    assert by_steps(0) == pytest.approx(0.1) and by_steps(9) == pytest.approx(1.0)
    assert by_steps(55) == pytest.approx(0.5) and by_steps(100) == pytest.approx(0.0)
    now = [1000.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    by_clock = cli.warmup_cosine(total_steps=100, warmup_steps=10, time_budget_s=60.0)
    assert by_clock(20) == pytest.approx(by_steps(20))  # no time has passed: the steps decide
    now[0] += 30.0  # half the budget spent after only 20 steps
    assert by_clock(20) == pytest.approx(0.5)
    now[0] += 60.0
    assert by_clock(21) == pytest.approx(0.0)


def test_tag_fills_the_pos_column_with_a_pos_tagger(files, compared, tmp_path, capsys):
    main(["compare", "--train", str(files / "train.txt"), "--test", str(files / "test.txt"), "--label-column", "1",
          "--models", "attention", "--epochs", "1", "--dim", "32", "--heads", "4", "--out", str(tmp_path),
          "--no-progress", "--threads", "1"])
    pos_tagger = str(tmp_path / "attention-seed0.pt")
    (tagged,) = main(["tag", "--checkpoint", pos_tagger, "He reckons the deficit ."])
    assert len(tagged) == 5
    (chunked,) = main(["tag", "--checkpoint", str(compared / "cnn-seed0.pt"), "--feature-tagger", pos_tagger,
                       "He reckons the deficit ."])
    assert [w for w, _ in chunked] == ["He", "reckons", "the", "deficit", "."]
    assert capsys.readouterr().out.count("/") >= 10
