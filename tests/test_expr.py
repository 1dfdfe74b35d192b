"""Config expressions: plain and dotted attribute paths (sizes inside a sub-config of a composite
config), evaluated on real configs; a misspelt path is an error naming the file, field and step."""
import pytest
import yaml

from harness.core.expr import ConfigExpr, ExprError, first_applicable
from harness.core.spec import SpecError, build_config, load_spec

TEXT = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


def _composite():
    from transformers import Gemma3Config

    return Gemma3Config(text_config=dict(TEXT, num_key_value_heads=1, num_hidden_layers=5))


def _exprs(*items):
    return tuple(ConfigExpr.parse(x) for x in items)


def test_dotted_paths_read_the_sub_config():
    cfg = _composite()
    assert first_applicable(_exprs("text_config.num_key_value_heads"), cfg) == 1
    assert first_applicable(_exprs("text_config.num_hidden_layers"), cfg) == 5
    assert first_applicable(_exprs("text_config.hidden_size / text_config.num_attention_heads"), cfg) == 16
    # the first candidate that applies wins: a top-level name absent here falls through to the dotted one
    assert first_applicable(_exprs("num_key_value_heads", "text_config.num_key_value_heads"), cfg) == 1
    # a flag may be dotted too; plain dicts (some configs keep sub-configs as dicts) resolve the same way
    assert first_applicable(_exprs("2 if text_config.use_bidirectional_attention", "3"), cfg) == 3
    assert first_applicable(_exprs("sub.n"), type("C", (), {"sub": {"n": 7}})()) == 7


def test_misspelt_dotted_path_names_the_broken_step():
    cfg = _composite()
    with pytest.raises(ExprError) as e:
        first_applicable(_exprs("text_config.num_kv_heads"), cfg)
    assert "text_config has no 'num_kv_heads'" in str(e.value)
    with pytest.raises(ExprError) as e:
        first_applicable(_exprs("txt_config.num_key_value_heads"), cfg)
    assert "Gemma3Config has no 'txt_config'" in str(e.value)
    for bad in ("text_config.", ".heads", "text_config..heads", "a.b / "):
        with pytest.raises(ExprError, match="cannot read"):
            ConfigExpr.parse(bad)


def _spec(tmp_path, heads):
    data = {
        "family": "gemma3", "match": {"model_type": ["gemma3"]},
        "build": {"code_source": "transformers", "class": "Gemma3ForConditionalGeneration",
                  "config_class": "Gemma3Config", "config": {"text_config": TEXT}},
        "kv": {"layout": ["b", "h", "s", "d"], "concat_axis": "s", "layers": "text_config.num_hidden_layers",
               "heads": heads, "head_dim": "text_config.head_dim"},
        "cache": {"container": "transformers_cache"},
        "conventions": {"attention_mask": "extend_2d", "position_ids": "explicit_offset"},
    }
    path = tmp_path / "gemma3_dotted.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_hand_written_spec_with_dotted_expressions_loads_and_evaluates(tmp_path):
    spec = load_spec(_spec(tmp_path, ["text_config.num_key_value_heads", "text_config.num_attention_heads"]))
    cfg = build_config(spec)
    assert [str(x) for x in spec.kv.heads][0] == "text_config.num_key_value_heads"
    got = [first_applicable(getattr(spec.kv, f), cfg) for f in ("layers", "heads", "head_dim")]
    assert got == [3, 2, 16]


def test_a_misspelt_dotted_path_in_a_spec_names_file_and_field(tmp_path):
    path = _spec(tmp_path, "text_config.num_kv_heads")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.field == "kv.heads" and e.value.path == str(path)
    assert "text_config has no 'num_kv_heads'" in str(e.value)
