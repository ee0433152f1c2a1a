"""Sequence-aware benchmark: what user histories, truncated BPTT and a continued state change.

Generates users with a lasting taste and several sessions each (`synthetic.generate_user_histories`),
holds out each user's last session, and trains GRU4Rec

- on sessions (the published model),
- on user histories (``user_key``) with ``bptt`` = each of ``--bptt``,
- on user histories with ``reset_between_sessions``,

then evaluates every model on the held-out sessions from a zero state (the session protocol) and
the user models also continuing from the state after each user's history. "next events" are the
targets a session model can be scored on (each test event after the first); "all events" adds
the first event of each test session, which only a continued state can predict.

Usage (from the repository root)::

    python -m bench.sequence --users 4000 --items 1000 --epochs 5 --bptt 1 2 4 --seeds 1 2 3 --json out/seq.json

Each cell is the mean over the model seeds; the JSON has every run.
"""
import argparse
import json
import logging
import time

import numpy as np

import evaluation
import gru4rec
from gru4rec_lib import synthetic
from gru4rec_lib.cli import configure_logging

logger = logging.getLogger("gru4rec.bench.sequence")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.sequence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--sessions-per-user", type=int, default=5)
    parser.add_argument("--taste", type=float, default=0.4, help="share of events drawn from the user's topics")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--bptt", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="model seeds (the data uses seed 0)")
    parser.add_argument("--cutoff", type=int, default=20)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def metrics(ranks, cutoff):
    hit = ranks["rank"].to_numpy() <= cutoff
    return {"recall": float(hit.mean()), "mrr": float(np.where(hit, 1 / ranks["rank"].to_numpy(), 0).mean()),
            "n": len(ranks)}


def run_variant(name, params, history, test, cutoff):
    started = time.perf_counter()
    model = gru4rec.GRU4Rec(**params).fit(history)
    seconds = time.perf_counter() - started
    row = {"variant": name, "train_seconds": seconds,
           "events_per_s": float(np.mean([s["events_per_s"] for s in model.epoch_stats_]))}
    zero = evaluation.evaluate(model, test, cutoffs=cutoff, return_ranks=True)["ranks"]
    row["zero/next"] = metrics(zero, cutoff)
    if params.get("user_key"):
        cont = evaluation.evaluate(model, test, cutoffs=cutoff, history=history, return_ranks=True)["ranks"]
        row["continued/next"] = metrics(cont[cont.position >= 0], cutoff)
        row["continued/all"] = metrics(cont, cutoff)
    logger.warning("%s done in %.1f s", name, seconds)
    return row


def main(argv=None):
    args = parse_args(argv)
    configure_logging(args.log_level)
    events = synthetic.generate_user_histories(n_users=args.users, n_items=args.items,
                                               sessions_per_user=args.sessions_per_user, taste=args.taste, seed=0)
    history, test = synthetic.split_last_sessions(events)
    base = dict(loss="cross-entropy", final_act="softmax", constrained_embedding=True, layers=(args.layers,),
                batch_size=32, learning_rate=0.1, n_sample=256, sample_alpha=0.5, logq=1.0, n_epochs=args.epochs,
                show_progress=False)
    variants = [("sessions", base)]
    variants += [(f"users, bptt={t}", dict(base, user_key="UserId", bptt=t)) for t in args.bptt]
    variants += [("users, reset between sessions", dict(base, user_key="UserId", reset_between_sessions=True))]
    runs = [dict(run_variant(name, dict(params, seed=seed), history, test, args.cutoff), seed=seed)
            for seed in args.seeds for name, params in variants]
    rows = [_mean([r for r in runs if r["variant"] == name]) for name, _ in variants]
    n = args.cutoff
    print(f"{len(history)} history events, {len(test)} test events, {events.UserId.nunique()} users, "
          f"{events.ItemId.nunique()} items; Recall@{n} / MRR@{n}, mean of seeds {args.seeds}")
    print("| model | zero state, next events | continued, next events | continued, all events | events/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k]['recall']:.4f} / {row[k]['mrr']:.4f}" if k in row else "-"
                 for k in ("zero/next", "continued/next", "continued/all")]
        print(f"| {row['variant']} | " + " | ".join(cells) + f" | {row['events_per_s']:,.0f} |")
    spread = max((row[k]["recall_std"] for row in rows for k in row if isinstance(row[k], dict)), default=0.0)
    if len(args.seeds) > 1:
        print(f"largest standard deviation of a Recall@{n} cell over the seeds: {spread:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "runs": runs}, f, indent=1)
    return rows


def _mean(runs):
    """One row: the mean (and standard deviation) of each metric over the runs of a variant."""
    row = {"variant": runs[0]["variant"], "events_per_s": float(np.mean([r["events_per_s"] for r in runs]))}
    for key in ("zero/next", "continued/next", "continued/all"):
        if key in runs[0]:
            values = {m: [r[key][m] for r in runs] for m in ("recall", "mrr")}
            row[key] = {**{m: float(np.mean(v)) for m, v in values.items()}, "n": runs[0][key]["n"],
                        "recall_std": float(np.std(values["recall"]))}
    return row


if __name__ == "__main__":
    main()
