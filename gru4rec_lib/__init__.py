"""Everything of gru4rec that is not the model (`gru4rec.py`) or the metrics (`evaluation.py`).

- `backend`: running PyTensor graphs on JAX (donated buffers, float32 graphs, device placement).
- `sampling`: the negative sample store (drawn by numpy for a CPU, on the device for a GPU).
- `sessiondata`: host-side data: validation, item map, sorted sessions, the session-parallel schedule.
- `interface`: `SessionModel`, the model interface that GRU4Rec and the baselines implement.
- `sequences`: the sequence-aware extension of GRU4Rec (truncated BPTT, user histories).
- `baselines`: Pop, SessionPop, ItemKNN, SKNN, VSKNN and a first-order Markov model.
- `synthetic`: generated sessions and user histories with planted structure.
- `params`: parameter strings and parameter files; the bundled `paramfiles/` and `paramspaces/`.
- `progress`: progress bars (terminal only; mini-batches; compilation kept out of the estimate).
- `cli`: the ``gru4rec`` command (`launch` starts it, with huge pages); `tune`: the ``gru4rec-tune``
  command (Optuna).

Importing the package does nothing visible: no printing, no environment changes.
"""
