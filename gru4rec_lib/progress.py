"""Progress bars where a user waits: training epochs and evaluation.

A bar is shown only when asked for and when stderr is a terminal: written to a log file, a tqdm
bar is a flood of carriage-return lines, so there the per-epoch log line of ``fit`` (logger
``gru4rec``, level INFO) is the progress report. Bars count mini-batches (steps of the
session-parallel schedule), not compiled calls, and their rate estimate starts after the first
call, whose time is mostly compilation.
"""
import sys

from tqdm.auto import tqdm

__all__ = ["bar", "restart_clock"]


def bar(total, desc, enabled, unit="mini-batch"):
    """A tqdm bar over `total` units, disabled unless `enabled` and stderr is a terminal."""
    shown = bool(enabled) and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not shown, leave=False, dynamic_ncols=True)


def restart_clock(progress):
    """Restart the bar's clock, keeping its count: the time so far (compilation) leaves the estimate."""
    done = progress.n
    progress.reset(total=progress.total)
    progress.update(done)
