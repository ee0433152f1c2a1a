"""The start of the ``gru4rec`` command, before anything heavy is imported: huge pages.

A step of a large catalogue reads and writes rows scattered over gigabyte item matrices; with
the 4 KiB pages that glibc's malloc gives by default each such row is a TLB miss. Asked with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc 2.35 or later), malloc has the kernel back its
large blocks with transparent huge pages, and a 1,000,000-item catalogue trains at about the
speed of a 40,000-item one (bench/README.md: 30,700 against 25,200 events/s, where 40,000 items
give 32,300). glibc reads the setting only when a process starts, so the command, when the
setting is missing, runs itself again at once with it (`os.execve`: the same process, arguments
and environment, the setting added), before it has imported or read anything.
``GRU4REC_HUGE_PAGES=off`` (or 0/false/no) keeps the process as it was started. Library users
start their own processes: set the variable there (README, "Speed").
"""
import os
import sys

HUGE_PAGES_ENV = "GRU4REC_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb=1"
OFF = ("off", "0", "false", "no", "none")


def huge_pages_environment(environ=None, platform=None):
    """The environment to start again with (``environ`` with `TUNABLE` added to GLIBC_TUNABLES),
    or None when there is nothing to do: not Linux, opted out, or glibc already asked (by us or
    by the user, whatever value they gave)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (not platform.startswith("linux") or environ.get(HUGE_PAGES_ENV, "").lower() in OFF
            or "glibc.malloc.hugetlb" in tunables):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(part for part in (tunables, TUNABLE) if part)}


def with_huge_pages():
    """Start this process again with glibc asked for huge pages (`huge_pages_environment`); returns
    only when that is not needed or not possible."""
    environ = huge_pages_environment()
    argv = getattr(sys, "orig_argv", None)  # the interpreter's own command line (-m, -c, options)
    if environ is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, environ)
    except OSError:  # cannot start again: go on as started
        return


def command():
    """The ``gru4rec`` program (`gru4rec_lib.cli.command`), started with huge pages."""
    with_huge_pages()
    from gru4rec_lib import cli

    cli.command()
