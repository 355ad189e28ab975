"""GPT prior over the codes of a VQ-VAE experiment, in the shared loop.

`init` encodes every utterance of the corpus with the VQ-VAE named by
`model.vqvae_experiment` (its log-mel analysis and [-1, 1] scaling, its
encoder, in chunks of its training crop length) and stores the code grids in
`codes.npz` (data/code_windows.py), with the VQ-VAE epoch it used. Training:
windows of the time-major code sequences of the modeling speakers' training
utterances, the speaker (gender, corpus) tokens prepended, NLL in bits per
code. Test: continuations of real test utterances from the first
`prompt_fraction` of their time columns (the seed's "half" mode) and
unconditional samples for every modeling speaker, decoded by the same VQ-VAE
checkpoint and rendered to audio by the HiFi-GAN that VQ-VAE names in its
`model.vocoder_experiment` (rows `griffin_lim` and `vocoder` of the real mel
beside `real`), else by Griffin-Lim, with mel PNGs; metrics: the
test split's NLL in bits per code.
"""

import math
from functools import cached_property

import numpy as np
import torch

from ..data.code_windows import CODES_FILE, CodeGrids, CodeWindowLoader
from ..data.vqvae_codes import VQVAECodec, encode_corpus
from ..errors import UserError
from ..experiment.folder import Experiment
from ..experiment.weights import load_vqvae_codec
from ..models.gpt import GPT, GPTConfig, bits_per_code, generate, grid_to_sequence, sequence_to_grid
from .base import Runner
from ..training.rng import stream_seed
from .vocoding import named_vocoder
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results

UNKNOWN_GENDER = "unknown"


