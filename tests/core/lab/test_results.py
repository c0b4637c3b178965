"""core/lab/results.py: tables rendered from records into marked regions; --check catches stale text; a
record that lacks what a table names is a clear error."""

import json

import pytest

from core.lab import results
from core.lab.results import Column, Figure, FigureTable, ModelTable, RecordError, render_files, render_table


def _record(path, runs_by_model):
    """A run record as core.lab.experiment.write_metrics writes it (sample std over the runs)."""
    import statistics

    out = []
    for model, runs in runs_by_model.items():
        keys = runs[0].keys()
        out.append({"model": model, "role": "attention", "runs": runs, "params": 1234,
                    "metrics": {k: statistics.mean(r[k] for r in runs) for k in keys},
                    "std": {k: statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for k in keys}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"domain": "graph", "results": out}))


@pytest.fixture
def repo(tmp_path):
    _record(tmp_path / "docs/results/toy.metrics.json",
            {"gat": [{"acc": 0.80}, {"acc": 0.84}, {"acc": 0.82}], "mlp": [{"acc": 0.5}]})
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "benchmarks/results/bench.json").write_text(json.dumps(
        {"rows": [{"variant": "full", "T": 60, "seconds": 4.0}, {"variant": "window", "T": 60, "seconds": 0.5},
                  {"variant": "window", "T": 30, "seconds": 0.2}], "ratio": 0.8}))
    (tmp_path / "docs/toy.md").write_text("# Toy\n\n<!-- results:toy -->\nold\n<!-- /results:toy -->\n\nprose stays\n")
    (tmp_path / "README.md").write_text("intro\n<!-- results:speed -->\n<!-- /results:speed -->\n")
    return tmp_path


TABLES = (
    ModelTable("toy", "docs/results/toy.metrics.json", (Column("accuracy (%)", "acc", scale=100, digits=1),
                                                        Column("seed 0", "acc", scale=100, digits=1, run=0),
                                                        Column("params", "params", digits=0, thousands=True)),
               models=("gat", "mlp"), labels={"gat": "GAT"}),
    FigureTable("speed", (Figure("window at 60", "benchmarks/results/bench.json", "rows[variant=window,T=60].seconds",
                                 unit=" s", digits=1),
                          Figure("ratio, same inputs", "benchmarks/results/bench.json", "ratio", unit="×"))),
)


def test_render_writes_mean_std_and_run_count_from_one_record(repo, capsys):
    assert render_files(repo, TABLES) == 0
    text = (repo / "docs/toy.md").read_text()
    assert "| GAT | 82.0 ± 2.0 | 80.0 | 1,234 | 3 |" in text  # mean ± sample std of the record's 3 runs
    assert "| mlp | 50.0 | 50.0 | 1,234 | 1 |" in text  # one run: no ± shown
    assert "[docs/results/toy.metrics.json](results/toy.metrics.json)" in text  # linked from docs/
    assert text.startswith("# Toy\n\n<!-- results:toy -->\n| model |") and text.endswith("<!-- /results:toy -->\n\nprose stays\n")
    readme = (repo / "README.md").read_text()
    assert "| window at 60 | 0.2 s |" not in readme and "| window at 60 | 0.5 s |" in readme
    assert "| ratio, same inputs | 0.80× | [benchmarks/results/bench.json](benchmarks/results/bench.json) |" in readme
    # Rendering again changes nothing, and the check passes.
    assert render_files(repo, TABLES) == 0 and render_files(repo, TABLES, check=True) == 0


def test_check_fails_on_a_hand_edited_figure_and_on_a_changed_record(repo, capsys):
    render_files(repo, TABLES)
    doc = repo / "docs/toy.md"
    doc.write_text(doc.read_text().replace("82.0 ± 2.0", "83.0 ± 2.0"))  # someone "rounds up"
    assert render_files(repo, TABLES, check=True) == 1
    out = capsys.readouterr().out
    assert "-| GAT | 83.0 ± 2.0" in out and "+| GAT | 82.0 ± 2.0" in out and "docs/toy.md" in out
    assert "83.0 ± 2.0" in doc.read_text()  # --check writes nothing
    render_files(repo, TABLES)
    _record(repo / "docs/results/toy.metrics.json", {"gat": [{"acc": 0.9}, {"acc": 0.9}], "mlp": [{"acc": 0.5}]})
    assert render_files(repo, TABLES, check=True) == 1  # a regenerated record makes the text stale


