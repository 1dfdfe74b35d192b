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
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, transformers=None, sha256=pinned,
                                                                requires=()))
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
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, transformers=None, sha256=pinned,
                                                                requires=()))
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


# ----------------------------------------------------------------------------- what the code needs
NOT_INSTALLED = "prefix_compat_no_such_module"


def test_every_remote_spec_declares_what_its_code_imports():
    """Qwen v1's code imports einops and transformers_stream_generator (kv-cache-facts.md); the
    ChatGLM code needs nothing beyond torch and transformers."""
    requires = {n: load_spec(SPEC_DIR / f"{n}.yaml").remote.requires for n in ("qwen", "chatglm", "chatglm2", "chatglm3")}
    assert requires == {"qwen": ("einops", "transformers_stream_generator"), "chatglm": (), "chatglm2": (), "chatglm3": ()}


def test_the_remote_extra_installs_every_declared_package():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]["remote"]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("-", "_") for r in extra}
    for spec in (load_spec(SPEC_DIR / f"{n}.yaml") for n in ("qwen", "chatglm", "chatglm2", "chatglm3")):
        assert set(spec.remote.requires) <= names, spec.name


@pytest.mark.parametrize("body, field", [
    ("requires: einops", "remote.requires"),                 # a string, not a list
    ("requires: [einops, 3]", "remote.requires"),
    ("requires: [einops-x]", "remote.requires"),             # a pip name, not what the code imports
    ("require: [einops]", "remote.require"),                 # a typo stays an unknown key
])
def test_a_bad_requires_entry_names_the_file_and_field(tmp_path, body, field):
    from harness.core.spec import SpecError

    text = (SPEC_DIR / "qwen.yaml").read_text().replace("  requires: [einops, transformers_stream_generator]",
                                                        "  " + body)
    assert text != (SPEC_DIR / "qwen.yaml").read_text()
    path = tmp_path / "qwen.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.field == field and e.value.path == str(path)


def needing(spec, *modules):
    return dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, requires=modules))


def test_a_package_the_code_imports_that_is_missing_is_named_with_the_install_command(tmp_path, monkeypatch):
    spec = needing(spec_with_code(tmp_path, b"the pinned code"), "json", NOT_INSTALLED)
    monkeypatch.setenv(code_dir_variable("qwen"), str(tmp_path))
    path, why = locate_code(spec)
    assert path is None and f"imports {NOT_INSTALLED}, not installed" in why
    assert 'pip install -e ".[remote]"' in why and "json" not in why.split("imports", 1)[1].split("not installed")[0]
    assert locate_code(needing(spec, "json")) == (tmp_path, None)  # installed: nothing to say


def test_a_missing_package_is_an_error_for_code_the_user_named_and_a_skip_otherwise(tmp_path, monkeypatch):
    """The matrix's rules: code the user pointed at is never skipped (the cell is an error saying
    what to install); code merely found in the HF cache, not named, leaves the cell skipped with the reason."""
    from harness.core.remote import build_remote_model

    spec = needing(spec_with_code(tmp_path, b"the pinned code"), NOT_INSTALLED)
    monkeypatch.setenv(TRUST_ENV, "1")
    monkeypatch.setenv(code_dir_variable("qwen"), str(tmp_path))
    assert remote_skip_reason(Cell(spec, spec.variants[0], "harness", "accepts", "remote")) is None
    with pytest.raises(RuntimeError, match=f"imports {NOT_INSTALLED}.*pip install -e"):
        build_remote_model(spec)

    monkeypatch.delenv(code_dir_variable("qwen"))
    import harness.core.remote as remote

    monkeypatch.setattr(remote, "_cached_snapshots", lambda _remote: [tmp_path])
    why = remote_skip_reason(Cell(spec, spec.variants[0], "harness", "accepts", "remote"))
    assert why is not None and f"imports {NOT_INSTALLED}" in why and 'pip install -e ".[remote]"' in why


CHATGLM_MODELING = b"""
import torch
from .configuration_chatglm import ChatGLMConfig


class ChatGLMModel(torch.nn.Module):
    def quantize(self, bits):
        from .quantization import quantize   # only when quantising, yet the loader copies it up front
        return quantize(self, bits)
"""


def chatglm_folder(tmp_path, monkeypatch, *files):
    spec = load_spec(SPEC_DIR / "chatglm2.yaml")
    pinned = {"modeling_chatglm.py": hashlib.sha256(CHATGLM_MODELING).hexdigest()}
    spec = dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, transformers=None, sha256=pinned))
    (tmp_path / "config.json").write_text('{"auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig", '
                                          '"AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"}}')
    (tmp_path / "modeling_chatglm.py").write_bytes(CHATGLM_MODELING)
    for name in files:
        (tmp_path / name).write_text("import torch\n")
    monkeypatch.setenv(code_dir_variable("chatglm2"), str(tmp_path))
    return spec


def test_a_folder_without_a_file_the_code_imports_is_refused_naming_it(tmp_path, monkeypatch):
    spec = chatglm_folder(tmp_path, monkeypatch, "configuration_chatglm.py")
    path, why = locate_code(spec)
    assert path is None
    assert "quantization.py (imported by modeling_chatglm.py)" in why and spec.remote.repo in why  # where to get it
    assert "configuration_chatglm.py" not in why  # present: not named


def test_relative_imports_are_followed_through_every_file_and_auto_map(tmp_path, monkeypatch):
    from harness.core.remote import missing_code_files

    spec = chatglm_folder(tmp_path, monkeypatch, "quantization.py")
    # configuration_chatglm.py is named by config.json's auto_map and by the modeling file
    assert missing_code_files(tmp_path, ["modeling_chatglm.py"]) == [
        "configuration_chatglm.py (imported by modeling_chatglm.py)"]
    (tmp_path / "configuration_chatglm.py").write_text("from . import helpers\n")
    assert missing_code_files(tmp_path, []) == ["helpers.py (imported by configuration_chatglm.py)"]
    (tmp_path / "helpers.py").write_text("x = 1\n")
    assert locate_code(spec) == (tmp_path, None)
