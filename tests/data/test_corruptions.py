import pytest
import torch

from probclr.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, crop_area


@pytest.fixture(scope="module")
def real_images(cifar_slice):
    from probclr.config import DataConfig
    from probclr.data.sources import load_splits

    splits = load_splits(DataConfig(dataset="imagefolder", data_dir=str(cifar_slice), image_size=32))
    return splits.test.images[:64].float().div(255)  # (64, 3, 32, 32) real CIFAR-10 test images


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_seeded_and_monotone_in_severity(real_images, name):
    x = real_images
    assert torch.equal(corrupt(x, name, 0, seed=1), x)
    dists = []
    for sev in range(1, SEVERITIES + 1):
        a, b = corrupt(x, name, sev, seed=3), corrupt(x, name, sev, seed=3)
        assert torch.equal(a, b)  # deterministic under a seed
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        dists.append(float((a - x).pow(2).mean().sqrt()))
    assert all(d2 > d1 for d1, d2 in zip(dists, dists[1:], strict=False)), dists  # each level further from clean
    if name == "gaussian_noise":
        assert not torch.equal(corrupt(x, name, 3, seed=3), corrupt(x, name, 3, seed=4))


def test_contrast_closed_form():
    x = torch.rand(2, 3, 8, 8)
    y = corrupt(x, "contrast", 2, seed=0)  # c = 0.5
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (x - m) * 0.5 + m)


def test_bad_corruption_arguments():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="'fog'.*gaussian_noise"):
        corrupt(x, "fog", 1, 0)
    with pytest.raises(ValueError, match="got 6"):
        corrupt(x, "contrast", 6, 0)


def test_crop_area_full_is_identity_and_small_crop_zooms():
    x = torch.rand(3, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(crop_area(x, torch.ones(3), gen), x)
    # a quarter-area crop of a left-right ramp covers half the width: its range of values halves
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16).contiguous()
    y = crop_area(ramp, torch.tensor([0.25]), gen)
    assert (y.amax() - y.amin()).item() == pytest.approx(0.5, abs=0.08)
    with pytest.raises(ValueError, match="crop areas"):
        crop_area(x, torch.tensor([0.5, 0.0, 1.0]), gen)


def test_centre_crop_full_is_identity_and_keeps_only_the_centre():
    from probclr.data.corruptions import centre_crop

    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(centre_crop(x, torch.ones(2)), x)
    frame = torch.zeros(1, 3, 32, 32)
    frame[..., 8:24, 8:24] = 1.0  # a bright centre square of half the side in a dark frame
    y = centre_crop(frame, torch.tensor([0.4]))  # the crop lies inside the centre square
    assert y.amin().item() == pytest.approx(1.0)
    assert centre_crop(frame, torch.tensor([1.0])).amin().item() == 0.0
    with pytest.raises(ValueError, match="side fractions"):
        centre_crop(x, torch.tensor([0.5, 1.5]))
