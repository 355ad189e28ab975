"""Mel VQ-VAE parts against hand computations: the quantizer's straight-through gradient and
losses, the dead-code restart, the adaptive GAN weight, shapes, and the test metrics."""

import numpy as np
import pytest
import torch

from samplernn_pase.models.vqvae import (MelVQVAE, VectorQuantizer, VQVAEConfig, adaptive_gan_weight,
                                         hinge_discriminator_loss)
from samplernn_pase.runners.vqvae import code_perplexity, spectral_convergence

CODEBOOK = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
Z = [[0.9, 0.2], [0.1, 1.5]]          # nearest entries: 1 and 2


def two_vectors() -> torch.Tensor:
    """(batch 1, dim 2, H 1, W 2) holding Z."""
    return torch.tensor(Z).T.reshape(1, 2, 1, 2).clone().requires_grad_(True)


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_quantizer_straight_through_and_losses_by_hand(update):
    beta = 0.25
    quantizer = VectorQuantizer(3, 2, commitment_weight=beta, update=update).eval()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor(CODEBOOK))
    z = two_vectors()
    out, loss, codes = quantizer(z)
    assert codes.tolist() == [[[1, 2]]]
    chosen = np.array([CODEBOOK[1], CODEBOOK[2]])
    np.testing.assert_allclose(out.detach().reshape(2, 2).T.numpy(), chosen.T, atol=1e-7)
    squared = np.mean((np.array(Z) - chosen) ** 2)          # (0.01 + 0.04 + 0.01 + 0.25) / 4
    assert squared == pytest.approx(0.0775)
    expected = (1 + beta) * squared if update == "gradient" else beta * squared
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)

    # Gradient of sum(out * w) + loss: w passes straight through to z, plus the commitment
    # term's 2 * beta * (z - e) / 4; the chosen codebook rows get 2 * (e - z) / 4.
    w = torch.tensor([[3.0, -1.0], [0.5, 2.0]])          # per vector, per dimension
    ((out.reshape(2, 2).T * w).sum() + loss).backward()
    z_grad = z.grad.reshape(2, 2).T.numpy()
    np.testing.assert_allclose(z_grad, w.numpy() + 2 * beta * (np.array(Z) - chosen) / 4, atol=1e-6)
    if update == "gradient":
        codebook_grad = quantizer.codebook.grad.numpy()
        np.testing.assert_allclose(codebook_grad[1:], 2 * (chosen - np.array(Z)) / 4, atol=1e-6)
        assert np.all(codebook_grad[0] == 0)
    else:
        assert quantizer.codebook.grad is None and not quantizer.codebook.requires_grad


def test_ema_codebook_moves_towards_its_assigned_inputs():
    quantizer = VectorQuantizer(3, 2, commitment_weight=0.25, update="ema", ema_decay=0.5).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor(CODEBOOK))
        quantizer.ema_sum.copy_(torch.tensor(CODEBOOK))
    quantizer(two_vectors())
    # count 0.5 * 1 + 0.5 * 1 = 1 for entries 1 and 2, sum 0.5 * e + 0.5 * z: the mean of e and z.
    np.testing.assert_allclose(quantizer.codebook[1:].detach().numpy(),
                               0.5 * (np.array(CODEBOOK[1:]) + np.array(Z)), atol=1e-4)


def test_dead_code_restart_raises_the_codes_in_use():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, commitment_weight=0.25, dead_code_steps=2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.full((16, 4), 100.0))
        quantizer.codebook[0] = 0.0           # every input below is nearest to entry 0
    z = torch.randn(1, 4, 8, 8)
    encoder_outputs = z.permute(0, 2, 3, 1).reshape(-1, 4)

    def codes_in_use():
        quantizer.eval()
        _, _, codes = quantizer(z)
        quantizer.train()
        return len(codes.unique())

    assert codes_in_use() == 1
    quantizer.train()(z)                      # one batch unused: not dead yet
    assert codes_in_use() == 1 and torch.all(quantizer.codebook[1:] == 100.0)
    quantizer(z)                              # two: the 15 unused entries restart
    assert codes_in_use() >= 8
    assert torch.all(quantizer.codebook[0] == 0.0)            # the code in use is kept
    for row in quantizer.codebook[1:].detach():               # re-seeded from encoder outputs
        assert torch.isclose(encoder_outputs, row).all(1).any()
    assert torch.all(quantizer.unused_steps[1:] <= 1)


