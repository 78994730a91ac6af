"""Image classifiers for small RGB inputs (CIFAR 32x32, Tiny ImageNet 64x64; any side >= 16), and
ImageNet's ResNet-50.

Every network ends in adaptive average pooling, so the input size only changes the cost.
`MODELS` maps a name to a constructor taking `num_classes`; `create_model` looks one up.

- `preactresnet18`, `preactresnet50`: the supervised-mollification authors' `PreActResNet18/50`
  (their `src/networks/presnet.py`), basic blocks [2, 2, 2, 2] / bottleneck blocks [3, 4, 6, 3]
  (expansion 4), widths 64/128/256/512, 3x3 stride-1 stem, no max-pool. Unlike the textbook
  network: no BN-ReLU before the pooling head, the 1x1 projection shortcut (no BN) takes the
  block's raw input, and PyTorch's default initialisation. Module names follow theirs (`conv1`,
  `layer1`..`layer4`, `layer`/`resfunc`, `shortcut`, `linear`), so their state dicts load.
- `preactresnet18_textbook`, `preactresnet50_textbook`: the pre-activation ResNet of He et al.
  2016 ("Identity Mappings in Deep Residual Networks") on the same stages: the projection sees
  the pre-activated input, final BN-ReLU before pooling, torchvision's kaiming init.
- `resnet18`: torchvision's `resnet18` with the usual CIFAR stem (3x3 stride-1 conv, no max-pool).
- `resnet50`: torchvision's `resnet50` as it is (the ImageNet stem: 7x7 stride-2 conv and max-pool),
  randomly initialised with torchvision's defaults. The authors' repository has no
  ImageNet network of its own: its torchvision ResNets (`src/networks/resnet_tv.py`) are this one,
  loaded with ImageNet-pretrained weights, which an ImageNet study cannot use.
- `wrn40_2`, `wrn28_10`: Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks"),
  depth 40 width 2 (AugMix's model) and depth 28 width 10, pre-activation blocks, no dropout.
- `smallcnn`: a small conv-BN-ReLU network (about 0.29M parameters) in the style of KellerJordan's
  cifar10-airbench (blocks of widths 32/64/128 after a 16-channel stem), for CPU-scale studies.

torchvision provides only the post-activation ResNets: the pre-activation ResNets and the Wide
ResNets are written here by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

__all__ = ["MODELS", "create_model"]


def _init_weights(model: nn.Module) -> nn.Module:
    """torchvision's ResNet init: kaiming normal (fan_out) convs, BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class _Head(nn.Module):
    """Final BN-ReLU of a pre-activation net, global average pool, linear classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.pool(torch.relu(self.bn(x)))  # (B, C, 1, 1)
        return self.fc(torch.flatten(x, 1))  # (B, K)


# ---------------------------------------------------------------------------------------------
# The authors' pre-activation ResNet (supervised-mollification, src/networks/presnet.py).
# Modules are built in their order, so PyTorch's default init draws the same weights per seed.
# ---------------------------------------------------------------------------------------------


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The authors' shortcut: identity, or a strided 1x1 conv (no BN) when the shape changes."""
    return _conv1x1(c_in, c_out, stride) if stride != 1 or c_in != c_out else nn.Identity()


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (strided), BN-ReLU-conv3x3, plus the shortcut of the raw input x."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), _conv3x3(c_in, width, stride),
            nn.BatchNorm2d(width), nn.ReLU(), _conv3x3(width, width),
        )  # fmt: skip
        self.shortcut = _shortcut(c_in, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        return self.layer(x) + self.shortcut(x)  # (B, width, H/s, W/s)


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 to 4x the width, plus the
    shortcut of the raw input x."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.resfunc = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), _conv1x1(c_in, width),
            nn.BatchNorm2d(width), nn.ReLU(), _conv3x3(width, width, stride),
            nn.BatchNorm2d(width), nn.ReLU(), _conv1x1(width, c_out),
        )  # fmt: skip
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        return self.resfunc(x) + self.shortcut(x)  # (B, 4w, H/s, W/s)


def _preact_stages(block: type[nn.Module], num_blocks: tuple[int, ...]) -> list[nn.Sequential]:
    """Four stages of widths 64/128/256/512 on a 64-channel stem; each later one halves H, W."""
    stages, c_in = [], 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
        blocks = []
        for stride in [1 if i == 0 else 2] + [1] * (n - 1):
            blocks.append(block(c_in, width, stride))
            c_in = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages


