"""Losses, activations, the GRU step and dropout vs numpy (optimisers: tests/test_conformance.py).

The graph pieces are compiled here in float64, under PyTensor's Python mode and under the JAX
linker the model uses; both must match the numpy reference in tests/numpy_reference.py, and
gradients must match central finite differences of that reference.
"""
import jax
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import gru4rec
import numpy_reference as ref

MODES = ["FAST_COMPILE", "JAX"]
LOSS_CASES = [("cross-entropy", 0.0), ("cross-entropy", 0.2), ("xe_logit", 0.0), ("xe_logit", 0.15),
              ("bpr", 0.0), ("top1", 0.0), ("top1-max", 0.0), ("bpr-max", 0.0)]
BPREG = 0.7


@pytest.fixture(scope="module", autouse=True)
def jax_x64_in_this_module_only():
    """float64 under the JAX linker needs jax_enable_x64, a process-wide flag: set it here, restore it after.

    PyTensor's JAX dispatch sets the flag from floatX when first imported, so it is imported here
    first; a flag left on would change the float32 training graphs of other test modules.
    """
    previous = jax.config.jax_enable_x64
    import pytensor.link.jax.dispatch  # noqa: F401
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _function(inputs, outputs, mode):
    with pytensor.config.change_flags(floatX="float64"):
        return pytensor.function(inputs, outputs, mode=mode, on_unused_input="ignore")


