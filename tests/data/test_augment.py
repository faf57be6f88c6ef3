
import pytest
import torch
import torchvision.transforms.functional as TF

from probclr.config import AugmentConfig
from probclr.data.augment import (
    CropParams,
    SimCLRAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    color_jitter,
    crop_resize_flip,
    gaussian_blur,
    sample_crops,
    sample_jitter,
    translate_flip,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=64, seed=0, size=32):
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


def test_crop_parameters_respect_area_and_aspect_bounds():
    c = sample_crops(20000, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), gen(), torch.device("cpu"))
    area = c.w * c.h / (32 * 32)
    ratio = c.w / c.h
    assert (c.w >= 1).all() and (c.w <= 32).all() and (c.h <= 32).all()
    assert (c.x0 >= 0).all() and (c.x0 + c.w <= 32).all() and (c.y0 >= 0).all() and (c.y0 + c.h <= 32).all()
    # integer rounding of w and h moves area/aspect slightly past the continuous bounds
    assert area.min() >= 0.08 * 0.75 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.8 and ratio.max() <= 4 / 3 * 1.25
    # the area is roughly uniform on [0.08, 1]: mean near 0.54 (slightly lower: big crops fail the size test)
    assert 0.45 < area.mean().item() < 0.56
    assert (area > 0.9).float().mean() > 0.02  # big crops do occur
    # log aspect ratio symmetric around 0
    assert abs(torch.log(ratio).mean().item()) < 0.02


def test_crops_independent_per_image_and_fallback():
    c = sample_crops(1000, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), gen(), torch.device("cpu"))
    assert torch.unique(torch.stack([c.x0, c.y0, c.w, c.h], 1), dim=0).shape[0] > 900
    # impossible target: every try fails -> torchvision's centre-crop fallback with the ratio clamp
    f = sample_crops(10, 32, 16, (1.0, 1.0), (1.0, 1.0), gen(), torch.device("cpu"))
    assert (f.w == 16).all() and (f.h == 16).all() and (f.x0 == 0).all() and (f.y0 == 8).all()