class PreActResNet(nn.Module):
    """The authors' network: 3x3 stride-1 stem, no max-pool, four stages, then straight to the
    average pool and the linear classifier (no final BN-ReLU), PyTorch's default init.

    Their head is `nn.AdaptiveAvgPool2d((1, 1))` too (not kuangliu's `avg_pool2d(out, 4)`), so at
    64 px both average the whole 8x8 map and the networks agree at every input size.
    """

    def __init__(
        self, block: type[nn.Module], num_blocks: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.layer1, self.layer2, self.layer3, self.layer4 = _preact_stages(block, num_blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = self.conv1(x)  # (B, 64, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512 * exp, H/8, W/8)
        return self.linear(torch.flatten(self.avgpool(x), 1))  # (B, K)


# ---------------------------------------------------------------------------------------------
# Textbook pre-activation ResNet (He et al. 2016, "Identity Mappings"); not in torchvision.
# ---------------------------------------------------------------------------------------------


class TextbookPreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3; a 1x1 projection when the shape changes."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, c_out)
        self.shortcut = _conv1x1(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        out = torch.relu(self.bn1(x))
        # The projection sees the pre-activated input, as in the paper's full pre-activation unit.
        skip = x if self.shortcut is None else self.shortcut(out)  # (B, C_out, H/s, W/s)
        out = self.conv1(out)  # (B, width, H/s, W/s)
        out = self.conv2(torch.relu(self.bn2(out)))  # (B, C_out, H/s, W/s)
        return out + skip


class TextbookPreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 to 4x the width."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv1x1(c_in, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, c_out)
        self.shortcut = _conv1x1(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)  # (B, 4w, H/s, W/s)
        out = self.conv1(out)  # (B, w, H, W)
        out = self.conv2(torch.relu(self.bn2(out)))  # (B, w, H/s, W/s)
        out = self.conv3(torch.relu(self.bn3(out)))  # (B, 4w, H/s, W/s)
        return out + skip


class TextbookPreActResNet(nn.Module):
    """CIFAR-style pre-activation ResNet: 3x3 stride-1 stem, no max-pool, four stages, final
    BN-ReLU, kaiming init."""

    def __init__(
        self, block: type[nn.Module], num_blocks: tuple[int, ...], num_classes: int
    ) -> None:
        super().__init__()
        self.stem = _conv3x3(3, 64)
        self.stages = nn.Sequential(*_preact_stages(block, num_blocks))
        self.head = _Head(512 * block.expansion, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = self.stem(x)  # (B, 64, H, W)
        x = self.stages(x)  # (B, 512 * expansion, H/8, W/8)
        return self.head(x)  # (B, K)


# ---------------------------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis 2016); not in torchvision (its wide_resnet50_2 is a
# bottleneck ImageNet net). Layout follows AugMix's / the authors' CIFAR code.
# ---------------------------------------------------------------------------------------------


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 (strided), [dropout], BN-ReLU-conv3x3; 1x1 projection on shape change."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = _conv1x1(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)  # (B, C_out, H/s, W/s)
        out = self.conv1(out)  # (B, C_out, H/s, W/s)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))  # (B, C_out, H/s, W/s)
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-k: 16-channel 3x3 stem, three stages of (depth - 4) / 6 blocks of widths
    16k, 32k, 64k, final BN-ReLU."""

    def __init__(self, depth: int, widen: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        self.stem = _conv3x3(3, 16)
        stages, c_in = [], 16
        for i, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for stride in strides:
                blocks.append(WideBasicBlock(c_in, width, stride, dropout))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = _Head(c_in, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = self.stem(x)  # (B, 16, H, W)
        x = self.stages(x)  # (B, 64k, H/4, W/4)
        return self.head(x)  # (B, K)


# ---------------------------------------------------------------------------------------------
# Small CNN for CPU-scale studies (airbench-style conv-BN-ReLU blocks).
# ---------------------------------------------------------------------------------------------


class SmallBlock(nn.Module):
    """airbench's block: conv3x3, [2x2 max-pool], BN-ReLU, conv3x3, BN-ReLU.

    Pooling straight after the first conv (before BN) runs the BN, the ReLU and the second conv at
    the lower resolution, which is what keeps the network cheap on a CPU.
    """

    def __init__(self, c_in: int, c_out: int, pool: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        x = torch.relu(self.bn1(self.pool(self.conv1(x))))  # (B, C_out, H/2, W/2) when pooling
        return torch.relu(self.bn2(self.conv2(x)))  # same shape


class SmallCNN(nn.Module):
    """Stem (conv, pool, BN-ReLU) to 16 channels at half resolution, then blocks of widths
    32, 64 (each halving the resolution) and 128, global average pool, linear classifier.

    About 0.29M parameters and 7.6M multiply-adds per 32x32 image. In a 12-epoch run on a 32 px,
    10-class subset of Tiny ImageNet it matched (within noise) the costlier variants tried.
    """

    def __init__(self, num_classes: int, stem_width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3x3(3, stem_width), nn.MaxPool2d(2), nn.BatchNorm2d(stem_width), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            SmallBlock(stem_width, 32), SmallBlock(32, 64), SmallBlock(64, 128, pool=False)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = self.stem(x)  # (B, 16, H/2, W/2)
        x = self.blocks(x)  # (B, 128, H/8, W/8)
        x = self.pool(x)  # (B, 128, 1, 1)
        return self.fc(torch.flatten(x, 1))  # (B, K)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def _cifar_resnet18(num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool (the CIFAR variant)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = _conv3x3(3, 64)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "preactresnet18": lambda k: PreActResNet(PreActBlock, (2, 2, 2, 2), k),
    "preactresnet50": lambda k: PreActResNet(PreActBottleneck, (3, 4, 6, 3), k),
    "preactresnet18_textbook": lambda k: TextbookPreActResNet(TextbookPreActBlock, (2, 2, 2, 2), k),
    "preactresnet50_textbook": lambda k: TextbookPreActResNet(
        TextbookPreActBottleneck, (3, 4, 6, 3), k
    ),
    "resnet18": _cifar_resnet18,
    "resnet50": lambda k: torchvision.models.resnet50(num_classes=k),
    "wrn40_2": lambda k: WideResNet(40, 2, k),
    "wrn28_10": lambda k: WideResNet(28, 10, k),
    "smallcnn": lambda k: SmallCNN(k),
}


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build the registered model `name` with `num_classes` outputs."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes)
