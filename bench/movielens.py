"""Sequence-aware mode on a real log of user histories: MovieLens latest-small.

Protocol (what is predicted from what):

- Split (:func:`gru4rec_lib.splits.split_user_histories`): events in (user, time) order, equal
  times in file order; each user's last ``--last`` events are the test, the rest the history;
  sessions are cut at pauses longer than ``--session-gap`` seconds, on the whole log, so the
  test may continue a session begun in the history. Test events whose movie is not in the
  history are dropped (the models do not know them).
- Targets: every test event. "next" targets are the test events that are not the first event of
  their session; "all" adds the session starts. "untied" are the next targets rated in a later
  second than the event before: MovieLens stores ratings entered together with one time stamp,
  in movie id order (the file's order), so a tied target is the next larger movie id of a batch,
  an artefact of the export that item-to-item models learn.
- Session models (GRU4Rec on sessions, zero state at each session start, and the baselines)
  predict a target from the earlier events of its own session, history part included; they
  cannot predict a session's first event.
- User models (GRU4Rec with ``user_key``) predict a target from the state after all of the
  user's earlier events (``evaluate(..., history=...)``), across sessions; with
  ``reset_between_sessions`` that state is zeroed at each session start, so only a session's
  first event sees earlier sessions.
- Every target is ranked against all items the model knows (full ranking, ties: standard).
- Tuning: learning rate and layer size of each GRU4Rec row by Recall@20 on the "next" targets of
  a validation split carved from the history in the same way (its last ``--last`` events per
  user), one seed; the chosen setting is then trained on the whole history with each seed.

Data: ``ratings.csv`` of MovieLens latest-small as GroupLens distributes it (``ml-latest-small.zip``
from https://grouplens.org/datasets/movielens/; columns userId, movieId, rating, timestamp), or
the same as a tab-separated file with columns UserId, ItemId, Rating, Time. It is read where it
lies, never copied into the repository.

Usage (from the repository root)::

    python -m bench.movielens --data ml-latest-small/ratings.csv --seeds 1 2 3 --json bench/results/movielens.json

The JSON has the split sizes, the tuning grid results and every run.
"""
import argparse
import itertools
import json
import logging
import time

import numpy as np
import pandas as pd

import evaluation
import gru4rec
from gru4rec_lib import baselines, splits
from gru4rec_lib.cli import configure_logging

logger = logging.getLogger("gru4rec.bench.movielens")
CUTOFFS = (1, 5, 10, 20)
GROUPLENS_COLUMNS = {"userId": "UserId", "movieId": "ItemId", "rating": "Rating", "timestamp": "Time"}
BASELINES = {"Pop": baselines.Pop, "SessionPop": baselines.SessionPop, "ItemKNN": baselines.ItemKNN,
             "SKNN": baselines.SKNN, "VSKNN": baselines.VSKNN, "MarkovChain": baselines.MarkovChain}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.movielens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="MovieLens ratings: GroupLens ratings.csv, or a .tsv with UserId ItemId Rating Time")
    parser.add_argument("--last", type=int, default=10, help="test (and validation) events per user")
    parser.add_argument("--session-gap", type=float, default=3600.0, help="seconds of pause that end a session")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bptt", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.05, 0.2], help="learning rates tried")
    parser.add_argument("--layers", type=int, nargs="+", default=[64, 128], help="layer sizes tried")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def gru_variants(bptt):
    """(name, extra GRU4Rec parameters) of each GRU4Rec row."""
    rows = [("GRU4Rec sessions (zero state per session)", {})]
    rows += [(f"GRU4Rec users, bptt={t}, continued", dict(user_key="UserId", bptt=t)) for t in bptt]
    rows += [("GRU4Rec users, reset between sessions", dict(user_key="UserId", reset_between_sessions=True))]
    return rows


def base_params(epochs):
    return dict(loss="cross-entropy", final_act="softmax", constrained_embedding=True, batch_size=32,
                n_sample=256, sample_alpha=0.5, logq=1.0, n_epochs=epochs, show_progress=False)


