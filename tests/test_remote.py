"""The remote-code loader never runs code that is not the pinned revision, and says what to set."""
import dataclasses
import hashlib

import pytest

from harness.core.remote import code_dir_variable, locate_code
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.cells import TRUST_ENV, Cell, remote_skip_reason


def spec_with_code(tmp_path, body: bytes):
    spec = load_spec(SPEC_DIR / "qwen.yaml")
    pinned = {"modeling_qwen.py": hashlib.sha256(b"the pinned code").hexdigest()}
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, transformers=None, sha256=pinned))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "modeling_qwen.py").write_bytes(body)
    return spec


def test_a_folder_with_the_pinned_code_is_used(tmp_path, monkeypatch):
    spec = spec_with_code(tmp_path, b"the pinned code")
    monkeypatch.setenv(code_dir_variable("qwen"), str(tmp_path))
    assert locate_code(spec) == (tmp_path, None)


def test_a_folder_with_other_code_is_refused_naming_every_file(tmp_path, monkeypatch):
    spec = spec_with_code(tmp_path, b"some other revision")
    pinned = {**spec.remote.sha256, "configuration_qwen.py": hashlib.sha256(b"cfg").hexdigest(),
              "qwen_generation_utils.py": hashlib.sha256(b"utils").hexdigest()}
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, sha256=pinned))
    (tmp_path / "configuration_qwen.py").write_bytes(b"cfg")  # this one matches
    monkeypatch.setenv(code_dir_variable("qwen"), str(tmp_path))
    path, why = locate_code(spec)
    assert path is None and "is not the code of Qwen/Qwen-7B @ ffe04dd57f85" in why
    assert "modeling_qwen.py has sha256" in why and "qwen_generation_utils.py is missing" in why
    assert "configuration_qwen.py" not in why
    assert f"prefix-compat probe --code-dir {tmp_path}" in why  # how to check that revision instead


def test_code_the_user_named_is_never_skipped(tmp_path, monkeypatch):
    """A refused folder the user pointed at is an error when the model is built, not a quiet skip."""
    spec = spec_with_code(tmp_path, b"some other revision")
    monkeypatch.setenv(TRUST_ENV, "1")
    monkeypatch.setenv(code_dir_variable("qwen"), str(tmp_path))
    assert remote_skip_reason(Cell(spec, spec.variants[0], "harness", "accepts", "remote")) is None
    from harness.core.remote import build_remote_model

    with pytest.raises(RuntimeError, match="modeling_qwen.py has sha256"):
        build_remote_model(spec)


def test_without_opt_in_remote_cells_say_what_to_set(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    spec = load_spec(SPEC_DIR / "qwen.yaml")
    why = remote_skip_reason(Cell(spec, spec.variants[0], "harness", "accepts", "remote"))
    assert "--trust-remote-code" in why and f"{TRUST_ENV}=1" in why and "Qwen/Qwen-7B" in why


def test_code_dir_variable_names():
    assert code_dir_variable("qwen1.5") == "PREFIX_COMPAT_CODE_DIR_QWEN1_5"
    with pytest.raises(AttributeError):
        code_dir_variable(None)


def test_a_cached_snapshot_with_the_pinned_files_is_found_whatever_its_commit_id(tmp_path, monkeypatch):
    # a local HF cache laid out as huggingface_hub writes it, under a hub commit id we cannot know
    spec = load_spec(SPEC_DIR / "qwen.yaml")
    pinned = {"modeling_qwen.py": hashlib.sha256(b"the pinned code").hexdigest()}
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, transformers=None, sha256=pinned))
    repo = tmp_path / "hub" / "models--Qwen--Qwen-7B"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text("{}")
    (snap / "modeling_qwen.py").write_bytes(b"the pinned code")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(code_dir_variable("qwen"), raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path, why = locate_code(spec)
    assert why is None and path.name == "a" * 40
