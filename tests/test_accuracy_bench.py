"""bench/accuracy.py on generated data: one seed, a tiny model; the table, the JSON, and a model that
beats popularity (the real benchmark runs on the public data sets and is not a test)."""
import json

import pytest

from gru4rec_lib import baselines
import evaluation
from gru4rec_lib import synthetic
from scripts import load_script



def load_bench():
    return load_script("bench/accuracy.py", "bench_accuracy")


@pytest.fixture(scope="module")
def accuracy():
    return load_bench()


@pytest.mark.slow
def test_tiny_benchmark_table_json_and_beats_popularity(accuracy, tmp_path, capsys):
    events = synthetic.generate_sessions(n_sessions=600, n_items=100, noise=0.1, seed=5)
    train, test = synthetic.split_by_time(events, test_fraction=0.2)
    train.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    test.to_csv(tmp_path / "test.tsv", sep="\t", index=False)
    (tmp_path / "p.txt").write_text("loss=cross-entropy\nfinal_act=softmax\nconstrained_embedding=True\n"
                                    "layers=16\nbatch_size=16\nn_sample=8\nlearning_rate=0.1\nn_epochs=5\n")
    out = tmp_path / "acc.json"
    code = accuracy.main(["synth", "--train", f"synth={tmp_path / 'train.tsv'}", "--test",
                          f"synth={tmp_path / 'test.tsv'}", "--paramfile", f"synth={tmp_path / 'p.txt'}",
                          "--epochs", "3", "--seeds", "1", "--json", str(out), "--log-level", "WARNING"])
    assert code == 0
    table = capsys.readouterr().out
    assert "== synth: train.tsv -> test.tsv, p.txt, 3 epochs" in table
    header = next(row for row in table.splitlines() if "R@1" in row)
    assert header.split()[:8] == ["R@1", "R@5", "R@10", "R@20", "MRR@1", "MRR@5", "MRR@10", "MRR@20"]
    assert any(row.strip().startswith("seed 1") for row in table.splitlines())
    assert any(row.strip().startswith("mean(1)") for row in table.splitlines())

    payload = json.loads(out.read_text())
    assert {"command", "machine", "datasets"} <= set(payload)
    (result,) = payload["datasets"]
    assert result["name"] == "synth" and result["params"]["n_epochs"] == 3 and result["reference"] is None
    (run,) = result["runs"]
    assert run["seed"] == 1 and run["n_epochs"] == 3
    assert set(run["recall"]) == set(run["mrr"]) == {"1", "5", "10", "20"}
    assert run["train_seconds"] > 0 and run["events_per_s"] > 0 and run["n_points"] > 0
    assert result["mean"]["recall"] == run["recall"]  # the mean of one seed is that seed

    pop = baselines.Pop().fit(train)
    pop_recall = evaluation.evaluate(pop, test, cutoffs=(5, 20))["recall"]
    assert run["recall"]["5"] > pop_recall[5] + 0.2  # the planted transitions are learned
    assert run["recall"]["20"] > pop_recall[20]


def test_reference_rows_give_relative_differences(accuracy):
    runs = [{"seed": s, "n_epochs": 10, "recall": {20: r}, "mrr": {20: m}, "train_seconds": 1.0,
             "events_per_s": 100.0, "compile_seconds": 2.0, "fit_seconds": 3.0, "eval_seconds": 0.5}
            for s, r, m in ((1, 0.60, 0.30), (2, 0.70, 0.40))]
    mean = accuracy.mean_run(runs)
    assert mean["recall"][20] == pytest.approx(0.65) and mean["mrr_std"][20] == pytest.approx(0.05)
    reference = {"source": "test", "recall": {20: 0.5}, "mrr": {20: 0.4}}
    rows = accuracy.format_table("x", runs, mean, reference, (20,)).splitlines()
    assert rows[-2].split() == ["rel.", "diff", "+30.0%", "-12.5%"]
    assert rows[-3].split() == ["reference", "0.5000", "0.4000"]


def test_reference_lookup_and_dataset_errors(accuracy, tmp_path):
    ref = accuracy.reference_for("rsc15_100k", "paramfiles/rsc15_xe_authors.txt", 10)
    assert ref["recall"][20] == 0.6812 and ref["mrr"][20] == 0.3578
    assert accuracy.reference_for("rsc15_100k", "rsc15_xe_authors.txt", 3) is None
    parser = accuracy.build_parser()
    with pytest.raises(ValueError, match="unknown data set 'mine'"):
        accuracy.resolve_datasets(parser.parse_args(["mine"]))
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        accuracy.resolve_datasets(parser.parse_args(["mine", "--train", "train.tsv"]))
    with pytest.raises(ValueError, match="file not found"):
        accuracy.resolve_datasets(parser.parse_args(["rsc15_100k", "--data-dir", str(tmp_path)]))
