"""``prefix-compat``: validate specs, print tables, list and compare runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.core.spec import SpecError
from harness.reporting import results


def cmd_validate(args) -> int:
    """Load every spec, then build its tiny model and run it once with a cache: the spec's layout,
    heads and head dims must be what the real cache holds, and the model must fit in memory."""
    from harness.core.spec import check_buildable, load_specs_report

    specs, errors = load_specs_report(args.paths or None)
    loaded = []
    for spec in specs:
        if not args.no_build:
            try:
                m = check_buildable(spec)
            except SpecError as e:
                errors.append(e)
                continue
            measured = (f"; measured: {m['summary']}" if spec.not_applicable else
                        f"; built: {m['params']:,} parameters, K {tuple(m['k_shape'])}, V {tuple(m['v_shape'])}")
        else:
            measured = ""
        shape = "not applicable" if spec.not_applicable else f"{spec.kv.layout}, concat dim {spec.kv.concat_dim}"
        print(f"ok: {spec.path} ({spec.family}, {shape}{measured})")
        loaded.append(spec)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not specs and not errors:
        print("no spec files found", file=sys.stderr)
        return 2
    _warn_ambiguous_matches(loaded)
    return 2 if errors else 0


def _warn_ambiguous_matches(specs) -> None:
    """Specs whose match sections are the same: prefix_tune(model) takes the first by name."""
    seen = {}
    for spec in sorted(specs, key=lambda s: s.name):
        key = (tuple(sorted(spec.match_model_types)), tuple(sorted(spec.match_config_has)))
        if key in seen:
            print(f"note: {spec.name} matches the same configs as {seen[key]}; prefix_tune(model) picks "
                  f"{seen[key]} unless given spec='{spec.name}'", file=sys.stderr)
        else:
            seen[key] = spec.name


class CliError(Exception):
    """Bad input to a command: printed as one line on stderr, exit 2, no traceback."""


def _run_dir(results_dir: str, given: str | None) -> Path:
    """The run folder named by ``given`` (a folder, or a run id under <results-dir>/runs), or the
    newest run; CliError unless it is a run folder."""
    root = results.runs_root(Path(results_dir))
    if not given:
        latest = results.latest_run(Path(results_dir))
        if latest is None:
            raise CliError(f"no runs under {root}; run `pytest -n auto harness/` first")
        return latest
    p = Path(given)
    by_id = _run_id_dir(results_dir, given)
    if by_id is not None:
        # a plain name is first a run id: a folder of that name in the cwd must not shadow the run
        if p.exists() and results.is_run_dir(p) and p.resolve() != by_id.resolve():
            raise CliError(f"{given} is ambiguous: both the folder ./{given} and the run {by_id} exist; "
                           f"write ./{given} for the folder or {by_id} for the run")
        return by_id
    if p.exists():
        if not p.is_dir():
            raise CliError(f"{given} is a file, not a run folder (a run is a folder holding run.json and "
                           f"part-*.parquet files)")
        if not results.is_run_dir(p):
            hint = (f"; it holds runs: pass --results-dir {given}" if results.runs_root(p).is_dir() else
                    "; `prefix-compat runs` lists the runs")
            raise CliError(f"{given} is not a run: it holds no run.json or part-*.parquet{hint}")
        return p
    try:
        candidate = results.run_dir_for(Path(results_dir), given)
    except ValueError:
        candidate = None
    if candidate is None or not results.is_run_dir(candidate):
        raise CliError(f"no run {given}: neither a folder nor a run id under {root}; "
                       f"`prefix-compat runs --results-dir {results_dir}` lists them")
    return candidate


def _run_id_dir(results_dir: str, given: str) -> Path | None:
    """<results-dir>/runs/<given> when ``given`` is a plain run id (no path) naming a run there."""
    if given in (".", "..") or Path(given).name != given:
        return None
    try:
        candidate = results.run_dir_for(Path(results_dir), given)
    except ValueError:
        return None
    return candidate if results.is_run_dir(candidate) else None


def cmd_baseline(args) -> int:
    """Make a whole run the baseline CI diffs against (replaces the old copy-by-hand)."""
    from harness.reporting.baseline import make_baseline

    run = _run_dir(args.results_dir, args.run)
    dest = Path(args.to) if args.to else Path(args.results_dir) / "baseline"
    try:
        s = make_baseline(run, dest)
    except ValueError as e:
        raise CliError(str(e)) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()))
    print(f"{dest} is now run {s['run_id']} ({s['rows']} cells: {counts}; torch {s['torch']}, "
          f"transformers {s['transformers']}, peft {s['peft']}, {s['device']}, {s['dtype']})")
    return 0


def cmd_report(args) -> int:
    from harness.reporting.report import checked_rows, table
    from harness.reporting.sweeps import sweep_table

    runs = [_run_dir(args.results_dir, r) for r in args.runs] if args.runs else [_run_dir(args.results_dir, None)]
    if len(runs) > 1 and not args.pivot:
        raise CliError("several runs make one table only with --pivot (e.g. --pivot transformers)")
    if args.sweep and (len(runs) > 1 or args.format != "md"):
        raise CliError("--sweep makes the Markdown table of one sweep run")
    try:
        if args.plots:  # the heatmap first, so the page links it; a damaged run gets none
            for run in runs:
                checked_rows(run)
                _write_plots(run, sys.stderr)  # stdout may be the report itself
        text = (sweep_table(runs[0]) if args.sweep
                else table(runs, args.format, args.pivot, Path(args.output).parent if args.output else None))
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_runs(args) -> int:
    """Every run folder, damaged ones included and marked: one bad file never hides the others."""
    from harness.reporting.report import run_summary

    runs = results.list_runs(Path(args.results_dir))
    if not runs:
        print(f"no runs under {results.runs_root(Path(args.results_dir))}")
        return 0
    widths = {s: max(4, len(s)) for s in results.STATUSES}
    print(f"{'run':<28} {'date':<25} {'torch':<8} {'transformers':<13} {'peft':<8} {'device':<6} "
          + " ".join(f"{s:>{widths[s]}}" for s in results.STATUSES) + "  state")
    for run in runs:
        df, problems = results.read_run_checked(run)
        s = run_summary(run, df, problems)
        c = s["counts"]
        if problems:
            state = "damaged: " + "; ".join(problems)
        else:
            state = "complete" if s["complete"] else f"partial ({s['rows']}/{s['expected'] or '?'})"
        shards = results.read_run_meta(run).get("shards")  # a run split over machines: which are in
        if shards:
            state += f"; shards {len(shards['finished'])}/{shards['count']} in" + (
                f" (waiting for {', '.join(map(str, shards['missing']))})" if shards["missing"] else "") + (
                "; shards split the cells differently" if shards["split_mismatch"] else "")
        print(f"{s['run_id']:<28} {s['date']:<25} {s['torch']:<8} {s['transformers']:<13} {s['peft']:<8} "
              f"{s['device']:<6} " + " ".join(f"{c.get(k, 0):>{widths[k]}}" for k in results.STATUSES)
              + f"  {state}")
    return 0


def cmd_diff(args) -> int:
    from harness.reporting.diff import diff_runs, render

    try:
        d = diff_runs(_run_dir(args.results_dir, args.run_a), _run_dir(args.results_dir, args.run_b))
    except ValueError as e:
        raise CliError(str(e)) from None
    sys.stdout.write(render(d, args.format, args.gate))
    if args.gate:
        return 1 if d.gate_failures() else 0
    return 1 if d.undeclared_regressions else 0


def cmd_plots(args) -> int:
    from harness.reporting.report import checked_rows

    run = _run_dir(args.results_dir, args.run)
    try:
        checked_rows(run)
    except ValueError as e:
        raise CliError(str(e)) from None
    _write_plots(run)
    return 0


def _write_plots(run: Path, out=None) -> None:
    try:
        import matplotlib  # noqa: F401

        from harness.reporting.plots import write_plots
    except ImportError:
        raise CliError("plots need matplotlib: pip install 'prefix-compat[plots]'") from None
    for path in write_plots(run):
        print(f"wrote {path}", file=out or sys.stdout)


def cmd_probe(args) -> int:
    from harness.probe.__main__ import main as probe_main

    return probe_main(args.probe_args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["probe"]:  # its own options (python -m harness.probe --help)
        return cmd_probe(argparse.Namespace(probe_args=argv[1:]))
    if argv[:1] == ["sweep"]:  # its own options (prefix-compat sweep --help)
        from harness.probe.sweep import main as sweep_main

        return sweep_main(argv[1:])
    parser = argparse.ArgumentParser(prog="prefix-compat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help="draft a spec for a model type or a remote-code folder (prefix-compat probe --help)")
    sub.add_parser("sweep", help="probe + checks over every causal-LM model type, one run (prefix-compat sweep --help)")
    p = sub.add_parser("validate", help="check spec files; exit 2 with file/field/fix messages when bad")
    p.add_argument("paths", nargs="*", help="spec files or folders (default: model_specs/)")
    p.add_argument("--no-build", action="store_true", help="only read the files (skip building each tiny model)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("report", help="compatibility table of a run (the newest by default)")
    p.add_argument("runs", nargs="*", help="run folder(s) or run id(s); several need --pivot")
    p.add_argument("--pivot", choices=("transformers", "peft", "torch", "device", "dtype", "attn"),
                   help="one table across runs, a row per model and value of this")
    p.add_argument("--format", choices=("md", "html"), default="md")
    p.add_argument("--sweep", action="store_true", help="the sweep table of a sweep run: a line per model type")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--plots", action="store_true", help="write each run's heatmap.png first (the HTML page links it; "
                                                        "needs matplotlib)")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("diff", help="regressions, fixes, new and vanished cells from RUN_A to RUN_B; exit 1 on "
                                    "any regression not declared as an expected failure")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--format", choices=("text", "md"), default="text")
    p.add_argument("--gate", action="store_true", help="CI gate: also fail when a cell that passed in A is missing "
                                                       "from B, or B is incomplete")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("baseline", help="make a complete run the baseline CI diffs against (copies its parts and "
                                        "run.json into results/baseline/, replacing it)")
    p.add_argument("run", help="run folder or run id (`prefix-compat runs` lists them)")
    p.add_argument("--to", help="the baseline folder (default: <results-dir>/baseline)")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_baseline)
    p = sub.add_parser("plots", help="heatmap and training-curve PNGs next to a run (needs matplotlib)")
    p.add_argument("run", nargs="?")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_plots)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, OSError) as e:  # OSError: a file that cannot be read or written
        line = " ".join(str(e).split())
        print(f"prefix-compat {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
