"""CUDA paths; skipped on machines without a GPU (run them where one is lent)."""

import pytest
import torch

from samplernn_pase.models.melnet import MelNet, MelNetConfig
from samplernn_pase.models.samplernn import SampleRNN, SampleRNNConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def tiny_samplernn():
    torch.manual_seed(0)
    config = SampleRNNConfig(ratios=[4, 2], rnn_hidden_size=16, embedding_size=8, conds_size=8,
                             conditioning="acoustic", num_speakers=2, speaker_embedding_size=4)
    return SampleRNN(config)


def test_samplernn_cuda_matches_cpu_and_generates():
    model = tiny_samplernn()
    conds = {"acoustic": torch.randn(2, 6, 43)}
    speaker = torch.tensor([0, 1])
    codes = torch.randint(0, 256, (2, 6 * 8))
    cpu = model.log_prob(codes, conds, speaker)
    cuda_model = model.cuda()
    gpu = cuda_model.log_prob(codes.cuda(), {k: v.cuda() for k, v in conds.items()}, speaker.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)
    generator = torch.Generator(device="cuda").manual_seed(0)
    samples, log_probs = cuda_model.generate({k: v.cuda() for k, v in conds.items()}, speaker.cuda(),
                                             generator=generator, return_log_probs=True)
    teacher = cuda_model.log_prob(samples, {k: v.cuda() for k, v in conds.items()}, speaker.cuda())
    assert torch.allclose(log_probs, teacher, atol=1e-3)


def test_samplernn_bf16_autocast_step():
    model = tiny_samplernn().cuda()
    codes = torch.randint(0, 256, (3, 8 + 4 * 8), device="cuda")
    conds = {"acoustic": torch.randn(3, 4, 43, device="cuda")}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = model.loss(codes, conds, torch.tensor([0, 1, 0], device="cuda"))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                        if p.grad is not None)


def test_melnet_cuda_sampling():
    torch.manual_seed(0)
    model = MelNet(MelNetConfig(n_mels=16, tiers=3, layers=[1, 1, 1], hidden_size=8,
                                gmm_components=2, chunk_frames=8)).cuda()
    samples = model.sample(2, 16, generator=torch.Generator(device="cuda").manual_seed(0))
    assert samples.shape == (2, 16, 16) and torch.isfinite(samples).all()
