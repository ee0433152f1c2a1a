"""paropt.py: the parameter-space format (each bad line raises a named error) and a tiny search end to end."""
import json

import pytest

import gru4rec
from gru4rec_lib import tune
from gru4rec_lib import synthetic
from gru4rec_lib.params import read_param_file

DEFAULTS = gru4rec.GRU4Rec().get_params()


def line(text):
    return tune.parse_space_line(text, DEFAULTS, where="space.txt, line 3")


# --- the space format ---

def test_space_lines_parse_to_dimensions():
    assert line("learning_rate float 0.01 0.25 log") == tune.Dimension(
        "learning_rate", "float", 0.01, 0.25, True, None, (), "space.txt, line 3")
    dim = line("  layers int 64 512 step=16   # hidden units")
    assert (dim.kind, dim.low, dim.high, dim.step, dim.log) == ("int", 64, 512, 16, False)
    assert line("final_act categorical elu-0.5/elu-1/linear").choices == ("elu-0.5", "elu-1", "linear")
    assert line("layers categorical 100 100/100").choices == ("100", "100/100")  # one token per choice
    assert line("loss fixed bpr-max").choices == ("bpr-max",)
    assert line("# only a comment") is None and line("   ") is None


@pytest.mark.parametrize("text, message", [
    ("learning_rat float 0.01 0.2", "unknown parameter 'learning_rat'; did you mean ['learning_rate']"),
    ("momentum uniform 0 1", "unknown type 'uniform'"),
    ("momentum float 0.5 0.1", "low (0.5) must be below high (0.1)"),
    ("momentum float 0 x", "high 'x' is not a number"),
    ("momentum float 0", "float needs 'low high'"),
    ("learning_rate float 0 0.2 log", "'log' needs low > 0"),
    ("learning_rate float 0.01 0.2 log step=0.01", "either 'log' or 'step='"),
    ("momentum float 0 0.9 steps=0.1", "unknown option 'steps=0.1'"),
    ("momentum float 0 0.9 step=-1", "step must be > 0"),
    ("batch_size int 32.5 256", "int needs integer low, high and step"),
    ("batch_size float 32 256", "batch_size"),  # batch_size takes ints only
    ("final_act categorical elu-0.5//linear", "distinct and non-empty"),
    ("constrained_embedding categorical True/maybe", "maybe"),
    ("loss fixed bpr-max top1", "fixed takes exactly one value"),
    ("momentum", "expected 'name type arguments'"),
])
def test_bad_space_lines_raise_named_errors(text, message):
    with pytest.raises(ValueError) as err:
        line(text)
    assert "space.txt, line 3" in str(err.value) and message in str(err.value)


def test_space_file_errors_name_the_line(tmp_path):
    path = tmp_path / "space.txt"
    path.write_text("# comment\nmomentum float 0 0.9\nmomentum float 0 0.5\n")
    with pytest.raises(ValueError, match=r"line 3: 'momentum' already defined at .*line 2"):
        tune.read_space(path, DEFAULTS)
    path.write_text("loss fixed bpr-max\n")
    with pytest.raises(ValueError, match="no parameter to search"):
        tune.read_space(path, DEFAULTS)


def test_shipped_spaces_read():
    for name in ("xe_shared.txt", "bprmax_shared.txt", "xe_shared_small.txt", "xe_search.txt", "xe_narrow.txt"):
        space = tune.read_space(f"paramspaces/{name}", DEFAULTS)
        assert {"layers", "batch_size", "learning_rate", "momentum", "sample_alpha"} <= set(space)
        assert space["learning_rate"].log == (name not in ("xe_shared.txt", "bprmax_shared.txt"))


@pytest.mark.parametrize("name", ["xe_shared.txt", "bprmax_shared.txt"])
def test_the_standard_spaces_are_the_authors(name):
    """paramspaces/gru4rec_{xe,bprmax}_standard_parspace.json of the authors, value for value."""
    space = tune.read_space(f"paramspaces/{name}", DEFAULTS)
    want = {"layers": (64, 512, False, 32), "batch_size": (32, 256, False, 16), "dropout_p_embed": (0, 0.5, False, 0.05),
            "dropout_p_hidden": (0, 0.7, False, 0.05), "learning_rate": (0.01, 0.25, False, 0.005),
            "momentum": (0, 0.9, False, 0.05), "sample_alpha": (0, 1, False, 0.1)}
    if name == "bprmax_shared.txt":
        want["bpreg"] = (0, 2, False, 0.05)
    for key, (low, high, log, step) in want.items():
        d = space[key]
        assert (d.low, d.high, d.log, d.step) == pytest.approx((low, high, log, step)), key
    assert "logq" not in space and sorted(k for k, d in space.items() if d.kind != "fixed") == sorted(
        [*want, *(["final_act"] if name == "bprmax_shared.txt" else [])])


@pytest.mark.parametrize("space_line, fixed, expected", [("", {"n_epochs": 16}, 5), ("", {"n_epochs": 3}, 1),
                                                         ("", {}, 3),  # the model's default, 10 epochs
                                                         ("n_epochs int 4 12\n", {"n_epochs": 2}, 4)])
def test_default_warmup_is_a_third_of_the_epochs(tmp_path, space_line, fixed, expected):
    path = tmp_path / "space.txt"
    path.write_text("learning_rate float 0.001 0.3 log\n" + space_line)
    assert tune.default_warmup(tune.read_space(path, DEFAULTS), fixed, DEFAULTS) == expected


