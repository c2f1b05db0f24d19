"""The command line every framework's agent script takes (tests/test_frameworks.py starts
them): ``--role A|B --port N [--peer B's URL]``."""

from __future__ import annotations

import argparse


def parse(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--role", choices=["A", "B"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer", help="B's URL (role A)")
    return parser.parse_args()
