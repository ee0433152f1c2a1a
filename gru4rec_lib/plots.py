"""PNG plots (the optional ``plot`` extra, matplotlib): learning curves and the tuner's two plots."""
import logging
import os
import warnings

logger = logging.getLogger(__name__)


def require_matplotlib():
    """Import matplotlib with a file-only backend; ImportError telling how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'gru4rec[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def learning_curves(history, path, title=None):
    """Training loss and validation Recall@N / MRR@N per epoch, written to `path` (PNG).

    Parameters
    ----------
    history : list of dict
        One entry per epoch with ``epoch`` and ``loss``, and optionally ``recall`` and ``mrr``
        ({N: value}), as `callbacks.Validation.history` (or ``GRU4Rec.epoch_stats_``) holds them.
    path : str or Path
    title : str, optional
    """
    if not history:
        raise ValueError("learning_curves: the history is empty (no epoch was trained)")
    plt = require_matplotlib()
    epochs = [h["epoch"] for h in history]
    validated = all("recall" in h for h in history)
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(10 if validated else 5, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [h["loss"] for h in history], marker="o", color="tab:gray")
    ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    if validated:
        ax = axes[0][1]
        for kind, style in (("recall", "-"), ("mrr", "--")):
            for n in sorted(history[0][kind]):
                ax.plot(epochs, [h[kind][n] for h in history], style, marker="o",
                        label=f"{'Recall' if kind == 'recall' else 'MRR'}@{n}")
        ax.set(xlabel="epoch", ylabel="validation", title="validation")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the curves
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.fspath(path)


def tuning_plots(study, folder, metric="value"):
    """Write optimization_history.png and param_importances.png of an Optuna study into `folder`.

    Returns the paths written; the importances need two finished trials that differ in a searched
    parameter, and are skipped with a warning otherwise.
    """
    plt = require_matplotlib()
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    os.makedirs(folder, exist_ok=True)
    written = []
    plots = (("optimization_history.png", optuna_plots.plot_optimization_history),
             ("param_importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        path = os.path.join(folder, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study, target_name=metric)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            logger.warning("%s not written: %s", path, err)
            continue
        fig = ax.figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