def test_adaptive_weight_matches_the_closed_form():
    """Decoder last layer y = W x, L1 reconstruction, generator loss -mean(a . y):
    d rec / dW = sign(y - t) x^T / (n * 2) summed over samples, d gan / dW = -a mean(x)^T / 2."""
    torch.manual_seed(1)
    x = torch.randn(5, 3)
    target = torch.randn(5, 2)
    a = torch.tensor([0.7, -1.3])
    weight = torch.randn(2, 3, requires_grad=True)
    y = x @ weight.T
    reconstruction = (y - target).abs().mean()
    generator = -(y * a).mean()
    expected_rec = np.sign((y - target).detach().numpy()).T @ x.numpy() / 10
    expected_gan = -np.outer(a.numpy(), x.numpy().mean(0)) / 2
    ratio = np.linalg.norm(expected_rec) / (np.linalg.norm(expected_gan) + 1e-4)
    value = adaptive_gan_weight(reconstruction, generator, weight, 0.0, 1e4)
    assert float(value) == pytest.approx(ratio, rel=1e-5) and not value.requires_grad
    assert float(adaptive_gan_weight(reconstruction, generator, weight, 0.0, ratio / 2)) == \
        pytest.approx(ratio / 2)
    assert float(adaptive_gan_weight(reconstruction, generator, weight, ratio * 2, 1e4)) == \
        pytest.approx(ratio * 2)


def test_hinge_loss_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.25])
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(0.5 * (0.25 + 0.625))


def tiny_config(**overrides) -> VQVAEConfig:
    values = dict(n_mels=16, crop_frames=32, channels=8, channel_multipliers=[1, 2, 2, 2],
                  res_blocks=1, downsample_freq=4, downsample_time=8, codebook_size=16,
                  codebook_dim=8, disc_channels=8, disc_layers=2)
    return VQVAEConfig(**{**values, **overrides})


def test_downsampling_per_axis_and_code_round_trip():
    torch.manual_seed(0)
    model = MelVQVAE(tiny_config()).eval()
    mel = torch.rand(2, 16, 48) * 2 - 1
    reconstruction, _, codes = model.autoencode(mel)
    assert reconstruction.shape == mel.shape and codes.shape == (2, 4, 6)
    assert torch.equal(model.encode_codes(mel), codes)
    # (z + (e - z) rounds differently from e alone: the straight-through output)
    torch.testing.assert_close(model.decode_codes(codes), reconstruction, atol=1e-4, rtol=1e-4)
    loss, scalars, _ = model.train().autoencoder_loss(mel, use_gan=True)
    assert torch.isfinite(loss) and 0 <= scalars["adaptive_weight"] <= 0.8


def test_config_problems_are_named():
    # The dataclass refuses a config that breaks a rule when it is built (as every family's does).
    for overrides, field in [({"downsample_time": 6}, "downsample_time"),
                             ({"downsample_freq": 16}, "channel_multipliers"),
                             ({"n_mels": 18}, "n_mels"),
                             ({"crop_frames": 36}, "crop_frames"),
                             ({"disc_layers": 3}, "disc_layers")]:        # 16 mels < 3 * 8
        with pytest.raises(ValueError, match=rf"^model\.{field}: "):
            tiny_config(**overrides)
    assert tiny_config().problems() == []


def test_spectral_convergence_and_perplexity_closed_forms():
    reference = np.array([[3.0, 0.0], [0.0, 4.0]])
    assert spectral_convergence(reference, reference) == 0.0
    assert spectral_convergence(np.zeros_like(reference), reference) == 1.0
    assert spectral_convergence(reference + np.array([[0.0, 1.0], [0.0, 0.0]]), reference) == pytest.approx(0.2)
    assert code_perplexity(np.array([0, 1, 2, 3] * 5), 16) == pytest.approx(4.0)
    assert code_perplexity(np.zeros(10, dtype=int), 16) == pytest.approx(1.0)
    p = np.array([0.75, 0.25])
    assert code_perplexity(np.array([5, 5, 5, 9]), 16) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
