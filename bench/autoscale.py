#!/usr/bin/env python3
"""Thin entry for a checkout: the autoscaling benchmark lives in the ``tokenfactory.bench`` package
(installed with ``pip install -e '.[bench]'``); this is the same as ``tokenfactory-bench`` and
``python -m tokenfactory.bench``. See docs/benchmarks.md."""

import sys

from tokenfactory.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
