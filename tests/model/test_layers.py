import torch
import torch.nn.functional as F

from hnet_dna.config import SSMConfig
from hnet_dna.model.isotropic import Isotropic, layout_height
from hnet_dna.model.layers import RMSNorm, SwiGLU, rmsnorm_ref

from ..conftest import kept_for_backward


def test_swiglu_gate_is_the_second_half_and_width_rounds_to_128():
    torch.manual_seed(0)
    mlp = SwiGLU(16, 100).double()
    assert mlp.fc1.weight.shape == (256, 16) and mlp.fc2.weight.shape == (16, 128)
    assert mlp.fc1.bias is None and mlp.fc2.bias is None
    x = torch.randn(3, 16, dtype=torch.float64)
    h = x @ mlp.fc1.weight.T
    y, gate = h[:, :128], h[:, 128:]
    torch.testing.assert_close(mlp(x), (F.silu(gate) * y) @ mlp.fc2.weight.T)
    swapped = (F.silu(y) * gate) @ mlp.fc2.weight.T
    assert not torch.allclose(mlp(x), swapped)


def test_rmsnorm_formula_and_dtype():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(8.0))
    x = torch.randn(4, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * torch.arange(8.0)
    torch.testing.assert_close(norm(x), expected)
    assert norm.to(torch.bfloat16)(x).dtype == torch.bfloat16


def test_rmsnorm_backward_equals_autograd_of_the_reference_and_keeps_only_its_input():
    torch.manual_seed(0)
    norm = RMSNorm(12).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 5, 12, dtype=torch.float64)
    with kept_for_backward() as kept:
        out = norm(x)
    got = torch.autograd.grad((out * weights).sum(), [x, norm.weight])
    want = torch.autograd.grad((rmsnorm_ref(x, norm.weight, norm.eps) * weights).sum(), [x, norm.weight])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, rmsnorm_ref(x, norm.weight, norm.eps))
    # x, the weight and one value per row: not a second activation of x's size
    assert sum(kept.values()) == x.numel() * 8 + 12 * 8 + 3 * 5 * 8, kept


def test_layout_heights_and_block_structure():
    assert layout_height("m3T1") == 5 and layout_height("T15") == 30 and layout_height("m4") == 4
    attn = {"num_heads": 2, "rotary_emb_dim": 8, "window_size": -1}
    stack = Isotropic("m1T1", 32, 64, SSMConfig(d_state=8, headdim=8), attn)
    names = {k.rsplit(".", 1)[0] for k in stack.state_dict()}
    assert "layers.0.mlp.fc1" not in names and "layers.0.norm2" not in names  # m: mixer only
    assert {"layers.1.mlp.fc1", "layers.1.norm2", "layers.1.mixer.Wqkv", "rmsnorm"} <= names


def test_residual_stream_stays_fp32_in_a_bf16_model():
    torch.manual_seed(0)
    attn = {"num_heads": 2, "rotary_emb_dim": 8, "window_size": -1}
    stack = Isotropic("T2", 32, 64, SSMConfig(), attn)
    seen = []
    stack.layers[1].register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0].dtype), with_kwargs=True)
    out = stack.to(torch.bfloat16)(torch.randn(2, 5, 32, dtype=torch.bfloat16))
    assert seen == [torch.float32] and out.dtype == torch.bfloat16
