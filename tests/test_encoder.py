import torch

from harness.core.encoder import PrefixEncoder


def test_output_is_canonical_and_planting_round_trips():
    enc = PrefixEncoder(layers=3, heads=2, head_dim=5, num_virtual_tokens=4)
    kv = torch.randn(3, 2, 2, 4, 5)  # (layers, 2, H, P, D)
    enc.plant(kv)
    out = enc(batch_size=6)
    assert out.shape == (3, 2, 6, 2, 4, 5)
    for b in range(6):
        assert torch.equal(out[:, :, b], kv)


def test_projection_emits_the_same_shape_and_trains_through_the_mlp():
    enc = PrefixEncoder(layers=2, heads=2, head_dim=4, num_virtual_tokens=3, projection_dim=16)
    out = enc(batch_size=2)
    assert out.shape == (2, 2, 2, 2, 3, 4)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
