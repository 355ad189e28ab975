"""training.accumulate_batches through the real runners' `training_step` and the shared loop.

Where no layer uses batch statistics, N accumulated batches of B rows must give the gradient
of one batch of N x B rows: the GPT prior, and MelNet and SampleRNN per chunk (float64 models,
full masks so that every batch's mean has as many terms). For the truncated-BPTT families the
N batches are consecutive chunks of the same slots: the gradient is that of the N chunks'
mean loss with the carried state detached at each chunk boundary, written out here with the
model's own `loss`. The optimizer step is intercepted to read the gradient it would apply.
Exact resume after a SIGKILL in the middle of an accumulation is checked on the real CLI.
"""

import copy
import json
import logging
import shutil
import signal
import subprocess
from types import SimpleNamespace

import pytest
import torch

from samplernn_pase.experiment.config import fill_defaults, load_schema
from samplernn_pase.models.gpt import GPT, GPTConfig
from samplernn_pase.models.melnet import MelNet, MelNetConfig
from samplernn_pase.models.samplernn import SampleRNN, SampleRNNConfig
from samplernn_pase.runners.carried import CarriedState
from samplernn_pase.runners.gpt_prior import GPTPriorRunner
from samplernn_pase.runners.melnet import MelNetRunner
from samplernn_pase.runners.samplernn import SampleRNNRunner
from samplernn_pase.training.distributed import Distributed
from samplernn_pase.training.loop import Trainer
from test_cli_samplernn import Workspace, logged_losses, tiny_config, wait_for_iteration

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = 4          # rows of the large batch; two accumulated batches of 2 rows each


def runner_of(runner_class, model: torch.nn.Module, accumulate: int, **attributes):
    """The family's runner around `model`, without an experiment: only what its
    `training_step` and the loop read (the corpus-derived attributes given)."""
    runner = object.__new__(runner_class)
    training = fill_defaults(load_schema("training"), {"accumulate_batches": accumulate,
                                                       "gradient_clip": None, "optimizer": "sgd"})
    runner.config = {"seed": 0, "model": {"type": "test"}, "training": training, "test": {"period": None}}
    runner.device, runner.log, runner.model = torch.device("cpu"), logging.getLogger("test-accumulation"), model
    runner.__dict__.update(attributes)
    return runner


def applied_gradients(runner, batches: list[dict]) -> list[torch.Tensor]:
    """The gradient the optimizer step receives after `batches` (one accumulation group)."""
    trainer = Trainer(SimpleNamespace(), runner, Distributed())
    captured = []
    trainer.optimizer.step = lambda: captured.append(gradients(runner.model))
    for index, batch in enumerate(batches):
        trainer.step(batch, final=index == len(batches) - 1)
    assert len(captured) == 1 and trainer.iteration == 1
    return captured[0]


def gradients(model) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def rows(batch: dict, selected: slice) -> dict:
    return {key: value[selected] for key, value in batch.items()}


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    worst = max(float((a - b).abs().max()) for a, b in zip(got, want))
    assert worst <= 1e-6 and any(float(g.abs().max()) > 1e-3 for g in want), worst


