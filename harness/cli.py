"""``prefix-compat``: validate specs, print tables, list and compare runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import results
from .spec import SpecError, load_spec, spec_paths


def cmd_validate(args) -> int:
    paths = spec_paths(args.paths or None)
    if not paths:
        print("no spec files found", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as e:
            bad += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        print(f"ok: {path} ({spec.family}, {spec.kv.layout}, concat dim {spec.kv.concat_dim})")
    return 2 if bad else 0


def _run_dir(results_dir: str, given: str | None) -> Path:
    if given:
        p = Path(given)
        if not p.is_dir():
            p = results.runs_root(Path(results_dir)) / given
        if not p.is_dir():
            raise SystemExit(f"error: no run at {given}")
        return p
    latest = results.latest_run(Path(results_dir))
    if latest is None:
        raise SystemExit(f"error: no runs under {results.runs_root(Path(results_dir))}; run `pytest -n auto harness/` first")
    return latest


def cmd_report(args) -> int:
    from .report import table

    text = table(_run_dir(args.results_dir, args.run), args.format)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prefix-compat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check spec files; exit 2 with file/field/fix messages when bad")
    p.add_argument("paths", nargs="*", help="spec files or folders (default: model_specs/)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("report", help="compatibility table of a run (the newest by default)")
    p.add_argument("run", nargs="?", help="run folder or run id")
    p.add_argument("--format", choices=("md", "html"), default="md")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
