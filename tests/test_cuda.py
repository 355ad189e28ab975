"""CUDA paths; skipped on machines without a GPU (run them where one is lent)."""

import math

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


def tiny_samplernn_runner():
    """A runner training a tiny SampleRNN through the shared loop's `step` (autocast,
    GradScaler, NaN guard): 4 batches of random codes per epoch, the same in every run.
    Built on first use: the loop needs jsonschema and tensorboardX, which a bare GPU
    machine's Python (bench/gpu.py) may lack."""
    from test_training_loop import LineRunner

    class TinySampleRNNRunner(LineRunner):
        def build_model(self):
            return tiny_samplernn()

        def training_step(self, model, batch, optimize):
            generator = torch.Generator().manual_seed(batch)
            codes = torch.randint(0, 256, (3, 8 + 4 * 8), generator=generator).to(self.device)
            conds = {"acoustic": torch.randn(3, 4, 43, generator=generator).to(self.device)}
            self.output_dtypes.append(torch.get_autocast_dtype("cuda")
                                      if torch.is_autocast_enabled("cuda") else torch.float32)
            loss, _ = model.loss(codes, conds, torch.tensor([0, 1, 0], device=self.device))
            return {self.loss_name: loss.detach()} if optimize("model", loss) else {}

        def validation_loss(self):
            return 1.0, 1

    return TinySampleRNNRunner


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_training_precision_on_cuda(tmp_path, precision):
    """Each training.precision on CUDA: the steps autocast to its dtype ("auto": bf16 where the
    GPU has it, else fp16), train with finite losses, and fp16's scaler state is checkpointed
    and restored (a run resumed after epoch 1 ends with the uninterrupted run's weights)."""
    for module in ("jsonschema", "tensorboardX"):
        pytest.importorskip(module)
    from samplernn_pase.training.distributed import Distributed
    from samplernn_pase.training.loop import Trainer
    from test_training_loop import make
    runner_class = tiny_samplernn_runner()
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        precision if precision != "auto" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")]
    training = {"max_epochs": 2, "precision": precision, "learning_rate": 0.01}
    experiment, runner = make(tmp_path / "a", training, device="cuda", runner_class=runner_class)
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert set(runner.output_dtypes) == {expected}
    assert trainer.iteration >= 8 - (4 if expected == torch.float16 else 0)
    assert all(math.isfinite(entry["train_loss"]) for entry in trainer.history)
    state = torch.load(experiment.checkpoint_path(2), weights_only=True)
    assert (set(state["scalers"]) == {"model"}) == (expected == torch.float16)
    straight = [p.detach().clone() for p in runner.model.parameters()]
    experiment, runner = make(tmp_path / "b", training, device="cuda", runner_class=runner_class)
    Trainer(experiment, runner, Distributed(), max_epochs=1).run()
    experiment, runner = make(tmp_path / "b", training, device="cuda", runner_class=runner_class)
    resumed = Trainer(experiment, runner, Distributed())
    assert resumed.resume()
    if expected == torch.float16:
        assert resumed.scalers["model"].get_scale() == torch.load(
            experiment.checkpoint_path(1), weights_only=True)["scalers"]["model"]["scale"]
    resumed.run()
    for a, b in zip(straight, runner.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
