"""Batched base augmentations with per-image randomness, run on the training device.

The training set sits on the device as uint8; each step draws a batch, converts it to float32 in
[0, 1] and calls one `Augmentation` on the WHOLE batch (as in KellerJordan/cifar10-airbench's
`batch_flip_lr` / `batch_crop`). Every image still draws its own flip, crop offset, angle, op and
magnitude: parameters are per-image tensors and the kernels are written over `(B, C, H, W)` batches
with per-image parameters. MixUp and CutMix are the exception by design: one lambda (and box) per
batch, as torchvision and the paper's authors use them.

No op draws anything on the host or reads anything back (`.item()`, boolean-mask indexing with a
data-dependent size): on an accelerator every group of ops is evaluated on the whole batch and the
result picked per image with `torch.where`, so shapes are static and the step never waits on the
device. On CPU, where reading back is free, each group is computed only on the images that drew it.

One job per module:
    common      the `Augmentation` signature, Dirichlet/Beta draws, per-group dispatch
    geometry    flips, crops, affine warps (torchvision's and PIL's arithmetic)
    kernels     per-op kernels and the op dispatch of the torchvision policies; named op groups
    spaces      the policies' op spaces and AutoAugment's sub-policies, as data
    policies    fcr, trivaug, randaug, autoaug, augmix (the paper's baselines)
    mixing      mixup, cutmix (batch mixing: they change the labels)
    ipmix_ops   IPMix's image-, patch- and pixel-level kernels (the reference's PIL / tensor arithmetic)
    ipmix       IPMix's per-image draws and chains
    mixing_set  IPMix's mixing pictures: the procedural set, or a folder of the user's
    registry    AUGMENTATIONS, LABEL_MIXING, create_augmentation
"""

from trainables.augment.common import Augmentation
from trainables.augment.geometry import (
    batch_affine, batch_crop, batch_flip, batch_rotate, inverse_affine_matrix, pil_affine, windows,
)  # fmt: skip
from trainables.augment.ipmix import IPMixParams, ipmix_apply, ipmix_params, make_ipmix
from trainables.augment.kernels import (
    CORRUPTION_OVERLAP_OPS, ENHANCE_OPS, GEOMETRIC_OPS, IDENTITY, OPS, TRIVAUG_OPS, apply_op, apply_ops,
    batch_blend, batch_equalize, batch_posterize, batch_solarize,
)  # fmt: skip
from trainables.augment.mixing import (
    cutmix, cutmix_apply, cutmix_box, cutmix_params, mixup, mixup_apply, mixup_params,
)  # fmt: skip
from trainables.augment.policies import (
    AUGMIX_SPACES, TRIVAUG_NUM_BINS, TRIVAUG_SIGNED, augmix, augmix_apply, augmix_paper, augmix_params, autoaug,
    autoaug_cifar10, autoaug_params, fcr, fcr_apply, fcr_params, randaug, randaug_params, trivaug, trivaug_apply,
    trivaug_magnitudes, trivaug_params,
)  # fmt: skip
from trainables.augment.mixing_set import procedural_mixing_set
from trainables.augment.registry import AUGMENTATIONS, LABEL_MIXING, create_augmentation, parse_spec, stages
from trainables.augment.spaces import (
    AUGMIX_PAPER_SPACE, AUGMIX_SPACE, AUTOAUG_CIFAR10_POLICY, AUTOAUG_IMAGENET_POLICY, AUTOAUG_POLICIES,
    AUTOAUG_SPACE, RANDAUG_SPACE, SPACES, TRIVAUG_SPACE, AutoAugPolicy, OpSpace, OpTable, op_table,
)  # fmt: skip

__all__ = [
    "AUGMENTATIONS", "AUGMIX_PAPER_SPACE", "AUGMIX_SPACE", "AUGMIX_SPACES", "AUTOAUG_CIFAR10_POLICY",
    "AUTOAUG_IMAGENET_POLICY", "AUTOAUG_POLICIES", "AUTOAUG_SPACE", "Augmentation", "AutoAugPolicy",
    "CORRUPTION_OVERLAP_OPS", "ENHANCE_OPS", "GEOMETRIC_OPS", "IDENTITY", "IPMixParams", "LABEL_MIXING", "OPS", "OpSpace",
    "OpTable", "RANDAUG_SPACE", "SPACES", "TRIVAUG_NUM_BINS", "TRIVAUG_OPS", "TRIVAUG_SIGNED", "TRIVAUG_SPACE",
    "apply_op", "apply_ops", "augmix", "augmix_apply", "augmix_paper", "augmix_params", "autoaug",
    "autoaug_cifar10", "autoaug_params", "batch_affine", "batch_blend", "batch_crop", "batch_equalize",
    "batch_flip", "batch_posterize", "batch_rotate", "batch_solarize", "create_augmentation", "cutmix",
    "cutmix_apply", "cutmix_box", "cutmix_params", "fcr", "fcr_apply", "fcr_params", "inverse_affine_matrix",
    "ipmix_apply", "ipmix_params", "make_ipmix", "mixup", "mixup_apply", "mixup_params", "op_table", "parse_spec", "pil_affine", "procedural_mixing_set", "randaug",
    "randaug_params", "stages", "trivaug", "trivaug_apply", "trivaug_magnitudes", "trivaug_params", "windows",
]  # fmt: skip
