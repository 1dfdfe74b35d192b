"""``python -m harness.probe MODEL_TYPE`` or ``python -m harness.probe --code-dir DIR``: the draft spec
on stdout, the status and what could not be inferred on stderr. Exit 0 ok, 1 probe-failed, 3 n/a."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from . import probe_code_dir, probe_model_type

EXIT = {"ok": 0, "probe-failed": 1, "n/a": 3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-compat probe", description=__doc__.splitlines()[0])
    ap.add_argument("model_type", nargs="?", help="a model type of the installed transformers (e.g. mistral)")
    ap.add_argument("--code-dir", help="a local remote-code folder (config.json + *.py)")
    ap.add_argument("--config", metavar="CONFIG_JSON",
                    help="with MODEL_TYPE: a released checkpoint's config.json, probed instead of the config class's "
                         "defaults (its sizes are shrunk, its layer kinds and other settings kept)")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="allow executing the folder's code (or set PREFIX_COMPAT_TRUST_REMOTE_CODE=1)")
    args = ap.parse_args(argv)
    if bool(args.model_type) == bool(args.code_dir):
        ap.error("give a MODEL_TYPE or --code-dir DIR (one of them)")
    if args.config and args.code_dir:
        ap.error("--config goes with MODEL_TYPE; a --code-dir folder's own config.json is probed")
    warnings.filterwarnings("ignore")
    if args.code_dir:
        trust = args.trust_remote_code or os.environ.get("PREFIX_COMPAT_TRUST_REMOTE_CODE") == "1"
        result = probe_code_dir(args.code_dir, trust_remote_code=trust)
    else:
        config_json = None
        if args.config:
            try:
                config_json = json.loads(Path(args.config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                ap.error(f"--config {args.config}: {e}")
            if not isinstance(config_json, dict):
                ap.error(f"--config {args.config}: expected a JSON object (a config.json)")
        result = probe_model_type(args.model_type, config_json)
    if result.yaml:
        sys.stdout.write(result.yaml)
    print(result.summary(), file=sys.stderr)
    for note in result.notes:
        print(f"  not inferred / check: {note}", file=sys.stderr)
    for t in result.trials:
        print(f"  conventions {t.attention_mask} + {t.position_ids}: {t.message}"
              f"{' (reproduces)' if t.passed else ''}", file=sys.stderr)
    if result.hybrid is not None:
        print(f"  hybrid, measured: {result.hybrid.message}", file=sys.stderr)
    return EXIT[result.status]


if __name__ == "__main__":
    sys.exit(main())