def _score_problem(seed=0):
    """4 rows x 7 columns (4 in-batch + 3 sampled), positives on the diagonal, some columns invalid."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1.5, (4, 7))
    pos = np.eye(4, 7, dtype=bool)
    valid = np.ones((4, 7), bool)
    valid[0, [2, 5]] = False  # e.g. an inactive slot's target and ...
    valid[1, 3] = False
    valid[3, [0, 1, 2, 4]] = False  # ... a row left with its positive and two sampled columns
    return scores, pos, valid


def _compiled_loss(loss, smoothing, mode):
    scores, pos, mask = pt.dmatrix("scores"), pt.matrix("pos", dtype="bool"), pt.matrix("mask", dtype="bool")
    weights = pt.dvector("weights")  # a weighted sum checks every row's gradient separately
    rows = gru4rec.loss_rows(loss, scores, pos, mask, smoothing, BPREG)
    grad = pt.grad(pt.sum(rows * weights), scores)
    return _function([scores, pos, mask, weights], [rows, grad], mode)


@pytest.fixture(scope="module", params=MODES)
def compiled_losses(request):
    return {case: _compiled_loss(*case, request.param) for case in LOSS_CASES}


@pytest.mark.parametrize("loss,smoothing", LOSS_CASES)
def test_loss_values_and_gradients_match_numpy(compiled_losses, loss, smoothing):
    scores, pos, valid = _score_problem()
    weights = np.array([1.0, -0.5, 2.0, 0.3])
    rows, grad = compiled_losses[loss, smoothing](scores, pos, valid, weights)
    expected = ref.loss_rows(loss, scores, np.arange(4), valid, smoothing, BPREG)
    np.testing.assert_allclose(np.asarray(rows), expected, rtol=1e-10, atol=1e-12)

    def weighted(s):
        return ref.loss_rows(loss, s, np.arange(4), valid, smoothing, BPREG) @ weights

    numeric = ref.numeric_grad(lambda p: weighted(p["s"]), {"s": scores.copy()})["s"]
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("loss,smoothing", LOSS_CASES)
def test_masked_columns_are_excluded_exactly(compiled_losses, loss, smoothing):
    scores, pos, valid = _score_problem(seed=1)
    weights = np.ones(4)
    rows, grad = compiled_losses[loss, smoothing](scores, pos, valid, weights)
    for fill in (40.0, -40.0):  # whatever an inactive column holds, it neither scores nor learns
        changed = np.where(valid, scores, fill)
        rows2, grad2 = compiled_losses[loss, smoothing](changed, pos, valid, weights)
        np.testing.assert_array_equal(np.asarray(rows2), np.asarray(rows))
        assert np.all(np.asarray(grad2)[~valid] == 0)
        np.testing.assert_array_equal(np.asarray(grad2)[valid], np.asarray(grad)[valid])


def _compiled_weighted_loss(loss, smoothing, mode):
    scores, pos, weight = pt.dmatrix("scores"), pt.matrix("pos", dtype="bool"), pt.dmatrix("weight")
    rows = gru4rec.loss_rows(loss, scores, pos, weight, smoothing, BPREG)
    return _function([scores, pos, weight], [rows, pt.grad(pt.sum(rows), scores)], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loss,smoothing", LOSS_CASES)
def test_a_column_of_weight_c_is_c_copies_of_it(loss, smoothing, mode):
    """Column weights (how the whole-matrix path scores a sample that drew items repeatedly) against
    the same columns written out as copies, by brute force: the same loss, and each weighted
    column's gradient is the sum of its copies' gradients."""
    rng = np.random.default_rng(5)
    scores = rng.normal(0, 1.5, (3, 6))  # 3 in-batch columns, 3 items
    pos = np.eye(3, 6, dtype=bool)
    counts = np.tile([1.0, 1.0, 1.0, 2.0, 0.0, 3.0], (3, 1))
    copies = np.repeat(np.arange(6), counts[0].astype(int))  # columns 0, 1, 2, 3, 3, 5, 5, 5
    fn = _compiled_loss(loss, smoothing, mode)
    want_rows, want_grad = fn(scores[:, copies], pos[:, copies], counts[:, copies] > 0, np.ones(3))
    rows, grad = _compiled_weighted_loss(loss, smoothing, mode)(scores, pos, counts)
    np.testing.assert_allclose(np.asarray(rows), np.asarray(want_rows), rtol=1e-12, atol=1e-14)
    summed = np.zeros_like(scores)
    np.add.at(summed.T, copies, np.asarray(want_grad).T)
    np.testing.assert_allclose(np.asarray(grad), summed, rtol=1e-10, atol=1e-14)
    assert np.all(np.asarray(grad)[:, counts[0] == 0] == 0)


@pytest.mark.parametrize("loss", ["top1-max", "bpr-max"])
def test_row_without_negatives_has_zero_loss_and_gradient(compiled_losses, loss):
    # n_sample=0 and one slot left at the end of an epoch: the row has no negative at all
    scores = np.array([[0.3, 0.1, -0.2]])
    pos, valid = np.eye(1, 3, dtype=bool), np.array([[True, False, False]])
    rows, grad = compiled_losses[loss, 0.0](scores, pos, valid, np.ones(1))
    assert np.asarray(rows).tolist() == [0.0]
    assert np.all(np.asarray(grad) == 0)


def test_bpr_and_top1_average_over_the_positive_column_too(compiled_losses):
    # as the authors' code: with only the positive left, bpr is -log sigmoid(0) = log 2 (no
    # gradient) and top1 is sigmoid(0) + sigmoid(r_ii^2) - sigmoid(r_ii^2) / 1 = 0.5 (no gradient)
    scores = np.array([[0.3, 0.1, -0.2]])
    pos, valid = np.eye(1, 3, dtype=bool), np.array([[True, False, False]])
    bpr_rows, bpr_grad = compiled_losses["bpr", 0.0](scores, pos, valid, np.ones(1))
    np.testing.assert_allclose(np.asarray(bpr_rows), [np.log(2)])
    assert np.all(np.asarray(bpr_grad) == 0)
    top1_rows, top1_grad = compiled_losses["top1", 0.0](scores, pos, valid, np.ones(1))
    np.testing.assert_allclose(np.asarray(top1_rows), [0.5])
    np.testing.assert_allclose(np.asarray(top1_grad), 0, atol=1e-15)


def test_top1_takes_out_the_positives_own_regulariser(compiled_losses):
    # two columns: mean of [0.5 + s(r_ii^2), s(r_ij - r_ii) + s(r_ij^2)] minus s(r_ii^2) / 2
    scores = np.array([[0.7, -0.4]])
    pos, valid = np.eye(1, 2, dtype=bool), np.ones((1, 2), bool)
    rows, grad = compiled_losses["top1", 0.0](scores, pos, valid, np.ones(1))
    s = ref.sigmoid
    want = (0.5 + s(0.49) + s(-1.1) + s(0.16)) / 2 - s(0.49) / 2
    np.testing.assert_allclose(np.asarray(rows), [want], rtol=1e-12)
    # d/dr_ii: only the pairwise term remains, -s'(r_ij - r_ii) / 2
    np.testing.assert_allclose(np.asarray(grad)[0, 0], -s(-1.1) * (1 - s(-1.1)) / 2, rtol=1e-9)


def test_smoothing_zero_is_plain_cross_entropy_and_one_column_is_zero():
    scores, pos, valid = _score_problem(seed=2)
    smooth = ref.loss_rows("cross-entropy", scores, np.arange(4), valid, 0.0)
    by_hand = [-np.log(ref.softmax(scores[i][valid[i]])[np.flatnonzero(valid[i]).tolist().index(i)])
               for i in range(4)]
    np.testing.assert_allclose(smooth, by_hand, rtol=1e-12)
    fn = _compiled_loss("cross-entropy", 0.0, "FAST_COMPILE")
    rows, grad = fn(np.array([[2.0, 5.0]]), np.eye(1, 2, dtype=bool), np.array([[True, False]]), np.ones(1))
    assert abs(float(np.asarray(rows)[0])) < 1e-12 and np.all(np.asarray(grad) == 0)


ACTIVATIONS = ["linear", "relu", "tanh", "leaky-0.1", "elu-0.5", "elu-1", "selu-1.0507-1.6733"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_values_and_gradients_match_numpy(name, mode):
    x = np.array([-3.0, -1.2, -0.4, -0.01, 0.02, 0.5, 2.5])  # no point within eps of the kink at 0
    var = pt.dvector("x")
    out = gru4rec.activation(name)(var)
    fn = _function([var], [out, pt.grad(pt.sum(out * pt.arange(1, 8)), var)], mode)
    values, grad = fn(x)
    np.testing.assert_allclose(np.asarray(values), ref.activation(name, x), rtol=1e-12, atol=1e-15)
    numeric = ref.numeric_grad(lambda p: ref.activation(name, p["x"]) @ np.arange(1, 8), {"x": x.copy()})["x"]
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-7, atol=1e-9)


def test_activation_constants_are_used():
    x = np.array([-2.0])
    var = pt.dvector("x")
    for name, expected in [("leaky-0.3", -0.6), ("elu-2", 2 * (np.exp(-2) - 1)),
                           ("selu-2-3", 2 * 3 * (np.exp(-2) - 1))]:
        fn = _function([var], gru4rec.activation(name)(var), "FAST_COMPILE")
        np.testing.assert_allclose(fn(x), [expected], rtol=1e-12)


@pytest.mark.parametrize("name", ["sigmoid", "elu", "leaky", "selu-1", "elu-x", "tanh-1", "softmax", ""])
def test_unknown_activation_names_raise(name):
    with pytest.raises(ValueError, match="unknown activation"):
        gru4rec.activation(name)


def test_final_softmax_matches_numpy():
    """The `softmax` final_act (prediction) is PyTensor's softmax over the candidates."""
    scores = np.random.default_rng(3).normal(0, 2, (3, 5))
    var = pt.dmatrix("s")
    fn = _function([var], pt.special.softmax(var, axis=1), "JAX")
    np.testing.assert_allclose(np.asarray(fn(scores)), [ref.softmax(r) for r in scores], rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hidden_act", ["tanh", "elu-1"])
def test_gru_step_matches_numpy_with_reset_before_uh(mode, hidden_act):
    rng = np.random.default_rng(4)
    n, batch = 3, 2
    x_proj = rng.normal(size=(batch, 3 * n))
    hidden = rng.normal(size=(batch, n))  # non-zero, so the reset gate and Wh matter
    Wh = rng.normal(size=(n, 3 * n))
    xp, h = pt.dmatrix("xp"), pt.dmatrix("h")
    W = pt.tensor("Wh", dtype="float64", shape=(n, 3 * n))
    out = gru4rec.gru_step(xp, h, W, gru4rec.activation(hidden_act))
    fn = _function([xp, h, W], out, mode)
    expected = ref.gru_step(x_proj, hidden, Wh, hidden_act)
    np.testing.assert_allclose(np.asarray(fn(x_proj, hidden, Wh)), expected, rtol=1e-12, atol=1e-14)
    # the other placement of the reset gate, r * (h Uh), gives a different answer here
    Wc = Wh[:, 2 * n:]
    r = ref.sigmoid(x_proj[:, :n] + hidden @ Wh[:, :n])
    z = ref.sigmoid(x_proj[:, n:2 * n] + hidden @ Wh[:, n:2 * n])
    other = (1 - z) * hidden + z * ref.activation(hidden_act, x_proj[:, 2 * n:] + r * (hidden @ Wc))
    assert not np.allclose(other, expected)


def test_dropout_is_inverted_and_keeps_rate():
    x = pt.dmatrix("x")
    rng = pytensor.shared(np.random.default_rng(5))
    next_rng, dropped = gru4rec.dropout(x, 0.3, rng, (200, 50))
    fn = pytensor.function([x], dropped, updates={rng: next_rng}, mode="FAST_COMPILE")
    ones = np.ones((200, 50))
    first, second = np.asarray(fn(ones)), np.asarray(fn(ones))
    kept = first != 0
    assert abs(kept.mean() - 0.7) < 0.02  # 10,000 draws: 5 standard deviations is ~0.023
    np.testing.assert_allclose(first[kept], 1 / 0.7, rtol=1e-6)
    assert (first != second).any()  # the updated generator draws a new mask
    assert gru4rec.dropout(x, 0.0, rng, (200, 50)) == (rng, x)


