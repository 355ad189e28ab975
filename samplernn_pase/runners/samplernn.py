"""SampleRNN in the shared loop: truncated-BPTT chunks in, bits per sample out.

The recurrent state of every loader slot is carried from one chunk to the
next (detached); it is part of the runner's state so that a mid-epoch
checkpoint resumes exactly. Test rendering generates the fixed test
utterances from their real conditioning and speakers, batched.
"""

import math
from functools import cached_property

import numpy as np
import torch

from ..audio.mulaw import mulaw_encode
from ..data.samplernn_source import SampleRNNSource
from ..data.speaker_seeds import read_speaker_seeds
from ..experiment.weights import load_pase
from ..errors import UserError
from ..data import cache
from ..data.features import world_resynthesis
from ..metrics.speech import analyse, compare
from ..models.samplernn import CONDITIONING_KEYS, SampleRNN, SampleRNNConfig, sampling_temperatures, unpack_batch
from .base import Runner, pase_seed_files
from .carried import CarriedState
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results


class SampleRNNRunner(Runner):
    loss_name = "nll_bits"

    def __init__(self, context):
        self.hidden = CarriedState()    # every loader slot's GRU states, chunk to chunk
        self._reference_rows = {}
        super().__init__(context)

    def build_model(self):
        return SampleRNN(self.model_config)

    def speaker_tables(self):
        return ({"mixer.speaker_embedding.weight": (0, 1)}
                if hasattr(self.model.mixer, "speaker_embedding") else {})

    @cached_property
    def model_config(self) -> SampleRNNConfig:
        return SampleRNNConfig.from_dict(
            self.config["model"],
            num_speakers=self.store.num_speakers,
            acoustic_dim=self.store.acoustic_dim,
            linguistic_table_sizes=self.store.linguistic_table_sizes,
            linguistic_column_tables=self.store.linguistic_column_tables,
            linguistic_real_dim=self.store.linguistic_real_dim,
            speaker_vector_size=0 if self.speaker_vectors is None else self.speaker_vectors.shape[1])

    @cached_property
    def source(self) -> SampleRNNSource:
        """The training chunks and the test's conditioning."""
        c = self.model_config
        return SampleRNNSource(self.store, c.frame_size, c.conditioning, c.q_levels, lpc_order=c.lpc_order,
                               source_context=c.source_context if c.harmonic_source else None,
                               harmonic_envelope=c.harmonic_envelope, excitation_gain=c.scaled_excitation)

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: check the corpus fits the conditioning; PASE speaker seeds when asked for."""
        conditioning = config["model"]["conditioning"]
        if conditioning != "acoustic" and not data_index.get("linguistic"):
            raise UserError(f"model.conditioning: {conditioning!r} needs HTS full-context labels (.lab beside "
                            "the audio, or in lab/ for CMU ARCTIC) and the corpus has none; use \"acoustic\"")
        return pase_seed_files(config["model"], data_index, normalization, experiments_path, data_path, log)

    @cached_property
    def speaker_vectors(self):
        """PASE speaker seeds written by `init` (None: a learned speaker embedding table)."""
        if self.config["model"]["conds_speaker_type"] != "pase":
            return None
        self.pase   # noqa: B018 -- a missing PASE experiment is refused when the runner is built
        return read_speaker_seeds(self.context.experiment.root)

    @cached_property
    def pase(self):
        """The PASE encoder that made the seeds; it also scores the rendered audio (speaker
        similarity, Fréchet distance). None without PASE seeds, or from a release (which
        holds the seeds, not the encoder)."""
        model_config = self.config["model"]
        if model_config["conds_speaker_type"] != "pase" or self.context.from_release:
            return None
        return load_pase(self.context.experiment.root.parent, model_config["pase_experiment"],
                         model_config["pase_epoch"])

    @cached_property
    def evaluation(self):
        """The independent judges of `test`, with the PASE encoder's Fréchet distance."""
        from ..metrics.evaluation import Evaluation
        return Evaluation(self.index, self.store, self.config["data"], pase=self.pase)

    def speaker_input(self, speaker_index: torch.Tensor) -> torch.Tensor:
        if self.speaker_vectors is None:
            return speaker_index
        return self.speaker_vectors.to(self.device)[speaker_index]

    # --- training -----------------------------------------------------------------

    def loader(self, split, epoch, shuffle):
        return self.stateful_loader(self.source, self.config["training"]["sequence_length"],
                                    split, epoch, shuffle)

    def train_batches(self, epoch, position):
        if position is None:
            self.hidden.clear()   # a new epoch starts every slot from h0
        return self.positioned(self.loader("train", epoch, shuffle=True), position)

    def training_step(self, model, batch, optimize):
        samples, conds, speaker, reset, mask = unpack_batch(batch, self.device)
        loss, hidden = model.loss(samples, conds, self.speaker_input(speaker), self.hidden.value, reset, mask)
        self.hidden.keep(hidden)
        return {self.loss_name: loss.detach()} if optimize("model", loss) else {}

    def on_skipped_step(self):
        self.hidden.clear()

    def state_dict(self):
        return {"hidden": self.hidden.state_dict()}

    def load_state_dict(self, state):
        self.hidden.load(state.get("hidden"), self.device)

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        hidden, total, count = None, 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            samples, conds, speaker, reset, mask = unpack_batch(batch, self.device)
            loss, hidden = self.model.loss(samples, conds, self.speaker_input(speaker), hidden, reset, mask)
            samples_in_mask = int(mask.sum())
            total += float(loss) * samples_in_mask
            count += samples_in_mask
        return total, count

    # --- test rendering -------------------------------------------------------------

    def test_plan(self, utterance_ids, speaker_set):
        utterance_ids = utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids)
        self.refuse_untrained_speakers(utterance_ids)
        return list(utterance_ids)

    def render(self, epoch, items, speaker_set):
        batch_size = self.config["test"]["batch_size"]
        rendered = []
        for start in range(0, len(items), batch_size):
            rendered += self.render_batch(items[start:start + batch_size], epoch)
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        max_frames = self.max_frames()
        return write_results(out_dir, epoch, self.index["sample_rate"], rendered, writer,
                             test_tag(speaker_set), self.evaluation, speaker_set,
                             None if max_frames is None else max_frames * self.model_config.frame_size)

    def max_frames(self) -> int | None:
        """Frames rendered per utterance at most (test.max_seconds), None: whole utterances."""
        return max_test_frames(self.config["test"], self.index["sample_rate"], self.model_config.frame_size)

    def reference_rows(self, utterance_id: str, real: np.ndarray) -> dict:
        """The real recording's analysis and the WORLD resynthesis from the utterance's
        (un-normalized) acoustic features with its metrics; the same every epoch, so kept."""
        key = (utterance_id, len(real))
        if key not in self._reference_rows:
            params = self.evaluation.params
            world = self.world_rendering(utterance_id, len(real))
            real_analysis = analyse(real, params)
            self._reference_rows[key] = {
                "analysis": real_analysis, "world": world,
                "metrics": {"real": compare(real_analysis, real_analysis),
                            "world": compare(analyse(world, params), real_analysis)}}
        return self._reference_rows[key]

    def world_rendering(self, utterance_id: str, num_samples: int) -> np.ndarray:
        """The WORLD vocoder's audio from the utterance's (un-normalized) acoustic features."""
        entry = self.store.utterances[utterance_id]
        acoustic = cache.load_entry(self.context.data_path, entry["features"])["acoustic"]
        frames = -(-num_samples // self.index["hop_length"])
        return world_resynthesis(acoustic[:frames], self.evaluation.params)[:num_samples]

    def speaker_similarity(self, audio, utterance) -> float:
        """Cosine between the PASE embedding of the rendered audio and the speaker's seed."""
        from ..metrics.speaker import cosine_similarity
        from ..models.pase import embed
        generated = embed(self.pase, [audio], self.index["sample_rate"])
        return float(cosine_similarity(generated, self.speaker_vectors[utterance.speaker_index].numpy()))

    def batch_conditioning(self, ids, frames, aligned: bool) -> dict:
        """The conditioning of a batch of utterances cut to `frames` frames each, (B, longest, .),
        each utterance's last frame repeated to the longest."""
        longest = max(frames)
        arrays = [self.source.conditioning(i, aligned) for i in ids]
        conds = {}
        for key in CONDITIONING_KEYS:
            if key in arrays[0]:
                conds[key] = torch.from_numpy(np.stack([
                    np.concatenate([a[key][:n], np.repeat(a[key][n - 1:n], longest - n, axis=0)])
                    for a, n in zip(arrays, frames)])).to(self.device)
        return conds

    def sampling_temperature(self, conds):
        """`test.temperature`, or with acoustic conditioning and `test.unvoiced_temperature` the
        per-frame temperatures by the features' voiced flag (`sampling_temperatures`)."""
        test, fields = self.config["test"], self.index.get("acoustic_fields", [])
        unvoiced = test.get("unvoiced_temperature")
        if unvoiced is None or "acoustic" not in conds or conds["acoustic"].shape[-1] != len(fields):
            return test["temperature"]
        voiced = conds["acoustic"][..., fields.index("vuv")] > 0.5
        return sampling_temperatures(voiced, test["temperature"], unvoiced)

    def reference_log_probs(self, ids, references, frames, conds, speaker) -> torch.Tensor:
        """The model's log-probabilities (B, longest * frame_size) of the real recordings, teacher
        forced, the harmonic source aligned to them as in training."""
        fs, longest = self.model_config.frame_size, max(frames)
        reference_codes = torch.from_numpy(np.stack([
            np.pad(mulaw_encode(r, self.model_config.q_levels), (0, (longest - n) * fs))
            for r, n in zip(references, frames)])).to(self.device)
        reference_conds = self.batch_conditioning(ids, frames, aligned=True) if "source" in conds else conds
        return self.model.log_prob(reference_codes, reference_conds, speaker,
                                   chunk_frames=self.config["training"]["sequence_length"] * 8)

    def render_batch(self, ids, epoch):
        fs = self.model_config.frame_size
        max_frames = self.max_frames()
        utterances = [self.store.load(i) for i in ids]
        frames = [u.acoustic.shape[0] if max_frames is None else min(u.acoustic.shape[0], max_frames)
                  for u in utterances]
        # the harmonic source's phase free, as for new input
        conds = self.batch_conditioning(ids, frames, aligned=False)
        speaker = self.speaker_input(torch.tensor([u.speaker_index for u in utterances],
                                                  device=self.device))
        # Sampling must not consume the training RNG (exact resume), so it has its own.
        generator = torch.Generator(device=self.device).manual_seed(self.rendering_seed + epoch)
        # the vocoder's output: the unquantized signal (without the codes' 8-bit rounding noise)
        _, signal = self.model.generate(conds, speaker, self.sampling_temperature(conds), generator=generator,
                                        return_signal=True)
        references = [None if u.audio is None else u.audio[:n * fs] for u, n in zip(utterances, frames)]
        log_probs = None
        if all(r is not None for r in references):
            log_probs = self.reference_log_probs(ids, references, frames, conds, speaker)
        rendered = []
        sample_rate = self.index["sample_rate"]
        params = self.evaluation.params
        for row, (utterance_id, n) in enumerate(zip(ids, frames)):
            audio = signal[row, :n * fs].cpu().numpy()
            seconds = n * fs / sample_rate
            metrics = {"seconds": seconds}
            if log_probs is not None:
                metrics["nll_bits"] = float(-log_probs[row, :n * fs].mean() / math.log(2))
            real = references[row]
            if real is None:     # features without their recording (synthesize --features)
                world = self.world_rendering(utterance_id, len(audio))
                rendered.append(RenderedItem(utterance_id, audio, world, metrics, utterance=utterance_id,
                                             words_of=utterance_id, references={"world": world},
                                             reference_metrics={"world": {"seconds": seconds}}))
                continue
            reference = self.reference_rows(utterance_id, real)
            metrics.update(compare(analyse(audio, params), reference["analysis"]))
            if self.speaker_vectors is not None:
                metrics["speaker_similarity"] = self.speaker_similarity(audio, utterances[row])
            rendered.append(RenderedItem(
                utterance_id, audio, real, metrics, utterance=utterance_id, words_of=utterance_id,
                references={"real": real, "world": reference["world"]},
                reference_metrics={row_name: {"seconds": seconds, **row_metrics}
                                   for row_name, row_metrics in reference["metrics"].items()}))
        return rendered