def test_a_record_lacking_a_metric_or_model_is_named(repo):
    missing_metric = ModelTable("toy", "docs/results/toy.metrics.json", (Column("F1", "f1"),))
    with pytest.raises(RecordError, match=r"toy\.metrics\.json: model 'gat' lacks metric 'f1' \(metrics: acc\)"):
        render_table(missing_metric, repo)
    missing_model = ModelTable("toy", "docs/results/toy.metrics.json", (Column("acc", "acc"),), models=("gcn",))
    with pytest.raises(RecordError, match=r"no results for model 'gcn' \(models: 'gat', 'mlp'\)"):
        render_table(missing_model, repo)
    with pytest.raises(RecordError, match=r"bench\.json: no 'speedup'"):
        render_table(FigureTable("x", (Figure("s", "benchmarks/results/bench.json", "speedup"),)), repo)
    with pytest.raises(RecordError, match=r"2 entries of 'rows' match \[variant=window\]"):
        render_table(FigureTable("x", (Figure("s", "benchmarks/results/bench.json", "rows[variant=window].seconds"),)), repo)
    with pytest.raises(RecordError, match="nothing.json: record not found"):
        render_table(ModelTable("x", "nothing.json", (Column("a", "acc"),)), repo)


def test_unknown_or_unclosed_markers_are_errors(repo):
    (repo / "docs/other.md").write_text("<!-- results:nope -->\n<!-- /results:nope -->\n")
    with pytest.raises(ValueError, match="results:nope names no table"):
        render_files(repo, TABLES)
    (repo / "docs/other.md").write_text("<!-- results:toy -->\n")
    with pytest.raises(ValueError, match="lacks its .*closing marker"):
        render_files(repo, TABLES)


def test_selections_keep_model_names_with_commas_and_dots():
    data = {"results": [{"model": "truncated(c=16,L=2)", "x": 1.5}, {"model": "window(w=8)", "x": 2.5}]}
    assert results.lookup(data, "results[model=truncated(c=16,L=2)].x", "r") == 1.5
    assert results.lookup({"a": [{"crf": True, "v": 1}, {"crf": False, "v": 2}]}, "a[crf=False].v", "r") == 2


def test_a_number_picks_one_element_of_a_list_and_a_digit_key_of_a_mapping_stays_a_key():
    data = {"runs": [{"acc": 0.5}, {"acc": 0.75}], "by_k": {"1": 0.25, "0": 0.125}}
    assert results.lookup(data, "runs.1.acc", "r") == 0.75 and results.lookup(data, "runs.0.acc", "r") == 0.5
    assert results.lookup(data, "by_k.1", "r") == 0.25 and results.lookup(data, "by_k.0", "r") == 0.125
    with pytest.raises(RecordError, match=r"r: no element 2 at 'runs\.2\.acc' \(the list has 2\)"):
        results.lookup(data, "runs.2.acc", "r")
    with pytest.raises(RecordError, match="no 'x'"):
        results.lookup(data, "runs.x", "r")


def test_a_star_segment_lists_every_key_the_record_holds(repo):
    (repo / "benchmarks/results/folds.json").write_text(json.dumps(
        {"loso": {"cnn": {"acc": {"theo": 0.9, "ana": 0.7}, "std": {"theo": 0.01, "ana": 0.02}}}}))
    each = Figure("cnn, {key} held out", "benchmarks/results/folds.json", "loso.cnn.acc.*", scale=100, unit="%",
                  std_path="loso.cnn.std.*", digits=0)
    rows = [line for line in render_table(FigureTable("x", (each,)), repo).splitlines() if "held out" in line]
    assert [row.split(" | ")[:2] for row in rows] == [["| cnn, theo held out", "90 ± 1%"], ["| cnn, ana held out", "70 ± 2%"]]
    assert "| cnn | 90.00 |" in render_table(FigureTable("x", (Figure("{key}", "benchmarks/results/folds.json",
                                                                      "loso.*.acc.theo", scale=100),)), repo)
    with pytest.raises(RecordError, match=r"'loso\.cnn\.acc\.theo' is 0\.9, not a mapping"):
        render_table(FigureTable("x", (Figure("{key}", "benchmarks/results/folds.json", "loso.cnn.acc.theo.*"),)), repo)
    with pytest.raises(ValueError, match="at most one"):
        render_table(FigureTable("x", (Figure("{key}", "benchmarks/results/folds.json", "loso.*.acc.*"),)), repo)


