"""Installs gru4rec: `pip install .`"""
import re
from pathlib import Path

from setuptools import setup

here = Path(__file__).parent
version = re.search(r'^__version__ = "([^"]+)"', (here / "gru4rec.py").read_text(), re.M).group(1)

setup(
    name="gru4rec",
    version=version,
    description="GRU4Rec: session-based recommendation with recurrent neural networks (PyTensor/JAX)",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    # Installed: the two modules the design names, and one package for everything else, so that no
    # generic top-level name (run, params, backend, ...) can clash with another package or a user's file.
    py_modules=["gru4rec", "evaluation"],
    packages=["gru4rec_lib"],
    package_data={"gru4rec_lib": ["paramfiles/*.txt", "paramspaces/*.txt"]},
    install_requires=[
        # Tested: pytensor 3.0.7 on Python 3.11; 3.3.x on Python 3.12.
        "pytensor>=3.0.7,<3.1; python_version<'3.12'",
        "pytensor>=3.0.7,<3.4; python_version>='3.12'",
        "jax>=0.10.2,<0.12",
        "jaxlib>=0.10.2,<0.12",
        # jax needs ml_dtypes >= 0.5; 0.7.0 takes 0.6-0.9 s longer to import than 0.6.0 (measured on
        # the 2-core EPYC: 0.67-0.87 s against 0.01-0.11 s), paid by every process that imports jax
        "ml_dtypes>=0.5,<0.7",
        "numpy>=2.0,<2.6",
        "pandas>=2.2,<3.2",
        "scipy>=1.13",
        "tqdm>=4.66,<5",
        # jax.export's serialisation: a fit keeps its compiled program and a later fit of the same
        # graph skips PyTensor's rewriting (warm compile 1.07 -> 0.36 s on the 2-core EPYC)
        "flatbuffers>=24.3",
    ],
    extras_require={
        "tune": ["optuna>=4.0,<6"],
        "parquet": ["pyarrow>=15"],
        # PNG learning curves (gru4rec --plot-curves) and tuning plots (gru4rec-tune --plots)
        "plot": ["matplotlib>=3.7"],
        # a PostgreSQL study storage: postgresql://... URLs (SQLAlchemy 2.1 uses psycopg 3, 2.0 psycopg2)
        "postgres": ["psycopg[binary]>=3.1", "psycopg2-binary>=2.9"],
        # the tests read and write Parquet, tune with Optuna (also on a PostgreSQL server that pgserver
        # starts), draw the plots and build the wheel (setuptools, wheel)
        "test": ["pytest>=8", "optuna>=4.0,<6", "pyarrow>=15", "matplotlib>=3.7", "pgserver>=0.1.4",
                 "psycopg[binary]>=3.1", "psycopg2-binary>=2.9", "setuptools>=64", "wheel"],
    },
    entry_points={"console_scripts": ["gru4rec=gru4rec_lib.launch:command", "gru4rec-tune=gru4rec_lib.tune:main",
                                        "gru4rec-split=gru4rec_lib.splits:main"]},
)
