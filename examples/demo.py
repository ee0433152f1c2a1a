"""Demo: GRU4Rec next to popularity on synthetic sessions with planted next-item patterns.

    python examples/demo.py                              # well under a minute on a 2-core CPU
    python examples/demo.py --sessions 300 --epochs 1    # a few seconds

Each item has three planted successors that follow it 90% of the time (``synthetic.py``), so a
model that learns transitions reaches Recall@5 near 0.9 while popularity stays far below.
The table lists Recall@N and MRR@N on the sessions of the last 10% of time and the training time.
"""
import argparse
import logging
import time

from gru4rec_lib import baselines
import evaluation
import gru4rec
from gru4rec_lib import synthetic

CUTOFFS = (1, 5, 20)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30000, help="synthetic sessions (default: 30000)")
    parser.add_argument("--items", type=int, default=1000, help="items (default: 1000)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    parser.add_argument("--layers", type=int, default=100, help="GRU units (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model (default: 0)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # its accelerator probing is noise here
    events = synthetic.generate_sessions(n_sessions=args.sessions, n_items=args.items, seed=args.seed)
    train, test = synthetic.split_by_time(events, test_fraction=0.1)
    print(f"train: {len(train)} events, {train['ItemId'].nunique()} items; test: {len(test)} events")

    model = gru4rec.GRU4Rec(loss="cross-entropy", final_act="softmax", constrained_embedding=True,
                            layers=(args.layers,), batch_size=32, n_sample=512, learning_rate=0.1,
                            n_epochs=args.epochs, seed=args.seed)
    rows = [("GRU4Rec",) + fit_and_evaluate(model, train, test),
            ("Pop",) + fit_and_evaluate(baselines.Pop(), train, test)]

    header = "".join(f"{f'{name}@{n}':<11}" for n in CUTOFFS for name in ("Recall", "MRR"))
    print(f"\n{'model':<10}{header}{'train s':>8}")
    for name, result, seconds in rows:
        metrics = "".join(f"{result[m][n]:<11.4f}" for n in CUTOFFS for m in ("recall", "mrr"))
        print(f"{name:<10}{metrics}{seconds:>8.1f}")
    return 0


def fit_and_evaluate(model, train, test):
    started = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - started
    return evaluation.evaluate(model, test, cutoffs=CUTOFFS), seconds


if __name__ == "__main__":
    main()