# ---------------------------------------------------------------- data
def load_split(path, last, session_gap):
    """(history, test, valid_train, valid): test and valid keep only items known to their training part."""
    events = splits.read_table(path).rename(columns=GROUPLENS_COLUMNS)
    history, test = splits.split_user_histories(events, last=last, session_gap=session_gap)
    valid_train, valid = splits.split_user_histories(history, last=last)
    test = test[test.ItemId.isin(history.ItemId)]
    valid = valid[valid.ItemId.isin(valid_train.ItemId)]
    return history, _mark_starts(history, test), valid_train, _mark_starts(valid_train, valid)


def _mark_starts(history, test):
    """A copy of `test` with `start` (the event opens its session) and `tied` (same second as the event before)."""
    test = test.copy()
    test["start"] = ~test.SessionId.isin(history.SessionId).to_numpy()
    test.loc[test.SessionId.duplicated(keep="first"), "start"] = False
    seen = pd.concat([history, test]).sort_values(["UserId", "Time"], kind="stable")
    previous = seen.groupby("UserId", sort=False).Time.shift()
    test["tied"] = (seen.Time == previous).reindex(test.index).to_numpy()
    return test


# ---------------------------------------------------------------- scoring
def target_ranks(model, history, test):
    """Rank of each test event (aligned with `test`'s rows; NaN where the model does not predict it)."""
    if getattr(model, "user_key", None):
        ranks = evaluation.evaluate(model, test, cutoffs=CUTOFFS, history=history, return_ranks=True)["ranks"]
        index = test.groupby("UserId", sort=False).cumcount()
        keys = pd.MultiIndex.from_arrays([test.UserId.to_numpy(), index.to_numpy()])
        found = pd.MultiIndex.from_arrays([ranks.UserId.to_numpy(), ranks.position.to_numpy() + 1])
    else:  # the sessions holding test events, their history part included, from zero states
        view = pd.concat([history[history.SessionId.isin(test.SessionId)], test.drop(columns=["start", "tied"])])
        view = view.sort_values(["UserId", "Time"], kind="stable")
        ranks = evaluation.evaluate(model, view, cutoffs=CUTOFFS, return_ranks=True)["ranks"]
        view_pos = view.groupby("SessionId", sort=False).cumcount()
        test_pos = view_pos[view.index.isin(test.index)].reindex(test.index)
        keys = pd.MultiIndex.from_arrays([test.SessionId.to_numpy(), test_pos.to_numpy()])
        found = pd.MultiIndex.from_arrays([ranks.SessionId.to_numpy(), ranks.position.to_numpy() + 1])
    where = found.get_indexer(keys)
    return np.where(where >= 0, ranks["rank"].to_numpy(dtype=float)[where], np.nan)


def metrics(ranks, test):
    """Recall@N and MRR@20 on the 'next' targets, the 'untied' ones among them, and 'all' (if all are ranked)."""
    out = {}
    start, tied = test.start.to_numpy(), test.tied.to_numpy()
    for name, mask in (("next", ~start), ("untied", ~start & ~tied), ("all", np.ones(len(test), dtype=bool))):
        r = ranks[mask]
        if np.isnan(r).any():
            if name == "next":
                raise RuntimeError(f"{int(np.isnan(r).sum())} next targets were not ranked")
            continue
        out[name] = {**{f"recall@{n}": float(np.mean(r <= n)) for n in CUTOFFS},
                     "mrr@20": float(np.mean(np.where(r <= 20, 1 / r, 0.0))), "n": int(len(r))}
    return out


def run_gru(params, train, test):
    started = time.perf_counter()
    model = gru4rec.GRU4Rec(**params).fit(train)
    fitted = time.perf_counter() - started
    result = metrics(target_ranks(model, train, test), test)
    result.update(train_seconds=fitted, total_seconds=time.perf_counter() - started)
    return result


