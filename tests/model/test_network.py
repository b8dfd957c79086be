from __future__ import annotations

import pytest
import torch

from model import constants as C
from model.network import CGANet, decide, segment_log_probs

# Conv 2->128, 128->128 x2 (+BN), two summed bi-GRUs (2560->32, 32->32), attention 86->86,
# per-frame classifier 32->2: counted by hand from DESIGN.md's table.
EXPECTED_PARAMETERS = (
    (2 * 128 * 9 + 128)
    + 2 * (128 * 128 * 9 + 128)
    + 3 * 2 * 128
    + 2 * 3 * (2560 * 32 + 32 * 32 + 2 * 32)
    + 2 * 3 * (32 * 32 + 32 * 32 + 2 * 32)
    + (86 * 86 + 86)
    + (32 * 2 + 2)
)


def features(batch: int = 3, n: int = C.N_MFCC) -> torch.Tensor:
    return torch.randn(
        batch, C.N_CHANNELS, C.N_FRAMES, n, generator=torch.Generator().manual_seed(0)
    )


def test_parameter_count_is_pinned() -> None:
    assert sum(p.numel() for p in CGANet().parameters()) == EXPECTED_PARAMETERS == 816_636


def test_output_shapes_and_probabilities() -> None:
    out = CGANet().eval()(features())
    assert out.frame_probs.shape == (3, C.N_FRAMES, 2)
    assert out.totals.shape == (3, 2)
    assert out.attention.shape == (3, C.N_FRAMES)
    assert out.embedding.shape == (3, C.GRU_HIDDEN)
    assert torch.allclose(out.frame_probs.sum(-1), torch.ones(3, C.N_FRAMES), atol=1e-5)
    assert torch.allclose(out.totals.sum(-1), torch.full((3,), float(C.N_FRAMES)), atol=1e-3)
    # alpha is a softmax over frames for each feature, so its per-frame mean sums to 1.
    assert torch.allclose(out.attention.sum(-1), torch.ones(3), atol=1e-5)


def test_combined_feature_width_is_accepted() -> None:
    out = CGANet(n_features=C.COMBINED_FEATURES).eval()(features(2, C.COMBINED_FEATURES))
    assert out.totals.shape == (2, 2)


def test_gradients_reach_every_layer() -> None:
    model = CGANet().train()
    loss = torch.nn.functional.nll_loss(
        segment_log_probs(model(features(4))), torch.tensor([0, 1, 0, 1])
    )
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout() -> None:
    model = CGANet()
    x = features()
    model.eval()
    assert torch.equal(model(x).totals, model(x).totals)
    model.train()
    torch.manual_seed(1)
    a = model(x).totals
    torch.manual_seed(2)
    assert not torch.equal(a, model(x).totals)


def test_decision_rule_is_p_success_greater_than_p_failure() -> None:
    totals = torch.tensor([[50.0, 36.0], [43.0, 43.0], [10.0, 76.0]])
    assert decide(totals).tolist() == [True, False, False]


def test_fused_network_matches_the_original_in_eval_mode() -> None:
    model = CGANet()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = features()
    assert torch.allclose(model(x).totals, model.fused()(x).totals, atol=1e-4)


@pytest.mark.parametrize("bad", [(3, 2, 86, 39), (3, 1, 86, 40)])
def test_wrong_input_shapes_fail(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expects"):
        CGANet()(torch.zeros(bad))