def test_full_crop_without_flip_is_identity_and_flip_mirrors():
    x = images(4).float() / 255
    full = torch.ones(4)
    box = CropParams(0 * full, 0 * full, 32 * full, 32 * full)
    same = crop_resize_flip(x, box, torch.zeros(4, dtype=torch.bool), 32)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = crop_resize_flip(x, box, torch.ones(4, dtype=torch.bool), 32)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_matches_torchvision_resized_crop_on_integer_box():
    x = images(1).float() / 255
    box = CropParams(torch.tensor([4.0]), torch.tensor([8.0]), torch.tensor([16.0]), torch.tensor([16.0]))
    ours = crop_resize_flip(x, box, torch.zeros(1, dtype=torch.bool), 32)
    ref = TF.resized_crop(x, 8, 4, 16, 16, [32, 32], antialias=False)
    # torchvision resizes with align_corners=False bilinear too, but clamps at the crop edge, we at the image's
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [0.2, 0.8, 1.0, 1.7])
def test_brightness_contrast_saturation_match_torchvision(factor):
    x = images(3).float() / 255
    f = torch.full((3,), factor)
    torch.testing.assert_close(adjust_brightness(x, f), TF.adjust_brightness(x, factor), atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_contrast(x, f), TF.adjust_contrast(x, factor), atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_saturation(x, f), TF.adjust_saturation(x, factor), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift", [-0.5, -0.2, -0.03, 0.0, 0.1, 0.2, 0.45])
def test_hue_matches_torchvision(shift):
    x = images(3).float() / 255
    ours = adjust_hue(x, torch.full((3,), shift))
    torch.testing.assert_close(ours, TF.adjust_hue(x, shift), atol=1e-4, rtol=0)


def test_per_image_factors_are_applied_per_image():
    x = images(2).float() / 255
    out = adjust_brightness(x, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out[0], TF.adjust_brightness(x[0], 0.5))
    torch.testing.assert_close(out[1], TF.adjust_brightness(x[1], 1.5))


def test_jitter_in_random_order_matches_sequential_torchvision():
    x = images(8).float() / 255
    p = sample_jitter(8, 1.0, gen(3), torch.device("cpu"))
    out = color_jitter(x, p)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    factors = [p.brightness, p.contrast, p.saturation, p.hue]
    for i in range(8):
        ref = x[i]
        for k in p.order[i].tolist():
            ref = ops[k](ref, float(factors[k][i]))
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("s", [0.5, 1.0])
def test_jitter_ranges(s):
    p = sample_jitter(20000, s, gen(), torch.device("cpu"))
    for t in (p.brightness, p.contrast, p.saturation):
        assert t.min() >= max(0, 1 - 0.8 * s) and t.max() <= 1 + 0.8 * s
        assert abs(t.mean().item() - 1.0) < 0.02
        assert t.min() < 1 - 0.7 * s and t.max() > 1 + 0.7 * s
    assert p.hue.abs().max() <= 0.2 * s and p.hue.abs().max() > 0.18 * s
    # every op is first about a quarter of the time: the order is random per image
    first = torch.bincount(p.order[:, 0], minlength=4).float() / 20000
    assert (first - 0.25).abs().max() < 0.02
    assert (torch.sort(p.order, dim=1).values == torch.arange(4)).all()


def test_blur_matches_torchvision_gaussian_blur():
    x = images(3).float() / 255
    sigma = torch.tensor([0.3, 1.0, 2.0])
    k = blur_kernel_size(32, 0.1)
    assert k == 3 and blur_kernel_size(96, 0.1) == 11 and blur_kernel_size(224, 0.1) == 23
    ours = gaussian_blur(x, sigma, k)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def _rates(cfg, n=4000):
    """Estimate flip and greyscale rates from the outputs of the full pipeline on asymmetric colour images."""
    x = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    x[:, 0, :, :4] = 255  # red left half, blue right half: flips and greyscale are visible
    x[:, 2, :, 4:] = 255
    out = SimCLRAugment(cfg)(x, gen(5))
    flipped = (out[:, 2, :, :4].mean(dim=(1, 2)) > out[:, 2, :, 4:].mean(dim=(1, 2)))
    gray = (out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) < 1e-6
    return flipped.float().mean().item(), gray.float().mean().item()


def test_flip_and_grayscale_rates():
    cfg = AugmentConfig(crop=False, color_jitter=False, flip_p=0.5, grayscale_p=0.2)
    flip, gray = _rates(cfg)
    assert abs(flip - 0.5) < 0.04
    assert abs(gray - 0.2) < 0.03
    flip, gray = _rates(AugmentConfig(crop=False, color_jitter=False, flip=False, grayscale=False))
    assert flip == 0.0 and gray == 0.0


def test_pipeline_shapes_range_determinism_and_independence():
    cfg = AugmentConfig(blur=True)
    x = images(32)
    a = SimCLRAugment(cfg)(x, gen(7))
    b = SimCLRAugment(cfg)(x, gen(7))
    c = SimCLRAugment(cfg)(x, gen(8))
    assert a.shape == (32, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same seed, same views
    assert not torch.allclose(a, c)
    # two views of one identical image differ: parameters are drawn per image
    same = images(1).expand(16, -1, -1, -1).contiguous()
    v = SimCLRAugment(cfg)(same, gen(9))
    assert min((v[i] - v[0]).abs().max().item() for i in range(1, 16)) > 0.01


def test_all_ops_off_is_identity():
    cfg = AugmentConfig(crop=False, flip=False, color_jitter=False, grayscale=False, blur=False)
    x = images(4)
    torch.testing.assert_close(SimCLRAugment(cfg)(x, gen()), x.float() / 255)


def test_translate_flip_is_an_exact_shift():
    x = images(64).float() / 255
    y = translate_flip(x, 4, gen(2))
    for i in range(64):
        found = False
        for flip in (False, True):
            src = x[i].flip(-1) if flip else x[i]
            padded = torch.nn.functional.pad(src, (4, 4, 4, 4))
            for dy in range(9):
                for dx in range(9):
                    if torch.equal(padded[:, dy : dy + 32, dx : dx + 32], y[i]):
                        found = True
        assert found


def test_affine_colour_equals_exact_ops_without_hue_and_clamping():
    from probclr.data.augment import affine_color

    g = gen(11)
    x = torch.rand(64, 3, 8, 8, generator=g) * 0.4 + 0.3  # mid-range: no op clamps
    p = sample_jitter(64, 0.2, g, torch.device("cpu"))._replace(hue=torch.zeros(64))
    on = torch.ones(64, dtype=torch.bool)
    off = torch.zeros(64, dtype=torch.bool)
    torch.testing.assert_close(affine_color(x, p, on, off), color_jitter(x, p), atol=1e-5, rtol=0)
    # the jitter mask: untouched images stay exactly as they were
    mask = torch.arange(64) % 2 == 0
    out = affine_color(x, p, mask, off)
    torch.testing.assert_close(out[~mask], x[~mask], atol=1e-6, rtol=0)
    # greyscale folded into the same map equals greyscale applied after the jitter
    from probclr.data.augment import grayscale

    both = affine_color(x, p, on, on)
    torch.testing.assert_close(both, grayscale(color_jitter(x, p)).expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


def test_affine_hue_rotation_keeps_luma_and_is_periodic():
    from probclr.data.augment import GRAY_WEIGHTS, affine_color

    x = torch.rand(16, 3, 8, 8, generator=gen(12)) * 0.2 + 0.4
    ident = torch.ones(16)
    for shift in (0.1, -0.2, 0.5):
        p = sample_jitter(16, 1.0, gen(1), torch.device("cpu"))
        p = p._replace(brightness=ident, contrast=ident, saturation=ident, hue=torch.full((16,), shift))
        y = affine_color(x, p, torch.ones(16, dtype=torch.bool), torch.zeros(16, dtype=torch.bool))
        w = torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
        # YIQ's Y weights (0.299, 0.587, 0.114) are the luma torchvision uses (to 1e-4)
        torch.testing.assert_close((y * w).sum(1), (x * w).sum(1), atol=2e-4, rtol=0)
        assert (y - x).abs().max() > 0.01 or shift == 0
    p = p._replace(hue=torch.ones(16))  # a full turn is the identity
    y = affine_color(x, p, torch.ones(16, dtype=torch.bool), torch.zeros(16, dtype=torch.bool))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["hsv", "affine"])
def test_both_colour_modes_seeded_and_in_range(mode):
    cfg = AugmentConfig(color_mode=mode)
    x = images(16)
    a, b = SimCLRAugment(cfg)(x, gen(3)), SimCLRAugment(cfg)(x, gen(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_noise_rate_and_strength_follow_the_config():
    """Noise is applied to a noise_p fraction of images with per-image std in noise_std; off by default."""
    x = torch.full((4000, 3, 16, 16), 128, dtype=torch.uint8)  # mid-grey: no clamping at 0.1 std
    base = dict(crop=False, flip=False, color_jitter=False, grayscale=False)
    clean = SimCLRAugment(AugmentConfig(**base))(x, gen(3))
    assert torch.equal(clean, x.float() / 255)
    out = SimCLRAugment(AugmentConfig(**base, noise=True, noise_p=0.3, noise_std=(0.02, 0.08)))(x, gen(3))
    std = (out - x.float() / 255).std(dim=(1, 2, 3))  # (B,) per-image noise level
    noisy = std > 1e-6
    assert abs(noisy.float().mean().item() - 0.3) < 0.03
    assert std[noisy].min() > 0.02 * 0.9 and std[noisy].max() < 0.08 * 1.1
    # uniform std: the mean of U(0.02, 0.08) is 0.05
    assert abs(std[noisy].mean().item() - 0.05) < 0.003
    again = SimCLRAugment(AugmentConfig(**base, noise=True, noise_p=0.3, noise_std=(0.02, 0.08)))(x, gen(3))
    assert torch.equal(out, again)