def halves_against_whole(runner_class, model, batch, **attributes) -> None:
    """`attributes` are copied for each runner (a carried state is each runner's own)."""
    whole = applied_gradients(runner_of(runner_class, copy.deepcopy(model), 1,
                                        **copy.deepcopy(attributes)), [batch])
    halves = [rows(batch, slice(0, ROWS // 2)), rows(batch, slice(ROWS // 2, ROWS))]
    accumulated = applied_gradients(runner_of(runner_class, copy.deepcopy(model), 2,
                                              **copy.deepcopy(attributes)), halves)
    assert_same(accumulated, whole)


def tiny_samplernn() -> SampleRNN:
    torch.manual_seed(0)
    return SampleRNN(SampleRNNConfig(ratios=[4, 2], rnn_hidden_size=8, embedding_size=4, conds_size=4,
                                     conditioning="acoustic", num_speakers=2,
                                     speaker_embedding_size=2)).double()


def samplernn_chunk(frames: int, seed: int, reset: bool) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"input_samples_q": torch.randint(0, 256, (ROWS, (frames + 1) * 8), generator=generator),
            "acoustic": torch.randn(ROWS, frames, 43, generator=generator, dtype=torch.float64),
            "speaker_index": torch.tensor([0, 1, 1, 0]), "reset": torch.full((ROWS,), reset),
            "mask": torch.ones(ROWS, dtype=torch.bool)}


def samplernn_attributes():
    return {"hidden": CarriedState(), "speaker_vectors": None}


def samplernn_case():
    return SampleRNNRunner, tiny_samplernn(), samplernn_chunk(3, 0, True), samplernn_attributes()


def melnet_case():
    torch.manual_seed(0)
    model = MelNet(MelNetConfig(n_mels=8, tiers=2, layers=[1, 1], hidden_size=4, gmm_components=2,
                                chunk_frames=8)).double()
    batch = {"mel": torch.randn(ROWS, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
             "reset": torch.ones(ROWS, dtype=torch.bool), "mask": torch.ones(ROWS, dtype=torch.bool),
             "frame_mask": torch.ones(ROWS, 8, dtype=torch.bool)}
    return MelNetRunner, model, batch, {"state": CarriedState(), "train_tiers": [1, 2]}


def gpt_prior_case():
    torch.manual_seed(0)
    model = GPT(GPTConfig(codebook_size=16, column_height=2, block_size=8, num_speakers=2, n_layer=1,
                          n_head=2, n_embd=8)).double()
    batch = {"codes": torch.randint(0, 16, (ROWS, 8), generator=torch.Generator().manual_seed(2)),
             "mask": torch.ones(ROWS, 8), "utterances": torch.tensor([0, 1, 1, 0])}
    return GPTPriorRunner, model, batch, {
        "codes": SimpleNamespace(ids=["u0", "u1"]), "speaker_of": {"u0": "a", "u1": "b"},
        "speaker_labels": {"a": (0, 0, 0), "b": (1, 0, 0)}, "genders": [], "corpora": []}


CASES = {"samplernn": samplernn_case, "melnet": melnet_case, "gpt_prior": gpt_prior_case}


@pytest.mark.parametrize("family", sorted(CASES))
def test_two_batches_accumulated_equal_one_twice_as_large(family):
    runner_class, model, batch, attributes = CASES[family]()
    halves_against_whole(runner_class, model, batch, **attributes)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("family", sorted(CASES))
def test_accumulation_under_cpu_autocast_applies_the_unscaled_mean_gradient(family, precision):
    """bf16 / fp16 autocast on the CPU (float32 models), two accumulated batches: the applied
    gradient is fp32's to the half precision's accuracy (fp16: its GradScaler's 2^16 removed
    once from the sum of the two scaled backwards)."""
    runner_class, model, batch, attributes = CASES[family]()
    model = model.float()
    batch = {k: v.float() if v.dtype == torch.float64 else v for k, v in batch.items()}
    halves = [rows(batch, slice(0, ROWS // 2)), rows(batch, slice(ROWS // 2, ROWS))]
    applied = {}
    for mode in ("fp32", precision):
        runner = runner_of(runner_class, copy.deepcopy(model), 2, **copy.deepcopy(attributes))
        runner.config["training"]["precision"] = mode
        applied[mode] = applied_gradients(runner, halves)
    scale = max(float(g.abs().max()) for g in applied["fp32"])
    worst = max(float((a - b).abs().max()) for a, b in zip(applied[precision], applied["fp32"]))
    assert scale > 1e-2 and worst <= 0.15 * scale, (worst, scale)


def test_samplernn_accumulates_consecutive_chunks_with_the_state_carried_between_them():
    """Two consecutive chunks of the same slots: one step with the gradient of their mean loss,
    the second chunk starting from the first's final state, detached (truncated BPTT as without
    accumulation; the weights stay fixed over the group)."""
    first, second = samplernn_chunk(3, 0, True), samplernn_chunk(3, 1, False)
    model = tiny_samplernn()
    reference = copy.deepcopy(model)
    losses, hidden = [], None
    for chunk in (first, second):
        loss, hidden = reference.loss(chunk["input_samples_q"], {"acoustic": chunk["acoustic"]},
                                      chunk["speaker_index"], hidden, chunk["reset"], chunk["mask"])
        hidden = [h.detach() for h in hidden]
        losses.append(loss)
    (sum(losses) / 2).backward()
    want = gradients(reference)
    runner = runner_of(SampleRNNRunner, model, 2, **samplernn_attributes())
    assert_same(applied_gradients(runner, [first, second]), want)
    assert all(torch.equal(a, b) for a, b in zip(runner.hidden.value, hidden))   # carried on


def test_groups_count_optimizer_steps_and_the_last_group_may_be_shorter(tmp_path):
    """5 batches an epoch, accumulate 2: steps after batches 2, 4 and 5 (the last group, of one
    batch, steps with its own gradient), so 3 iterations an epoch."""
    from test_training_loop import Batches, make

    experiment, runner = make(tmp_path, {"max_epochs": 2, "accumulate_batches": 2})
    runner.train_batches = lambda epoch, position: Batches(5, position)
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert trainer.iteration == 6 and runner.steps == 10
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 6
    assert [entry["iteration"] for entry in trainer.history] == [3, 6]


def test_sigkill_in_the_middle_of_an_accumulation_resumes_exactly(tmp_path_factory, demo_data_path):
    """accumulate_batches 3: a checkpoint every 4 optimizer steps (at group boundaries); the
    run is killed after step 5 is logged, inside a later group. The resumed run logs the
    uninterrupted run's losses and ends with its weights."""
    space = Workspace(tmp_path_factory.mktemp("accumulate"), demo_data_path)
    config = tiny_config(max_epochs=1, sequence_length=12, accumulate_batches=3, checkpoint_period=4)
    config["test"]["period"] = None
    space.init("straight", config)
    straight, killed = space.experiment("straight"), space.experiment("killed")
    shutil.copytree(straight, killed)                 # the same experiment, untrained
    space.run("straight", "train")
    steps = sorted(logged_losses(straight))
    assert len(steps) >= 10, "the test needs several optimizer steps in the epoch"
    process = subprocess.Popen(space.command("killed", "train"), cwd=space.root, env=space.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_iteration(killed, 5, process, poll=0.02)      # 5: after checkpointed step 4
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = torch.load(killed / "checkpoints" / "partial.checkpoint.pt", weights_only=True)
    assert partial["loop"]["iteration"] % 4 == 0 and partial["loop"]["iteration"] >= 4
    assert partial["ranks"][0]["loader"]["position"] == 3 * partial["loop"]["iteration"]  # a boundary
    space.run("killed", "train")
    assert logged_losses(killed) == pytest.approx(logged_losses(straight), abs=1e-6)
    want = torch.load(straight / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    got = torch.load(killed / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(got[key], want[key]) for key in want)
    index = json.loads((killed / "checkpoints" / "index.json").read_text())
    assert index["epochs"]["1"]["iteration"] == steps[-1]


def test_a_signal_in_the_middle_of_a_group_stops_at_the_group_end(tmp_path):
    """SIGINT during the second batch of a group of 3: the group is finished, stepped and
    checkpointed at its boundary (loader position 3), then the run stops."""
    import os

    from test_training_loop import Batches, make

    experiment, runner = make(tmp_path, {"max_epochs": 1, "accumulate_batches": 3})
    runner.train_batches = lambda epoch, position: Batches(6, position)
    step = runner.training_step

    def training_step(model, batch, optimize):
        if batch == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(model, batch, optimize)

    runner.training_step = training_step
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert trainer.interrupted_by == "SIGINT" and trainer.iteration == 1 and runner.steps == 3
    state = torch.load(experiment.partial_checkpoint_path, weights_only=True)
    assert state["ranks"][0]["loader"] == {"position": 3} and state["loop"]["iteration"] == 1
