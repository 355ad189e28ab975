"""Conditional WGAN-GP: the per-sample gradient penalty, the detached critic step, the
label conditioning, the grouped strip generator and a tiny model that learns two labels."""

import torch

from samplernn_pase.models.cwgan_gp import CWGANGP, CWGANGPConfig, MelCritic, gradient_penalty


def tiny_config(**overrides) -> CWGANGPConfig:
    settings = dict(n_mels=8, frames=16, label_sizes=(3, 2), noise_size=8, label_embedding_size=4,
                    scales=2, generator_channels=4, strips=4, strip_channels=2, critic_channels=4,
                    critic_features=8)
    settings.update(overrides)
    return CWGANGPConfig(**settings)


LABELS = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0]])


def test_gradient_penalty_of_a_closed_form_critic_is_per_sample():
    """critic(x) = |x|^2 / 2 has gradient x, so sample i's gradient norm is |x_i|. Samples of
    norms 0.5, 1 and 3 give mean((n_i - 1)^2) = (0.25 + 0 + 4) / 3; a penalty on the batch's
    gradient norm would give (sqrt(0.25 + 1 + 9) - 1)^2 = 4.84 and one on the mean norm 0.25."""
    def critic(x, labels):
        return 0.5 * x.pow(2).flatten(1).sum(1)

    directions = torch.nn.functional.normalize(torch.randn(3, 1, 4, 4).flatten(1), dim=1).view(3, 1, 4, 4)
    real = directions * torch.tensor([0.5, 1.0, 3.0]).view(3, 1, 1, 1)
    penalty = gradient_penalty(critic, real, real.clone(), LABELS[:3])   # x_hat = real whatever eps
    assert torch.isclose(penalty, torch.tensor(4.25 / 3), atol=1e-5)

    # Distinct real and fake with a given epsilon per sample: x_hat_i = eps_i r_i + (1 - eps_i) f_i.
    fake = torch.randn(3, 1, 4, 4)
    epsilon = torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1, 1)
    mixed = epsilon * real + (1 - epsilon) * fake
    expected = ((mixed.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.isclose(gradient_penalty(critic, real, fake, LABELS[:3], epsilon), expected, atol=1e-5)


def test_gradient_penalty_of_the_critic_matches_one_sample_at_a_time():
    """The real critic, each sample differentiated on its own (batch of one), averaged."""
    torch.manual_seed(0)
    critic = MelCritic(tiny_config())
    real, fake = torch.randn(4, 1, 8, 16), torch.randn(4, 1, 8, 16) * 3
    epsilon = torch.rand(4, 1, 1, 1)
    per_sample = []
    for i in range(4):
        x = (epsilon[i] * real[i:i + 1] + (1 - epsilon[i]) * fake[i:i + 1]).requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(x, LABELS[i:i + 1]).sum(), x)
        per_sample.append((gradient.norm() - 1) ** 2)
    expected = torch.stack(per_sample).mean()
    batch_norm = None
    mixed = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(mixed, LABELS).sum(), mixed)
    batch_norm = (gradient.norm() - 1) ** 2
    penalty = gradient_penalty(critic, real, fake, LABELS, epsilon)
    assert torch.isclose(penalty, expected, rtol=1e-5)
    assert not torch.isclose(batch_norm, expected, rtol=1e-2)   # the test can tell them apart
    # The penalty is differentiable: it trains the critic (double back-propagation).
    penalty.backward()
    assert all(p.grad is not None for p in critic.convolutions.parameters())


def test_interpolates_take_one_random_epsilon_per_sample():
    seen = []

    def critic(x, labels):
        seen.append(x.detach())
        return x.flatten(1).sum(1)

    real, fake = torch.full((6, 1, 2, 2), 1.0), torch.zeros(6, 1, 2, 2)
    gradient_penalty(critic, real, fake, LABELS[:1].expand(6, 2))
    mixed = seen[0]                             # = epsilon_i everywhere in sample i
    assert torch.equal(mixed, mixed[:, :1, :1, :1].expand_as(mixed))
    assert len(set(mixed[:, 0, 0, 0].tolist())) == 6
    assert ((mixed >= 0) & (mixed <= 1)).all()


def test_critic_step_does_not_reach_the_generator():
    torch.manual_seed(0)
    model = CWGANGP(tiny_config())
    loss, scalars = model.critic_loss(torch.randn(4, 1, 8, 16), LABELS, torch.randn(4, 8))
    loss.backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.critic.parameters())
    assert set(scalars) == {"wasserstein", "gradient_penalty"}
    model.zero_grad(set_to_none=True)
    loss = model.generator_loss(LABELS, torch.randn(4, 8))
    loss.backward()
    assert all(p.grad is not None for p in model.generator.parameters())


