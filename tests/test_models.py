"""Model registry: every entry builds, gives (B, K) logits at 32 and 64 px, and trains.

Parameter counts pin the architectures: each exact count below is within 1% of the published one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import MODELS, create_model

BIG = {"preactresnet50", "wrn28_10"}  # trained on a smaller batch to keep the tests fast


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# Output shapes
# ---------------------------------------------------------------------------------------------


# The big models take about 0.6 s at 64 px on 2 cores, under the 5 s that would earn `slow`.
@pytest.mark.parametrize("size", [32, 64])  # CIFAR, Tiny ImageNet
@pytest.mark.parametrize("num_classes", [10, 11])  # 11: K + 1 with the "sink" class
@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape(name: str, num_classes: int, size: int) -> None:
    model = create_model(name, num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_smallest_input_channels_last_and_autocast(name: str) -> None:
    """16 px is the smallest supported side; channels_last and bf16 autocast work as they are."""
    model = create_model(name, 10).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out.float()).all()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_sgd_step(name: str) -> None:
    """Gradients are finite and non-zero everywhere, and one small SGD step lowers the batch loss.

    In train mode the output is a deterministic function of the weights (batch-statistics BN, no
    dropout), so a small enough step along the gradient must lower the loss on the same batch.
    """
    model = create_model(name, 11).train()
    batch = 2 if name in BIG else 4
    x, y = torch.randn(batch, 3, 32, 32), torch.arange(batch) * 3 % 11
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    opt.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(model(x), y)
    assert after < loss.detach()


# ---------------------------------------------------------------------------------------------
# Architecture sanity: parameter counts (10 classes)
# ---------------------------------------------------------------------------------------------

# name -> (exact count of this implementation, published / commonly quoted count)
PARAM_COUNTS = {
    "resnet18": (11_173_962, 11.17e6),  # torchvision ResNet-18, CIFAR stem
    "preactresnet18": (11_172_170, 11.17e6),  # He et al. 2016 / kuangliu's pytorch-cifar
    "preactresnet50": (23_513_162, 23.5e6),
    "wrn40_2": (2_243_546, 2.24e6),  # AugMix's WRN-40-2
    "wrn28_10": (36_479_194, 36.5e6),  # Zagoruyko & Komodakis: 36.5M
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    exact, published = PARAM_COUNTS[name]
    assert abs(exact - published) / published < 0.01  # the pinned number is the literature's
    assert _params(create_model(name, 10)) == exact


def test_smallcnn_is_small() -> None:
    assert 0.2e6 < _params(create_model("smallcnn", 10)) < 1e6


def test_resnet18_is_torchvisions_with_cifar_stem() -> None:
    import torchvision

    model = create_model("resnet18", 10)
    assert isinstance(model, torchvision.models.ResNet)
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        create_model("nope", 10)
    message = str(excinfo.value)
    assert "'nope'" in message
    assert ", ".join(sorted(MODELS)) in message

