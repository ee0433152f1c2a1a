"""bench/speed.py: a tiny smoke run of the timing core (numbers not checked: not a timed test)."""
import json

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def speed():
    return load_script("bench/speed.py", "bench_speed")


@pytest.mark.slow  # a fresh process or a whole benchmark run: in the slow set
def test_smoke_preset_prints_machine_rows_and_writes_json(speed, tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert speed.main(["--preset", "smoke", "--steps", "1,4", "--epochs", "1", "--test-events", "300",
                       "--cache", "", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("gru4rec speed (smoke)") and "command:" in printed and "versions:" in printed
    result = json.loads(out.read_text())
    assert [(r["preset"], r["K"]) for r in result["rows"]] == [("smoke", 1), ("smoke", 4)]
    for row in result["rows"]:
        assert row["n_items"] == 500 and row["batches_per_s"] > 0 and row["eval_events_per_s"] > 0


def test_published_presets_read_the_bundled_parameter_files(speed):
    args = speed.parse_args(["--preset", "rsc15_xe,retailrocket_bprmax,diginetica_bprmax", "--params", "momentum=0"])
    shapes = [(p["loss"], p["layers"], p["batch_size"], p["momentum"])
              for p in (speed.preset_params(name, args) for name in args.names)]
    assert shapes == [("cross-entropy", (100,), 32, 0.0), ("bpr-max", (224,), 80, 0.0), ("bpr-max", (512,), 128, 0.0)]
    assert speed.parse_args(["--quick"]).names == ["xe", "bprmax"]
    with pytest.raises(SystemExit):
        speed.parse_args(["--preset", "nope"])


def test_step_floor_counts_row_traffic_and_products(speed):
    """B=2, n_sample=3, one layer of 4 units, Adagrad, no momentum: 7 item rows and the GRU's
    (4 + 4 + 1) x 12 dense weights, each read and written with its accumulator (2 copies);
    products 2*2*5*4*3 (scores) + 2*2*8*12*3 (GRU), forward and two gradients."""
    params = dict(batch_size=2, n_sample=3, layers=(4,), adapt="adagrad", momentum=0.0)
    traffic = 2 * 4 * 2 * (7 * 4 + 9 * 12)
    assert speed.step_floor(params, (1.0, 1e12)) == pytest.approx(traffic)
    assert speed.step_floor(params, (1e12, 1.0)) == pytest.approx(2 * 2 * 5 * 4 * 3 + 2 * 2 * 8 * 12 * 3)
    assert speed.step_floor(dict(params, momentum=0.5), (1.0, 1e12)) == pytest.approx(traffic * 3 / 2)
