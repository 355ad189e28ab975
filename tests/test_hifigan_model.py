"""HiFi-GAN model: the losses against their formulas on small tensors, the periods of the MPD
(every p-th sample in one column) and the scales of the MSD (average-pooled inputs), the
generator's widths and lengths, and weight norm removed without changing the output."""

import numpy as np
import pytest
import torch

from samplernn_pase.audio.mel import mel_spectrogram
from samplernn_pase.models.hifigan import (
    HiFiGAN, HiFiGANConfig, discriminator_adversarial_loss, feature_matching_loss,
    generator_adversarial_loss)
from samplernn_pase.models.section import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"mpd_channels": [4, 8, 8, 16, 16], "msd_channels": [4, 8, 16, 16, 16, 16, 16]}


def test_lsgan_and_feature_matching_losses_follow_their_formulas():
    real = [torch.tensor([[0.5, 1.0]]), torch.tensor([[2.0]])]
    fake = [torch.tensor([[0.0, -1.0]]), torch.tensor([[0.5]])]
    # sum_k E(1 - D(y))^2 + E D(G(s))^2, by hand
    want = ((0.25 + 0.0) / 2 + (0.0 + 1.0) / 2) + (1.0 + 0.25)
    assert discriminator_adversarial_loss(real, fake).item() == pytest.approx(want)
    # sum_k E(1 - D(G(s)))^2
    assert generator_adversarial_loss(fake).item() == pytest.approx((1.0 + 4.0) / 2 + 0.25)
    features_real = [[torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])], [torch.tensor([3.0])]]
    features_fake = [[torch.tensor([0.0, 4.0]), torch.tensor([[-2.0]])], [torch.tensor([3.5])]]
    assert feature_matching_loss(features_real, features_fake).item() == pytest.approx(
        (1.0 + 2.0) / 2 + 2.0 + 0.5)


def test_generator_loss_is_adversarial_plus_2_feature_matching_plus_45_mel_l1():
    torch.manual_seed(0)
    config = HiFiGANConfig(**SMALL)
    model = HiFiGAN(config).eval()     # eval: spectral norm's power iteration holds still
    audio = torch.rand(2, 1, 8 * 160) * 0.2 - 0.1
    mel = mel_spectrogram(audio[:, 0], 16000, 1024, 160, 640, 64, 0.0, 8000.0)
    generated = model.generator(mel)
    loss, terms = model.generator_loss(audio, mel, generated)
    # Independently: every sub-discriminator by hand (MSD's pooled inputs included).
    results_real, results_fake = [], []
    for d in model.mpd.discriminators:
        results_real.append(d(audio))
        results_fake.append(d(generated))
    x, y = audio, generated
    for i, d in enumerate(model.msd.discriminators):
        if i:
            x, y = (torch.nn.functional.avg_pool1d(t, 4, 2, padding=2) for t in (x, y))
        results_real.append(d(x))
        results_fake.append(d(y))
    adversarial = sum(((1 - s) ** 2).mean() for s, _ in results_fake)
    matching = sum((r - f).abs().mean() for (_, fr), (_, ff) in zip(results_real, results_fake)
                   for r, f in zip(fr, ff))
    mel_l1 = (mel_spectrogram(generated[:, 0], 16000, 1024, 160, 640, 64, 0.0, 8000.0) - mel).abs().mean()
    assert len(results_fake) == 8
    assert terms["adversarial"].item() == pytest.approx(adversarial.item(), rel=1e-5)
    assert terms["feature_matching"].item() == pytest.approx(matching.item(), rel=1e-5)
    assert terms["mel_l1"].item() == pytest.approx(mel_l1.item(), rel=1e-5)
    assert loss.item() == pytest.approx((adversarial + 2 * matching + 45 * mel_l1).item(), rel=1e-5)
    # The discriminator's loss on the same audio, by the LSGAN formula.
    want = sum(((1 - r[0]) ** 2).mean() + (f[0] ** 2).mean() for r, f in zip(results_real, results_fake))
    assert model.discriminator_loss(audio, generated).item() == pytest.approx(want.item(), rel=1e-5)


def test_period_discriminators_see_every_pth_sample_and_msd_pools_twice():
    model = HiFiGAN(HiFiGANConfig(**SMALL))
    assert [d.period for d in model.mpd.discriminators] == [2, 3, 5, 7, 11]
    audio = torch.arange(100, dtype=torch.float32).view(1, 1, 100)
    for d in model.mpd.discriminators:
        folded = d.fold(audio)
        p = d.period
        assert folded.shape == (1, 1, -(-100 // p), p)
        # Column j holds samples j, j + p, j + 2p, ...; the tail is reflect-padded.
        for j in range(p):
            column = folded[0, 0, :, j].numpy()
            whole = (100 - j + p - 1) // p
            assert np.array_equal(column[:whole], np.arange(j, 100, p))
        padded = np.concatenate([np.arange(100), np.arange(98, 98 - (-100) % p, -1)])
        assert np.array_equal(folded.flatten().numpy(), padded)
    # MSD: the raw audio, then 2x and 4x average-pooled (window 4, stride 2, zero padding 2).
    seen = []
    hooks = [d.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
             for d in model.msd.discriminators]
    signal = torch.randn(1, 1, 64)
    model.msd(signal)
    for hook in hooks:
        hook.remove()

    def pool(x):   # numpy: mean of 4 samples around every other sample, zeros outside
        padded = np.pad(x, 2)
        return np.array([padded[2 * i:2 * i + 4].mean() for i in range(len(x) // 2 + 1)])

    once = pool(signal[0, 0].numpy())
    assert len(seen) == 3 and torch.equal(seen[0], signal)
    assert np.allclose(seen[1][0, 0].numpy(), once, atol=1e-6)
    assert np.allclose(seen[2][0, 0].numpy(), pool(once), atol=1e-6)


@pytest.mark.parametrize("version,widths", [("v1", [256, 128, 64, 32]), ("v3", [128, 64, 32, 16])])
def test_generator_widths_lengths_and_weight_norm_removal(version, widths):
    torch.manual_seed(1)
    model = HiFiGAN(HiFiGANConfig(version=version, **SMALL)).generator.eval()
    assert [up.out_channels for up in model.ups] == widths
    assert len(model.resblocks) == 4 * 3
    mel = torch.randn(1, 64, 7)
    with torch.no_grad():
        before = model(mel)
        assert before.shape == (1, 1, 7 * 160) and before.abs().max() <= 1
        after = model.remove_weight_norm()(mel)
    assert not any(name for name, _ in model.named_parameters() if "parametrizations" in name)
    assert torch.allclose(before, after, atol=1e-5)


def test_rates_must_multiply_to_the_hop():
    with pytest.raises(ConfigError, match=r"model.upsample_rates: their product \(128\) must equal "
                                          r"model.hop_length \(160\)"):
        HiFiGANConfig(upsample_rates=[8, 4, 4], upsample_kernel_sizes=[16, 8, 8])
    with pytest.raises(ConfigError, match="model.upsample_kernel_sizes: 10 for rate 5"):
        HiFiGANConfig(upsample_kernel_sizes=[10, 8, 8, 4])
