"""Model registry: every entry builds, gives (B, K) logits at 32 and 64 px, and trains.

Parameter counts pin the architectures: each exact count below is within 1% of the published one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import MODELS, create_model

# Trained on a smaller batch to keep the tests fast.
BIG = {"preactresnet50", "preactresnet50_textbook", "resnet50", "wrn28_10"}


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
# Architecture sanity: parameter counts (10 classes; the authors' nets also with 200)
# ---------------------------------------------------------------------------------------------

# name -> (exact count of this implementation, published / commonly quoted count)
PARAM_COUNTS = {
    "resnet18": (11_173_962, 11.17e6),  # torchvision ResNet-18, CIFAR stem
    "preactresnet18": (11_171_146, 11.17e6),  # the authors' PreActResNet18 (METHOD.md 2.1)
    "preactresnet50": (23_509_066, 23.5e6),  # the authors' PreActResNet50
    "preactresnet18_textbook": (11_172_170, 11.17e6),  # He et al. 2016 / kuangliu's pytorch-cifar
    "preactresnet50_textbook": (23_513_162, 23.5e6),
    "wrn40_2": (2_243_546, 2.24e6),  # AugMix's WRN-40-2
    "wrn28_10": (36_479_194, 36.5e6),  # Zagoruyko & Komodakis: 36.5M
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    exact, published = PARAM_COUNTS[name]
    assert abs(exact - published) / published < 0.01  # the pinned number is the literature's
    assert _params(create_model(name, 10)) == exact


@pytest.mark.parametrize(
    ("name", "count"), [("preactresnet18", 11_268_616), ("preactresnet50", 23_898_376)]
)
def test_authors_parameter_count_tiny_imagenet(name: str, count: int) -> None:
    """The authors' exact counts with 200 classes (METHOD.md 2.1)."""
    assert _params(create_model(name, 200)) == count


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
# The authors' PreActResNet (METHOD.md 2.1) against the textbook one
# ---------------------------------------------------------------------------------------------

AUTHORS = ("preactresnet18", "preactresnet50")


def _projections(model: nn.Module) -> list[tuple[nn.Module, nn.Conv2d]]:
    """(block, projection shortcut) pairs: the blocks whose shortcut is a conv."""
    blocks = [m for m in model.modules() if isinstance(getattr(m, "shortcut", None), nn.Conv2d)]
    return [(m, m.shortcut) for m in blocks]


def _in_default_bound(conv: nn.Conv2d) -> bool:
    """PyTorch's default conv init draws U(-b, b) with b = 1 / sqrt(fan_in)."""
    return bool(conv.weight.abs().max() <= conv.weight[0].numel() ** -0.5)


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_head_has_no_final_bn_relu(name: str) -> None:
    """The last stage's output goes straight into the pool: no BN-ReLU in between."""
    model = create_model(name, 10).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(stage=o))
    model.avgpool.register_forward_hook(lambda m, i, o: seen.update(pool=i[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert seen["pool"] is seen["stage"]
    assert [type(m) for m in model.children()][-2:] == [nn.AdaptiveAvgPool2d, nn.Linear]


# The projections: the first block of each stage that changes the shape (all four stages in the
# bottleneck net, whose first block widens 64 to 256 channels).
@pytest.mark.parametrize(
    ("name", "n_projections"),
    [("preactresnet18", 3), ("preactresnet50", 4), ("preactresnet18_textbook", 3)],
)
def test_projection_shortcut_input(name: str, n_projections: int) -> None:
    """The authors' 1x1 projection (no BN) sees the block's raw input; the textbook one does not."""
    model = create_model(name, 10).eval()
    pairs = _projections(model)
    assert len(pairs) == n_projections
    inputs = []
    for block, shortcut in pairs:
        assert shortcut.kernel_size == (1, 1) and shortcut.bias is None
        seen = {}
        block.register_forward_hook(lambda m, i, o, seen=seen: seen.update(block=i[0]))
        shortcut.register_forward_hook(lambda m, i, o, seen=seen: seen.update(skip=i[0]))
        inputs.append(seen)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    raw = name in AUTHORS
    assert all((seen["skip"] is seen["block"]) == raw for seen in inputs)


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_use_pytorch_default_init(name: str) -> None:
    """Every conv keeps PyTorch's default kaiming_uniform(a=sqrt(5)): U(-b, b), b = 1/sqrt(fan_in).

    The textbook net's kaiming normal (fan_out) is unbounded, with a std about 2.4x larger on a
    3x3 conv that keeps the width.
    """
    convs = [m for m in create_model(name, 10).modules() if isinstance(m, nn.Conv2d)]
    assert all(_in_default_bound(conv) for conv in convs)
    for conv in convs:
        if conv.weight.numel() >= 10_000:  # enough draws for the std to be tight
            bound = conv.weight[0].numel() ** -0.5
            assert conv.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    textbook = create_model(f"{name}_textbook", 10)  # the check tells the two inits apart
    assert not all(_in_default_bound(m) for m in textbook.modules() if isinstance(m, nn.Conv2d))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        create_model("nope", 10)
    message = str(excinfo.value)
    assert "'nope'" in message
    assert ", ".join(sorted(MODELS)) in message
