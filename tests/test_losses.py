"""Losses against direct computations, and the paper's Dirichlet reading of soft-target CE."""

import pytest
import torch
import torch.nn.functional as F

from trainables.losses import LOSSES, create_loss


def data(k: int = 7, n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    y = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 2, dim=1)
    return logits, y


def test_soft_cross_entropy_is_minus_sum_y_log_p():
    logits, y = data()
    expected = -(y * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(create_loss("ce")(logits, y).double(), expected, rtol=1e-6, atol=1e-6)


def test_soft_cross_entropy_on_one_hot_equals_hard_cross_entropy():
    logits, _ = data()
    labels = torch.arange(32) % 7
    hard = F.cross_entropy(logits.float(), labels)
    torch.testing.assert_close(create_loss("ce")(logits, F.one_hot(labels, 7).float()), hard)


def test_cross_entropy_is_negative_log_dirichlet_up_to_a_constant():
    """CE(f, y) + log Dir(softmax f | 1 + y) depends on y only (METHOD.md 1.7)."""
    _, y = data(n=1)
    offsets = []
    for seed in range(5):
        logits = torch.randn(1, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        log_dir = torch.distributions.Dirichlet(1 + y[0]).log_prob(logits.softmax(dim=1)[0])
        offsets.append((-(y * logits.log_softmax(dim=1)).sum() + log_dir).item())
    assert max(offsets) - min(offsets) < 1e-9


def test_binary_cross_entropy_matches_formula():
    logits, y = data()
    p = torch.sigmoid(logits)
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(create_loss("bce")(logits, y).double(), expected, rtol=1e-5, atol=1e-6)


def authors_nce(logits, y):
    """The authors' formula, literally (it is 0/0 for a uniform prediction)."""
    f, logf = logits.softmax(1), logits.log_softmax(1)
    logfp = logf.mean(1, True)
    z = ((logfp.exp() - f) / (logfp - logf)).sum(1).log()
    return -(y * logf).sum(1).mean() + z.mean()


def test_normalised_cross_entropy_matches_authors_and_handles_uniform_predictions():
    logits, y = data()
    torch.testing.assert_close(create_loss("nce")(logits, y).double(), authors_nce(logits.float(), y).double(),
                               rtol=1e-4, atol=1e-5)
    uniform = torch.zeros(4, 7, requires_grad=True)
    loss = create_loss("nce")(uniform, torch.full((4, 7), 1 / 7))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(uniform.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_minimised_by_fitting_the_target(name):
    _, y = data(seed=3)
    logits = torch.zeros_like(y, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    first = None
    for _ in range(50):
        loss = create_loss(name)(logits, y.float())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_unknown_loss_lists_valid_ones():
    with pytest.raises(ValueError, match="bce, ce, nce"):
        create_loss("mse")