class GPTPriorRunner(Runner):
    loss_name = "nll_bits"   # bits per code

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: the code grid of every utterance, by the named VQ-VAE, into codes.npz."""
        model_config = config["model"]
        codec = load_vqvae_codec(experiments_path, model_config["vqvae_experiment"], model_config["vqvae_epoch"])
        return {CODES_FILE: encode_corpus(codec, data_index, normalization, data_path, log)}

    def build_model(self):
        self.codes = CodeGrids.of_experiment(self.context.experiment.root)
        self.speaker_labels = self.label_table()
        model_config = self.config["model"]
        self.window_columns = model_config["block_size"] // self.codes.column_height
        self.model_config = GPTConfig.from_dict(
            model_config, block_size=self.window_columns * self.codes.column_height,
            codebook_size=self.codes.codebook_size, column_height=self.codes.column_height,
            num_speakers=len(self.index["speakers"]), num_genders=len(self.genders),
            num_corpora=len(self.corpora))
        return GPT(self.model_config)

    def speaker_tables(self):
        # The condition table: the start token's row, then one row per speaker (then genders, corpora).
        return {"condition_embedding.weight": (1, 1)} if self.model_config.num_speakers else {}

    # --- condition labels -------------------------------------------------------------

    def label_table(self) -> dict[str, tuple[int, int, int]]:
        """(speaker, gender, corpus) index of every speaker id; which labels the model uses."""
        speakers = self.index["speakers"]
        model_config = self.config["model"]
        genders = sorted({s.get("gender") or UNKNOWN_GENDER for s in speakers})
        has_gender = any(s.get("gender") for s in speakers)
        self.genders = genders if model_config["condition_on_gender"] and has_gender else []
        corpora = sorted({s["corpus"] for s in speakers})
        self.corpora = corpora if model_config["condition_on_corpus"] and len(corpora) > 1 else []
        return {s["id"]: (s["index"],
                          self.genders.index(s.get("gender") or UNKNOWN_GENDER) if self.genders else 0,
                          self.corpora.index(s["corpus"]) if self.corpora else 0)
                for s in speakers}

    def conditions(self, speaker_ids: list[str]) -> torch.Tensor:
        """(B, prefix_length) condition tokens of speakers by id."""
        labels = torch.tensor([self.speaker_labels[s] for s in speaker_ids], device=self.device)
        return self.model.condition_tokens(labels[:, 0], labels[:, 1] if self.genders else None,
                                           labels[:, 2] if self.corpora else None)

    @cached_property
    def speaker_of(self) -> dict[str, str]:
        return {u["id"]: u["speaker"] for u in self.index["utterances"]}

    # --- training -----------------------------------------------------------------------

    def coded_ids(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i in self.codes]

    def loader(self, ids: list[str], epoch: int, shuffle: bool, shard: bool = True) -> CodeWindowLoader:
        """Windows of these utterances; `shard`: this rank's share only (training, validation)."""
        rank, world_size = (self.context.rank, self.context.world_size) if shard else (0, 1)
        return CodeWindowLoader(self.codes, self.coded_ids(ids), self.window_columns,
                                self.config["training"]["batch_size"], self.config["seed"], epoch,
                                rank, world_size, shuffle=shuffle)

    def train_batches(self, epoch, position):
        loader = self.loader(self.utterance_ids("train"), epoch, shuffle=True)
        if len(loader) == 0:
            raise UserError("data: no training utterance with codes (codes.npz)")
        if position is not None:
            loader.load_state_dict(position)
        return loader

    def batch_bits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(bits per code (B, L), mask (B, L)) of one batch of windows."""
        codes, mask = batch["codes"].to(self.device), batch["mask"].to(self.device)
        speakers = [self.speaker_of[self.codes.ids[k]] for k in batch["utterances"].tolist()]
        return bits_per_code(model(codes, self.conditions(speakers)), codes), mask

    def training_step(self, model, batch, optimize):
        bits, mask = self.batch_bits(model, batch)
        loss = (bits * mask).sum() / mask.sum().clamp(min=1)
        return {self.loss_name: loss.detach()} if optimize("model", loss) else {}

    @torch.no_grad()
    def nll_bits(self, ids: list[str], shard: bool = False) -> tuple[float, int]:
        """(sum of bits, number of codes) of utterances, windows tiling each sequence."""
        self.model.eval()
        loader, total, count = self.loader(ids, 0, shuffle=False, shard=shard), 0.0, 0
        for batch in loader:
            bits, mask = self.batch_bits(self.model, batch)
            total += float((bits * mask).sum())
            count += int(mask.sum())
        return total, count

    def validation_loss(self):
        return self.nll_bits(self.utterance_ids("validation"), shard=True)

    # --- test rendering -------------------------------------------------------------------

    @cached_property
    def codec(self) -> VQVAECodec:
        """The VQ-VAE checkpoint that made codes.npz (loaded for test only)."""
        return load_vqvae_codec(self.context.experiment.root.parent, self.codes.vqvae_experiment,
                                self.codes.vqvae_epoch, self.device)

    @cached_property
    def vocoder(self):
        """The HiFi-GAN its VQ-VAE names in model.vocoder_experiment (runners/vocoding.py), or None:
        Griffin-Lim renders the decoded mels."""
        experiments = self.context.experiment.root.parent
        vqvae = Experiment(experiments, self.codes.vqvae_experiment)
        model = vqvae.config()["model"] if vqvae.exists() else {}
        return named_vocoder(model, experiments, self.device, self.log, self.context.from_release)

    def to_audio(self, scaled) -> np.ndarray:
        """Audio of a decoded (scaled) mel: by the VQ-VAE's vocoder, else Griffin-Lim."""
        c = self.codec
        if self.vocoder is None:
            return c.to_audio(scaled)
        return self.vocoder(c.mels.to_log_mel(torch.as_tensor(scaled, dtype=torch.float32)))

    def max_columns(self) -> int | None:
        """Time columns in test.max_seconds (at least 2), or None for no limit."""
        c = self.codec
        frames = max_test_frames(self.config["test"], c.settings.sample_rate, c.settings.hop_length)
        return None if frames is None else max(2, frames // c.config.downsample_time)

    def sample(self, speaker_ids: list[str], num_codes: int, prompt: torch.Tensor | None,
               generator: torch.Generator) -> torch.Tensor:
        """Codes (B, prompt + num_codes) with the test sampling settings of the config."""
        model_config = self.config["model"]
        return generate(self.model, self.conditions(speaker_ids), num_codes,
                        None if prompt is None else prompt.to(self.device),
                        self.config["test"]["temperature"], model_config["top_k"],
                        model_config["top_p"], generator).cpu()

    def continuation(self, utterance_id: str, max_columns: int | None, generator) -> RenderedItem:
        """The first prompt_fraction of a real test utterance's columns, the rest sampled."""
        c, height = self.codec, self.codes.column_height
        real = torch.from_numpy(self.codes.grid(utterance_id)[:, :max_columns]).long()
        columns = real.shape[1]
        prompt_columns = min(columns - 1, max(1, round(self.config["model"]["prompt_fraction"] * columns)))
        prompt = grid_to_sequence(real)[None, :prompt_columns * height]
        codes = self.sample([self.speaker_of[utterance_id]], (columns - prompt_columns) * height,
                            prompt, generator)
        generated = c.decode(sequence_to_grid(codes[0], height))
        reconstruction = c.decode(real)
        frames = generated.shape[1]
        audio = self.store.load(utterance_id).audio
        original = torch.from_numpy(c.scaled_mel(audio)[:, :frames])
        bits, count = self.nll_bits([utterance_id])
        prompt_frames = prompt_columns * c.config.downsample_time
        hop = c.settings.hop_length
        metrics = {"nll_bits_per_code": bits / count, "prompt_columns": prompt_columns,
                   "generated_columns": columns - prompt_columns,
                   "seconds": frames * hop / c.settings.sample_rate,
                   "prompt_seconds": prompt_frames * hop / c.settings.sample_rate}
        panels = [(f"continuation after the first {prompt_columns} of {columns} code columns "
                   f"(frame {prompt_frames})", generated),
                  ("VQ-VAE decoding of the real codes", reconstruction), ("real (scaled log-mel)", original)]
        references = {"real": np.array(audio[:frames * hop])}
        if self.vocoder is not None:     # the real mel by Griffin-Lim and by the vocoder (its ceiling)
            references.update({"griffin_lim": c.to_audio(original), "vocoder": self.to_audio(original)})
        return RenderedItem(f"{utterance_id}.continuation", self.to_audio(generated), np.array(audio[:frames * hop]),
                            metrics, images=self.mel_images(panels), utterance=utterance_id,
                            references=references)

    def unconditional(self, speaker_id: str, columns: int, generator) -> list[RenderedItem]:
        """samples_per_speaker samples of `columns` time columns for one speaker, from nothing."""
        count = self.config["model"]["samples_per_speaker"]
        if count == 0:
            return []
        c, height = self.codec, self.codes.column_height
        codes = self.sample([speaker_id] * count, columns * height, None, generator)
        rendered = []
        for k in range(count):
            mel = c.decode(sequence_to_grid(codes[k], height))
            seconds = mel.shape[1] * c.settings.hop_length / c.settings.sample_rate
            rendered.append(RenderedItem(f"sample-{speaker_id}-{k}", self.to_audio(mel), metrics={"seconds": seconds},
                                         images=self.mel_images([(f"sample for speaker {speaker_id}", mel)])))
        return rendered

    @staticmethod
    def mel_images(panels):
        """Image panels as plain data (ranks send them to rank 0)."""
        return [(title, np.asarray(mel)) for title, mel in panels]

    def test_plan(self, utterance_ids, speaker_set):
        """Continuations of test utterances, per-speaker samples, and the test split's NLL."""
        chosen = utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids)
        chosen = [i for i in self.coded_ids(chosen) if self.codes.num_columns(i) >= 2]
        if not chosen:
            raise UserError(f"test: no test utterance of {speaker_set} speakers with two code columns")
        if utterance_ids is None:    # every speaker of the set; test_sample: the sample's speaker
            speakers = [s["id"] for s in sorted(self.index["speakers"], key=lambda s: s["index"])
                        if s["set"] == speaker_set]
        else:
            speakers = sorted({self.speaker_of[i] for i in chosen})
        test_ids = self.store.ids(split="test", speaker_set=speaker_set) if utterance_ids is None \
            else chosen
        return ([("nll", list(test_ids), 0)]
                + [("continuation", i, 1 + k) for k, i in enumerate(chosen)]
                + [("sample", speaker, 1 + len(chosen) + k) for k, speaker in enumerate(speakers)])

    def render(self, epoch, items, speaker_set):
        max_columns = self.max_columns()
        rendered = []
        for kind, what, number in items:
            # Each item has its own noise: what it renders does not depend on the number of ranks.
            generator = torch.Generator(device=self.device).manual_seed(
                stream_seed(self.rendering_seed, epoch, number))
            if kind == "nll":
                rendered.append({"nll": self.nll_bits(what)})
            elif kind == "continuation":
                rendered.append([self.continuation(what, max_columns, generator)])
            else:
                rendered.append(self.unconditional(what, max_columns or self.window_columns, generator))
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        bits, count = rendered[0]["nll"]
        summary = {"test_nll_bits_per_code": bits / max(count, 1), "test_codes": count,
                   "uniform_bits_per_code": math.log2(self.codes.codebook_size)}
        items = [item for group in rendered[1:] for item in group]
        return write_results(out_dir, epoch, self.index["sample_rate"], items, writer,
                             test_tag(speaker_set), self.evaluation, speaker_set, extra=summary,
                             frechet_items={item.id for item in items if item.id.startswith("sample-")})
