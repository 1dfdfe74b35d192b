"""Where the real hub remote code of a family is, for the tests that compare our reference models
with it: the same variables and version ranges as the matrix (harness/core/remote.py), or a skip that
says what to set."""
import os
from pathlib import Path

import pytest
import transformers
from packaging.version import Version

from harness.core.remote import code_dir_variable, unpinned
from harness.core.spec import SPEC_DIR, load_spec


def real_code_dir(spec_name: str) -> str:
    spec = load_spec(SPEC_DIR / f"{spec_name}.yaml")
    var = code_dir_variable(spec_name)
    folder = os.environ.get(var)
    if not folder:
        pytest.skip(f"{var} not set (a local folder with the real {spec.remote.repo} code)")
    if spec.remote.transformers is not None and Version(transformers.__version__) not in spec.remote.transformers:
        pytest.skip(f"the real {spec.remote.repo} code loads under transformers{spec.remote.transformers}, "
                    f"not {transformers.__version__}")
    why = unpinned(Path(folder), spec.remote)
    if why:
        pytest.skip(why)
    return folder