# ---------------------------------------------------------------- experiment
def tune(args, name, extra, valid_train, valid):
    """Grid over learning rate x layer size on the validation split; returns (best params, grid)."""
    grid = []
    for lr, h in itertools.product(args.lr, args.layers):
        params = dict(base_params(args.epochs), **extra, learning_rate=lr, layers=(h,), seed=args.seeds[0])
        result = run_gru(params, valid_train, valid)
        grid.append({"learning_rate": lr, "layers": h, **result})
        logger.warning("tune %s lr=%g h=%d: valid Recall@20 %.4f (%.0f s)", name, lr, h,
                       result["next"]["recall@20"], result["total_seconds"])
    best = max(grid, key=lambda g: g["next"]["recall@20"])
    return dict(learning_rate=best["learning_rate"], layers=(best["layers"],)), grid


def run_baselines(args, history, test):
    runs = []
    for name in args.baselines:
        started = time.perf_counter()
        model = BASELINES[name]().fit(history)
        result = metrics(target_ranks(model, history, test), test)
        runs.append({"variant": name, "seed": None, **result, "total_seconds": time.perf_counter() - started})
        logger.warning("%s: Recall@20 %.4f (%.0f s)", name, result["next"]["recall@20"], runs[-1]["total_seconds"])
    return runs


def summarize(runs):
    """One row per variant: mean and standard deviation of every metric over its runs."""
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == name]
        row = {"variant": name, "n_runs": len(group), "params": group[0].get("params")}
        for part in ("next", "untied", "all"):
            if part in group[0]:
                row[part] = {m: (float(np.mean([g[part][m] for g in group])), float(np.std([g[part][m] for g in group])))
                             for m in group[0][part] if m != "n"}
                row[part]["n"] = group[0][part]["n"]
        rows.append(row)
    return rows


def print_table(rows, args, sizes):
    print(f"MovieLens latest-small, last {args.last} events per user are the test, sessions cut at "
          f"{args.session_gap:g} s; {sizes}; mean (std) over seeds {args.seeds}")
    head = [f"R@{n}" for n in CUTOFFS] + ["MRR@20"]
    print("| model | lr, h | " + " | ".join(head) + " | untied: R@20 / MRR@20 | all: R@20 / MRR@20 |")
    print("|---|---|" + "---|" * (len(head) + 2))
    for row in rows:
        nxt = row["next"]
        cells = [f"{nxt[f'recall@{n}'][0]:.4f} ({nxt[f'recall@{n}'][1]:.4f})" for n in CUTOFFS]
        cells.append(f"{nxt['mrr@20'][0]:.4f} ({nxt['mrr@20'][1]:.4f})")
        cells += [f"{row[part]['recall@20'][0]:.4f} / {row[part]['mrr@20'][0]:.4f}" if part in row else "-"
                  for part in ("untied", "all")]
        p = row["params"]
        setting = f"{p['learning_rate']:g}, {p['layers'][0]}" if p else "-"
        print(f"| {row['variant']} | {setting} | " + " | ".join(cells) + " |")


def main(argv=None):
    args = parse_args(argv)
    configure_logging(args.log_level)
    started = time.perf_counter()
    history, test, valid_train, valid = load_split(args.data, args.last, args.session_gap)
    sizes = (f"{len(history)} history events, {len(test)} test events ({int((~test.start).sum())} next "
             f"targets, {int((~test.start & ~test.tied).sum())} untied), {history.ItemId.nunique()} items, "
             f"{history.UserId.nunique()} users")
    logger.warning(sizes)
    runs, tuning = run_baselines(args, history, test), {}
    for name, extra in gru_variants(args.bptt):
        best, tuning[name] = tune(args, name, extra, valid_train, valid)
        for seed in args.seeds:
            params = dict(base_params(args.epochs), **extra, **best, seed=seed)
            result = run_gru(params, history, test)
            runs.append({"variant": name, "seed": seed, "params": best, **result})
            logger.warning("%s seed %d: Recall@20 %.4f (%.0f s)", name, seed, result["next"]["recall@20"],
                           result["total_seconds"])
    rows = summarize(runs)
    print_table(rows, args, sizes)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "sizes": sizes, "rows": rows, "runs": runs, "tuning": tuning,
                       "wall_seconds": time.perf_counter() - started}, f, indent=1, default=list)
    return rows


if __name__ == "__main__":
    main()
