"""Mask and position conventions: exact values on a small case, and with no prefix they reduce to
what each model does by itself (which is how the full-context oracle calls it)."""
import pytest
import torch

from harness.core.contract import CacheContract
from harness.core.conventions import MASKS, POSITIONS
from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec


class GLM:
    bos_token_id, gmask_token_id, mask_token_id = 250, 253, 252


def test_glm_2d_positions_of_a_virtual_full_sequence():
    ids = torch.tensor([[7, 253, 250, 9, 9, 9]])  # "x [gMASK] <bos> y y y"
    pos = POSITIONS["glm_2d"](GLM, 2, ids, torch.ones_like(ids), 6)
    # full sequence: 2 prefix + ids; context = first 4 (up to <bos>), [gMASK] at 3
    assert pos.tolist() == [[[2, 3, 3, 3, 3, 3], [0, 0, 1, 2, 3, 4]]]


def test_glm_bool_4d_mask_context_is_bidirectional_then_causal():
    ids = torch.tensor([[253, 250, 9, 9]])
    mask = MASKS["glm_bool_4d"](GLM, 1, ids, torch.tensor([[1, 1, 1, 0]]), 4)  # last token is padding
    assert mask.shape == (1, 1, 4, 5)
    visible = (~mask[0, 0]).int().tolist()
    assert visible == [[1, 1, 0, 0, 0],   # [gMASK] sees the context (prefix, itself)
                       [1, 1, 1, 0, 0],   # <bos> starts the causal part
                       [1, 1, 1, 1, 0],
                       [1, 1, 1, 1, 0]]   # padding column masked


def test_extend_2d_and_explicit_offset():
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert MASKS["extend_2d"](None, 2, ids, mask, 3).tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert POSITIONS["explicit_offset"](None, 2, ids, mask, 3).tolist() == [[2, 3, 4], [2, 3, 3]]
    # left padding: real tokens get the positions they would have unpadded, after the prefix
    left = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert POSITIONS["explicit_offset"](None, 2, ids, left, 3)[1, 1:].tolist() == [2, 3]
    assert POSITIONS["model_continues"](None, 2, ids, mask, 3) is None


@pytest.mark.parametrize("name", ["chatglm", "chatglm2", "qwen", "llama"])
def test_without_a_prefix_the_conventions_are_the_models_own(name):
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    model = build_model(spec)
    ids = torch.randint(0, 200, (2, 6), generator=torch.Generator().manual_seed(1))
    if spec.inputs.insert_tokens:
        ids[:, :2] = torch.tensor([model.config.gmask_token_id, model.config.bos_token_id])
    contract = CacheContract.for_model(model, spec)
    with torch.no_grad():
        own = model(input_ids=ids).logits
        ours = model(**contract.model_kwargs(ids, ids, torch.ones_like(ids), 0)).logits
    assert torch.allclose(own, ours, atol=1e-6)