def test_a_star_over_a_list_of_runs_names_each_row_by_the_seed_the_record_gives_it(repo):
    # Seeds 3 and 5 (a run started with --seed 3 --seeds 2): the positions 0 and 1 must not be shown as seeds.
    (repo / "benchmarks/results/seeds.json").write_text(json.dumps(
        {"seeds": [3, 5], "results": [{"model": "cnn", "runs": [{"acc": 0.9}, {"acc": 0.7}]}]}))
    each = Figure("cnn, seed {seed}", "benchmarks/results/seeds.json", "results[model=cnn].runs.*.acc", scale=100,
                  digits=0, unit="%")
    rows = [line.split(" | ")[:2] for line in render_table(FigureTable("x", (each,)), repo).splitlines()
            if "seed" in line]
    assert rows == [["| cnn, seed 3", "90%"], ["| cnn, seed 5", "70%"]]
    (repo / "benchmarks/results/seeds.json").write_text(json.dumps(
        {"results": [{"model": "cnn", "runs": [{"acc": 0.9}]}]}))
    with pytest.raises(RecordError, match="'seeds' is None, so '{seed}' cannot name them"):
        render_table(FigureTable("x", (each,)), repo)
    with pytest.raises(RecordError, match="not a mapping"):  # a list without {seed} in the label: no names to give
        render_table(FigureTable("x", (Figure("{key}", "benchmarks/results/seeds.json", "results[model=cnn].runs.*.acc"),)),
                     repo)


def test_a_figure_can_be_the_difference_of_two_values_of_one_record(repo):
    (repo / "benchmarks/results/lead.json").write_text(json.dumps(
        {"sweep": {"1%": {"cnn": 0.43, "att": 0.33, "n": [1, 2, 3]}, "5%": {"cnn": 0.60, "att": 0.62, "n": [1]}}}))
    lead = Figure("{key}: cnn − attention", "benchmarks/results/lead.json", "sweep.*.cnn", minus_path="sweep.*.att",
                  scale=100, unit=" points", count_path="sweep.*.n", std_path="sweep.*.att")
    rows = [line.split(" | ")[:2] for line in render_table(FigureTable("x", (lead,)), repo).splitlines()
            if "cnn − attention" in line]
    # 43 - 33 = 10 (not 43 or 33, nor 33 - 43); a single run shows no spread; each key counts its own runs.
    assert rows == [["| 1%: cnn − attention", "10.00 ± 33.00 points (n = 3)"],
                    ["| 5%: cnn − attention", "-2.00 points (n = 1)"]]
    with pytest.raises(RecordError, match="'sweep.1%.n' is \\[1, 2, 3\\], not a number"):
        render_table(FigureTable("x", (Figure("x", "benchmarks/results/lead.json", "sweep.1%.cnn",
                                              minus_path="sweep.1%.n"),)), repo)


def test_every_defined_table_renders_from_the_committed_records():
    for table in results.TABLES:
        assert render_table(table).count("\n|") >= 2, table.name


def test_committed_documents_equal_the_records():
    """The check CI runs: `python -m core.lab.results render --check`."""
    assert results.main(["render", "--check"]) == 0


def test_check_alone_is_render_check():
    # the shortcut the pre-stop hook and people type; before it, argparse exited 2 asking for a command
    assert results.main(["--check"]) == 0


def test_store_copies_a_run_with_its_figures_and_relinks_them(tmp_path):
    from core.lab.results import store_run

    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "report.md").write_text("# t\n\n![curves](learning_curves.png)\n\n[metrics](metrics.json)\n")
    (run / "metrics.json").write_text('{"results": []}')
    (run / "learning_curves.png").write_bytes(b"png")
    (run / "unshown.png").write_bytes(b"png")
    written = store_run(run, "demo", root=tmp_path)
    results = tmp_path / "docs" / "results"
    assert (results / "demo.md").read_text().count("](demo/learning_curves.png)") == 1
    assert (results / "demo.metrics.json").read_text() == '{"results": []}'
    assert (results / "demo" / "learning_curves.png").read_bytes() == b"png"
    assert not (results / "demo" / "unshown.png").exists() and len(written) == 3
    (run / "learning_curves.png").unlink()
    with pytest.raises(RecordError, match="learning_curves.png"):
        store_run(run, "demo", root=tmp_path)