def test_generated_mels_depend_on_the_labels():
    for generator in ("deep", "strips"):
        for conditioning in ("concat", "projection"):
            torch.manual_seed(0)
            model = CWGANGP(tiny_config(generator=generator, critic_conditioning=conditioning)).eval()
            noise = torch.randn(1, 8).expand(3, 8)
            with torch.no_grad():
                mels = model.generator(noise, torch.tensor([[0, 0], [1, 0], [0, 1]]))
            assert mels.shape == (3, 1, 8, 16)
            assert (mels[0] - mels[1]).abs().max() > 1e-3     # another speaker
            assert (mels[0] - mels[2]).abs().max() > 1e-3     # another gender
            # Both conditioning paths learn: the generator step reaches the generator's label
            # embeddings, the critic step the critic's.
            model.train()
            model.generator_loss(LABELS, torch.randn(4, 8)).backward()
            for embedding in model.generator.label_embeddings:
                assert embedding.weight.grad.abs().sum() > 0
            model.zero_grad(set_to_none=True)
            model.critic_loss(torch.randn(4, 1, 8, 16), LABELS, torch.randn(4, 8))[0].backward()
            for embedding in model.critic.label_embeddings:
                assert embedding.weight.grad.abs().sum() > 0


def test_strip_generator_is_one_grouped_network_of_independent_strips():
    """Strip j's frames depend only on generator j's weights: the gradient of strip 0 reaches
    group 0's slice of every parameter and no other group's."""
    config = tiny_config(generator="strips")
    model = CWGANGP(config)
    generator = model.generator
    assert generator.groups == 4
    mels = generator(torch.randn(2, 8), LABELS[:2])
    strip_frames = config.frames // config.strips
    mels[..., :strip_frames].pow(2).sum().backward()
    for name, parameter in generator.named_parameters():
        group_axis = 1 if "label_embeddings" in name else 0
        slices = parameter.grad.chunk(config.strips, dim=group_axis)
        assert slices[0].abs().sum() > 0, name
        assert all(s.abs().sum() == 0 for s in slices[1:]), name


def class_mels(labels: torch.Tensor) -> torch.Tensor:
    """Toy data: label 0 is loud in the upper half of the mel axis, label 1 in the lower half."""
    upper = torch.tensor([-1.0] * 4 + [1.0] * 4)
    profile = torch.where(labels[:, :1] == 0, upper, -upper)        # (B, 8)
    return profile[:, None, :, None].expand(-1, 1, 8, 16) + 0.1 * torch.randn(len(labels), 1, 8, 16)


def test_a_tiny_trained_model_separates_two_labels():
    """After a short WGAN-GP training on toy data (100 critic and 20 generator steps), the
    generated mean of each label lies nearer its own class mean than the other's, and outputs
    differ more between the labels than within one. (Seeds 0-4 pass with margins > 1 with the
    projection critic; an untrained generator fails half of these checks.)"""
    torch.manual_seed(0)
    model = CWGANGP(tiny_config(label_sizes=(2,), generator_channels=8, critic_channels=8,
                                critic_features=16, critic_conditioning="projection"))
    critic_opt = torch.optim.Adam(model.critic.parameters(), lr=2e-3, betas=(0.5, 0.9))
    generator_opt = torch.optim.Adam(model.generator.parameters(), lr=2e-3, betas=(0.5, 0.9))
    for step in range(100):
        labels = torch.randint(0, 2, (16, 1))
        critic_opt.zero_grad(set_to_none=True)
        model.critic_loss(class_mels(labels), labels, torch.randn(16, 8))[0].backward()
        critic_opt.step()
        if step % model.config.n_critic == 0:
            generator_opt.zero_grad(set_to_none=True)
            model.generator_loss(labels, torch.randn(16, 8)).backward()
            generator_opt.step()
    model.eval()
    noise = torch.randn(32, 8)
    with torch.no_grad():
        zeros = model.generator(noise, torch.zeros(32, 1, dtype=torch.long))
        ones = model.generator(noise, torch.ones(32, 1, dtype=torch.long))
    target_zero = class_mels(torch.zeros(1, 1, dtype=torch.long)).mean(0)
    target_one = class_mels(torch.ones(1, 1, dtype=torch.long)).mean(0)
    for generated, own, other in ((zeros, target_zero, target_one), (ones, target_one, target_zero)):
        mean = generated.mean(0)
        assert (mean - own).abs().mean() < (mean - other).abs().mean()
    between = (zeros - ones).abs().mean()
    within = torch.stack([(g - g.roll(1, 0)).abs().mean() for g in (zeros, ones)]).mean()
    assert between > within


def test_labels_come_from_data_json_speakers_and_their_known_genders():
    from samplernn_pase.errors import UserError
    from samplernn_pase.data.labeled_crops import SpeakerLabels

    def index(genders):
        speakers = [{"id": f"s{i}", "gender": g, "index": i, "set": "modeling"} for i, g in enumerate(genders)]
        return {"speakers": speakers,
                "utterances": [{"id": f"s{i}/u", "speaker": f"s{i}"} for i in range(len(genders))]}

    labels = SpeakerLabels(index(["m", "f", None]), ["speaker", "gender"])
    assert labels.kinds == ["speaker", "gender"] and labels.genders == ["f", "m", "unknown"]
    assert labels.sizes == (3, 3)
    assert [labels.of_utterance(f"s{i}/u") for i in range(3)] == [(0, 1), (1, 0), (2, 2)]
    # A `folder` corpus knows no gender: the speaker folder is the only class.
    folder = SpeakerLabels(index([None, None]), ["speaker", "gender"])
    assert folder.kinds == ["speaker"] and folder.sizes == (2,)
    try:
        SpeakerLabels(index([None, None]), ["gender"])
    except UserError as error:
        assert "model.labels" in str(error)
    else:
        raise AssertionError("a gender-only label on a corpus without genders must be refused")
