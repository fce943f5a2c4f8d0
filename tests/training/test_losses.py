"""Deep-supervision loss: normalised level weights and labels sampled on each level's grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from kmunet.config import KANConfig
from kmunet.networks import KMUNet
from kmunet.training.losses import DeepSupervisedLoss, deep_supervision_weights, downsample_label


def test_weights_halve_per_level_and_sum_to_one() -> None:
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(3)
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(w) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="levels must be a positive integer, got 0"):
        deep_supervision_weights(0)


@pytest.mark.parametrize("spatial", [(16, 24), (8, 12, 4)])
def test_divisible_patch_matches_nearest_exact_interpolation(spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 1) + spatial, generator=g).float()
    for factor in (2, 4):
        size = [n // factor for n in spatial]
        expected = F.interpolate(label, size=size, mode="nearest-exact")  # what MONAI's DeepSupervisionLoss does
        torch.testing.assert_close(downsample_label(label, factor), expected)


@pytest.mark.parametrize("spatial", [(17, 23), (9, 11, 7)])
def test_non_divisible_patch_samples_block_centres(spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (1, 1) + spatial, generator=g)
    factor = 4
    out = downsample_label(label, factor)
    assert out.dtype == label.dtype
    assert out.shape[2:] == tuple(-(-n // factor) for n in spatial)
    for index in torch.cartesian_prod(*[torch.arange(m) for m in out.shape[2:]]).reshape(-1, len(spatial)):
        source = tuple(min(int(i) * factor + factor // 2, n - 1) for i, n in zip(index, spatial))
        assert out[(0, 0) + tuple(int(i) for i in index)] == label[(0, 0) + source]


def test_bad_factor_or_label_raises() -> None:
    with pytest.raises(ValueError, match="factor must be a positive integer, got 0"):
        downsample_label(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"label must be \(B, 1, \*spatial\)"):
        downsample_label(torch.zeros(4, 4), 2)
    with pytest.raises(ValueError, match="factors must be positive integers"):
        DeepSupervisedLoss(DiceCELoss(to_onehot_y=True, softmax=True), factors=[2, 0])


def test_loss_is_the_weighted_mean_of_the_levels_on_a_deeply_supervised_kmunet() -> None:
    torch.manual_seed(0)
    net = KMUNet(2, 1, 3, channels=(4, 8, 8), strides=(2, 2), kan=KANConfig(grid_size=3), deep_supervision=1)
    image = torch.randn(2, 1, 18, 14)
    label = torch.randint(0, 3, (2, 1, 18, 14)).float()
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    loss_fn = DeepSupervisedLoss(base, factors=[2])
    logits, aux = net(image)
    loss = loss_fn([logits, aux], label)
    expected = (2 / 3) * base(logits, label) + (1 / 3) * base(aux, downsample_label(label, 2))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    plain = loss_fn(net(image), label)  # plain logits: the base loss itself
    torch.testing.assert_close(plain, base(net(image), label))
    with pytest.raises(ValueError, match="got 3 outputs for 2 levels"):
        loss_fn([logits, aux, aux], label)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_segmentation_loss_matches_a_direct_dice_ce(include_background: bool, batch: bool, smoothing: float) -> None:
    from kmunet.config import TrainConfig
    from kmunet.training.losses import segmentation_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3, 5, 6, generator=gen, dtype=torch.float64)
    label = torch.randint(0, 3, (3, 1, 5, 6), generator=gen)
    label[0] = 0  # a sample without foreground: per-sample and batch Dice differ there
    tc = TrainConfig(dice_weight=0.7, ce_weight=1.3, dice_include_background=include_background, dice_batch=batch,
                     label_smoothing=smoothing)
    got = segmentation_loss(tc)(logits, label)

    p = torch.softmax(logits, 1)
    onehot = F.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).double()
    g = onehot
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    dims = (0, 2, 3) if batch else (2, 3)  # batch Dice: one score per class over the whole batch
    inter, denom = (p * g).sum(dims), (p + g).sum(dims)
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)  # MONAI's default smoothing
    target = (1 - smoothing) * onehot + smoothing / 3
    ce = -(target * torch.log_softmax(logits, 1)).sum(1).mean()  # soft-target cross-entropy
    want = 0.7 * dice.mean() + 1.3 * ce
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_segmentation_loss_defaults_are_monai_dice_ce() -> None:
    from kmunet.config import TrainConfig
    from kmunet.training.losses import segmentation_loss

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=gen)
    label = torch.randint(0, 3, (2, 1, 8, 8), generator=gen)
    torch.testing.assert_close(segmentation_loss(TrainConfig())(logits, label),
                               DiceCELoss(to_onehot_y=True, softmax=True)(logits, label))