@pytest.mark.parametrize("text, parsed", [("recall@20", ("recall", 20)), ("MRR@5", ("mrr", 5)),
                                          (" mrr @ 10 ", ("mrr", 10))])
def test_metric_names(text, parsed):
    assert tune.parse_metric(text) == parsed


@pytest.mark.parametrize("text", ["precision@20", "mrr", "recall@0", "mrr@x"])
def test_bad_metric_names(text):
    with pytest.raises(ValueError, match="expected recall@N or mrr@N"):
        tune.parse_metric(text)


# --- a tiny search, end to end (two fits: ~10 s) ---

@pytest.mark.slow
def test_tiny_search_writes_best_params_and_trials(tmp_path):
    events = synthetic.generate_sessions(n_sessions=300, n_items=30, seed=3)
    train, valid = synthetic.split_by_time(events, test_fraction=0.2)
    train.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    valid.to_csv(tmp_path / "valid.tsv", sep="\t", index=False)
    (tmp_path / "space.txt").write_text(
        "loss fixed bpr-max\nlearning_rate float 0.02 0.2 log\nmomentum float 0 0.5 step=0.1\n"
        "final_act categorical elu-0.5/linear\n")
    (tmp_path / "fixed.txt").write_text("layers=8\nn_epochs=1\nn_sample=4\nbatch_size=16\n")
    best_path, json_path = tmp_path / "best.txt", tmp_path / "trials.json"
    code = tune.main([str(tmp_path / "train.tsv"), str(tmp_path / "valid.tsv"), "-sp", str(tmp_path / "space.txt"),
                        "-pf", str(tmp_path / "fixed.txt"), "-ps", "constrained_embedding=True",
                        "--metric", "mrr@10", "-n", "2", "--seed", "7", "-o", str(best_path),
                        "--json", str(json_path)])
    assert code == 0
    report = json.loads(json_path.read_text())
    trials = report["trials"]
    assert [t["number"] for t in trials] == [0, 1] and all(t["state"] == "COMPLETE" for t in trials)
    for t in trials:
        assert t["value"] == t["mrr"]["10"] and 0 <= t["value"] <= 1
        assert set(t["recall"]) == {"1", "5", "10", "20"}
        assert 0.02 <= t["params"]["learning_rate"] <= 0.2 and t["params"]["final_act"] in ("elu-0.5", "linear")
    best = max(trials, key=lambda t: t["value"])
    assert report["best_trial"] == best["number"] and report["best_value"] == best["value"]
    assert report["metric"] == "mrr@10"
    written = read_param_file(best_path, DEFAULTS)  # the best-parameter file parses back
    assert written["layers"] == (8,) and written["n_epochs"] == 1 and written["constrained_embedding"] is True
    assert written["loss"] == "bpr-max"
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in written.items()} == best["params"]
    assert "mrr@10" in best_path.read_text().splitlines()[0]  # the comment names the metric


def test_command_line_rejects_a_bad_space_before_training(tmp_path, capsys):
    (tmp_path / "space.txt").write_text("momentum float 1 0\n")
    (tmp_path / "t.tsv").write_text("SessionId\tItemId\tTime\n1\t1\t0\n1\t2\t1\n")
    with pytest.raises(SystemExit) as exit_:
        tune.main([str(tmp_path / "t.tsv"), str(tmp_path / "t.tsv"), "-sp", str(tmp_path / "space.txt")])
    assert exit_.value.code == 2 and "must be below high" in capsys.readouterr().err


def test_diverged_trials_are_recorded_as_failed(tmp_path, monkeypatch, capsys):
    def diverge(self, data, retrain=False, callbacks=None):
        raise gru4rec.ModelFitError("non-finite loss (nan) in epoch 1")
    monkeypatch.setattr(gru4rec.GRU4Rec, "fit", diverge)
    (tmp_path / "space.txt").write_text("learning_rate float 0.01 0.2 log\n")
    (tmp_path / "t.tsv").write_text("SessionId\tItemId\tTime\n1\t1\t0\n1\t2\t1\n")
    json_path = tmp_path / "trials.json"
    with pytest.raises(SystemExit) as exit_:
        tune.main([str(tmp_path / "t.tsv"), str(tmp_path / "t.tsv"), "-sp", str(tmp_path / "space.txt"),
                     "-n", "2", "--seed", "0", "-o", str(tmp_path / "best.txt"), "--json", str(json_path)])
    assert exit_.value.code == 1 and "no trial finished" in capsys.readouterr().err
    trials = json.loads(json_path.read_text())["trials"]
    assert [t["state"] for t in trials] == ["FAIL", "FAIL"] and "non-finite loss" in trials[0]["error"]
    assert not (tmp_path / "best.txt").exists()


def test_fixed_parameters_precedence(tmp_path):
    (tmp_path / "fixed.txt").write_text("n_epochs=5\nlayers=100\nloss=top1\n")
    (tmp_path / "space.txt").write_text("loss fixed bpr-max\nlayers int 8 16\n")
    args = tune.build_parser().parse_args(["t", "v", "-sp", str(tmp_path / "space.txt"), "-pf",
                                             str(tmp_path / "fixed.txt"), "-ps", "n_epochs=2,batch_size=8"])
    space = tune.read_space(args.space, DEFAULTS)
    # -pf < -ps < the space's fixed lines; a searched parameter drops its fixed value
    assert tune.fixed_params(args, space, DEFAULTS) == {"n_epochs": 2, "loss": "bpr-max", "batch_size": 8}
