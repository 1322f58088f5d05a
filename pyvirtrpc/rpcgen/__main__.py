"""``python -m pyvirtrpc.rpcgen FILE.x [-o OUT.py]``; ``--check`` compares instead of writing."""

from __future__ import annotations

import argparse
import sys

from pyvirtrpc.rpcgen import ParseError, compile_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyvirtrpc.rpcgen", description=__doc__)
    ap.add_argument("source", help="an rpcgen .x file")
    ap.add_argument("-o", "--output", help="where to write the module (default: stdout)")
    ap.add_argument("--check", action="store_true", help="fail if OUTPUT differs")
    args = ap.parse_args(argv)
    try:
        text = compile_file(args.source)
    except (ParseError, OSError) as exc:
        print(f"rpcgen: {exc}", file=sys.stderr)
        return 1
    if args.check:
        try:
            with open(args.output, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print(f"rpcgen: {args.output} is stale; run tools/regen", file=sys.stderr)
            return 1
        return 0
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
