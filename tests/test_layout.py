import itertools

import pytest
import torch

from harness.core.layout import CANONICAL, Layout, LayoutError

ALL_ORDERS = ["".join(p) for p in itertools.permutations("bhsd")]


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_every_order_round_trips(order):
    layout = Layout.parse(order)
    x = torch.randn(2, 3, 5, 7)  # (B, H, S, D), every size distinct so a wrong permutation shows
    there = layout.convert(x, CANONICAL)
    assert tuple(there.shape) == layout.shape(b=2, h=3, s=5, d=7)
    assert torch.equal(CANONICAL.convert(there, layout), x)


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_concat_dim_is_derived_from_the_names(order):
    layout = Layout.parse(order)
    assert layout.dim("s") == order.index("s")
    # concatenating two caches on the derived dim grows exactly the sequence axis
    a = layout.convert(torch.randn(2, 3, 5, 7), CANONICAL)
    b = layout.convert(torch.randn(2, 3, 4, 7), CANONICAL)
    joined = torch.cat((a, b), dim=layout.dim("s"))
    assert CANONICAL.convert(joined, layout).shape == (2, 3, 9, 7)


@pytest.mark.parametrize("text", ["[b, s, h, d]", "b s h d", "bshd", ["b", "s", "h", "d"], "(b,s,h,d)"])
def test_spellings_parse_alike(text):
    assert Layout.parse(text).axes == ("b", "s", "h", "d")


def test_g_is_an_alias_for_kv_heads_and_kept_for_display():
    layout = Layout.parse("[s, b, g, d]")
    assert layout.axes == ("s", "b", "h", "d")
    assert layout.dim("g") == layout.dim("h") == 2
    assert str(layout) == "[s, b, g, d]"


@pytest.mark.parametrize("text, words", [
    ("[b, s, h]", "missing"), ("[b, s, s, d]", "exactly once"), ("[b, x, h, d]", "unknown axis"), (42, "list of axis"),
])
def test_bad_layouts_say_what_is_wrong(text, words):
    with pytest.raises(LayoutError, match=words):
        Layout.parse(text)
