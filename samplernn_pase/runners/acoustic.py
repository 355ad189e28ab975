"""The acoustic family in the shared loop: labels -> durations -> WORLD features -> a vocoder.

Training: batches of whole utterances of the modeling speakers (padded, with
lengths), loss = duration loss + acoustic loss (models/acoustic.py), the
acoustic model reading frames made from the recording's durations.

Test, for each fixed test utterance:
- the model row: durations predicted from the phones, features predicted from
  the frames they make, rendered by the SampleRNN experiment `model.vocoder_experiment`
  (by WORLD when it is null); `world_predicted`: the same features through WORLD
  (both with the speaker's echo put back under `model.speaker_echo`, audio/echo.py);
  the usual reference rows, the recording (`real`) and WORLD's resynthesis of its
  features (`world`);
- the features against the recording's, frame by frame with the recording's
  (oracle) durations: MCD, F0 RMSE, V/UV error through metrics/speech.py, and the
  durations (RMSE in frames; Pearson correlation over all phones of the test), each
  beside its trivial baseline from the training split (data/phone_sequences.py
  `phone_symbol_means`): the speaker's mean features per phone symbol, the mean
  duration per phone symbol.

`synthesize --text` renders eSpeak NG's labels of new text the same way: the
duration model gives the timing, eSpeak's own durations and F0 are not used.
"""

import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..audio.echo import add_echo, estimate_echo
from ..data.normalization import denormalize
from ..data.phone_sequences import (PHONE_COLUMN, UtteranceBatches, collate, expand_phones, frame_linguistic,
                                    phone_symbol_means, utterance_item)
from ..data.features import world_resynthesis
from ..data.speaker_seeds import read_speaker_seeds
from ..data.synthesis_input import utterance_record
from ..errors import UserError
from ..experiment.folder import Experiment, atomic_save_npz
from ..experiment.release import VOCODER_FOLDER
from ..experiment.weights import load_weights, named_experiment
from ..metrics.speech import compare, feature_analysis
from ..models.acoustic import (AcousticConfig, AcousticModel, frames_of, losses, scale_variance, to_features,
                               utterance_variances)
from .base import RunContext, Runner, pase_seed_files
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results

#: feature_params of data.json that must agree between this experiment and its vocoder.
ANALYSIS_KEYS = ("version", "sample_rate", "hop_length", "f0_method", "f0_floor", "f0_ceil", "mcep_order",
                 "mcep_alpha")
FIELD = "model.vocoder_experiment"
ECHO_RECORDINGS = 30     # training recordings per speaker that model.speaker_echo looks for its echo in


def check_vocoder(model_section: dict, data_index: dict, experiments_path: Path) -> None:
    """One line when the named vocoder cannot render this experiment's features: missing,
    not SampleRNN on acoustic conditioning, another feature analysis, or missing speakers."""
    name = model_section.get("vocoder_experiment")
    if name is None:
        return
    candidate = Experiment(experiments_path, name)
    conditioning = candidate.config()["model"].get("conditioning", "acoustic") if candidate.exists() else None
    if conditioning not in (None, "acoustic"):     # said before a missing checkpoint
        raise UserError(f"{FIELD}: {name} is conditioned on {conditioning!r}, not \"acoustic\" (the WORLD "
                        "features this model predicts)")
    try:
        experiment, config, _ = named_experiment(experiments_path, name, model_section.get("vocoder_epoch"),
                                                 "samplernn", FIELD)
    except UserError as error:
        raise UserError(error if str(error).startswith(FIELD) else f"{FIELD}: {error}") from None
    theirs, ours = experiment.data_index()["feature_params"], data_index["feature_params"]
    differ = [f"{key} {theirs.get(key)} vs {ours.get(key)}" for key in ANALYSIS_KEYS
              if theirs.get(key) != ours.get(key)]
    if differ:
        raise UserError(f"{FIELD}: {name} analyses its features differently ({'; '.join(differ)})")
    vocoder_speakers = {s["id"]: s for s in experiment.data_index()["speakers"]}
    table = config["model"]["conds_speaker_type"] != "pase"
    missing = [s["id"] for s in data_index["speakers"] if s["set"] == "modeling" and (
        s["id"] not in vocoder_speakers or (table and vocoder_speakers[s["id"]]["set"] != "modeling"))]
    if missing:
        raise UserError(f"{FIELD}: {name} was not trained on speaker{'s' * (len(missing) > 1)} "
                        f"{', '.join(missing)}")


class AcousticRunner(Runner):

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: the corpus must have labels and the vocoder must fit; PASE seeds when asked for."""
        if not data_index.get("linguistic"):
            raise UserError("model.type \"acoustic\" maps HTS full-context labels to features and the corpus "
                            "has none (.lab beside the audio, or lab/ for CMU ARCTIC)")
        check_vocoder(config["model"], data_index, experiments_path)
        return pase_seed_files(config["model"], data_index, normalization, experiments_path, data_path, log)

    def build_model(self):
        if not self.index.get("linguistic"):
            raise UserError("data.json: no linguistic labels; the acoustic model needs them")
        pase = self.config["model"]["conds_speaker_type"] == "pase"
        self.speaker_vectors = read_speaker_seeds(self.context.experiment.root) if pase else None
        self.model_config = AcousticConfig.from_dict(
            self.config["model"], num_speakers=self.store.num_speakers, acoustic_dim=self.store.acoustic_dim,
            linguistic_table_sizes=self.store.linguistic_table_sizes,
            linguistic_column_tables=self.store.linguistic_column_tables,
            frame_real_dim=self.store.linguistic_real_dim,
            speaker_vector_size=0 if self.speaker_vectors is None else self.speaker_vectors.shape[1],
            phone_column=PHONE_COLUMN)
        model = AcousticModel(self.model_config)
        if not pase and not self.context.from_release:
            # Start the per-symbol output table at the trivial baseline (the training split's
            # per-speaker means per phone symbol): the network then learns only what context
            # adds. From zeros it had not reached the baseline's MCD after 360 steps (7.34 vs
            # 7.08 dB on the demo's test); from the baseline it beats it from the first epochs.
            # A checkpoint, when there is one, replaces the table.
            table = torch.from_numpy(self.baselines["acoustic"]).reshape(-1, self.store.acoustic_dim)
            with torch.no_grad():
                model.frame_decoder.symbol_table.weight.copy_(table)
        if self.model_config.speaker_statistics and not self.context.from_release:
            statistics = self.speaker_statistics()[[s["index"] for s in self.index["speakers"]
                                                    if s["set"] == "modeling"]]
            scale = statistics.std(dim=0, correction=0)
            with torch.no_grad():
                model.statistics_center.copy_(statistics.mean(dim=0))
                model.statistics_scale.copy_(torch.where(scale > 1e-6, scale, torch.ones_like(scale)))
        if self.model_config.global_variance and not self.context.from_release:
            training = ((utterance.speaker_index, utterance.acoustic)
                        for utterance in map(self.store.load, self.utterance_ids("train")))
            variance = utterance_variances(training, self.store.num_speakers, self.store.acoustic_dim)
            with torch.no_grad():
                model.utterance_variance.copy_(torch.from_numpy(variance))
        if self.model_config.speaker_echo and not self.context.from_release:
            with torch.no_grad():
                model.speaker_echo.copy_(torch.from_numpy(self.speaker_echoes()))
        return model

    def speaker_echoes(self) -> np.ndarray:
        """(speakers, 2): each speaker's echo (delay in samples, gain; audio/echo.py) in its first
        ECHO_RECORDINGS training recordings; 0, 0 for none found or no recordings."""
        recordings: dict[int, list] = {}
        for utterance_id in self.utterance_ids("train"):
            index = self.store.speaker_index(utterance_id)
            if len(recordings.setdefault(index, [])) < ECHO_RECORDINGS:
                recordings[index].append(self.store.load(utterance_id).audio)
        echoes = np.zeros((self.store.num_speakers, 2), np.float32)
        for index, audio in recordings.items():
            echoes[index] = estimate_echo([a for a in audio if a is not None], self.store.sample_rate)
        for speaker in self.index["speakers"]:
            delay, gain = echoes[speaker["index"]]
            if gain > 0:
                self.log.info("speaker %s: echo %.0f ms behind, gain %.3f (model.speaker_echo)", speaker["id"],
                              1000 * delay / self.store.sample_rate, gain)
        return echoes

    def with_echo(self, audio: np.ndarray, speaker: int) -> np.ndarray:
        """The rendering of predicted features with the speaker's echo (model.speaker_echo)."""
        if not self.model_config.speaker_echo:
            return audio
        delay, gain = self.model.speaker_echo[speaker].tolist()
        return add_echo(audio, int(round(delay)), gain)

    def speaker_tables(self):
        # The per-symbol table holds each speaker's block of one row per phone symbol.
        tables = {"frame_decoder.symbol_table.weight": (0, self.model.frame_decoder.phones)}
        if self.model_config.global_variance:
            tables["utterance_variance"] = (0, 1)
        if self.model_config.speaker_echo:
            tables["speaker_echo"] = (0, 1)
        if self.model_config.speaker_output:
            tables["frame_decoder.speaker_output"] = (0, 1)
        if isinstance(self.model.speaker, torch.nn.Embedding):
            tables["speaker.weight"] = (0, 1)
        return tables

    def data_speaker_tables(self):
        # build_model fills the per-symbol table with each speaker's mean features per phone
        # symbol (the trivial baseline), global variance holds each speaker's variances and the
        # echo each speaker's echo: a new speaker's own, from this experiment's data, are a better
        # start than other voices' mean.
        return frozenset(key for key in ("frame_decoder.symbol_table.weight", "utterance_variance", "speaker_echo")
                         if key in self.speaker_tables())

    def utterance_ids(self, split):
        return [i for i in super().utterance_ids(split) if self.store.utterances[i].get("has_labels", True)]

    def speaker_statistics(self) -> torch.Tensor:
        """(speakers, 2 x features): each speaker's normalization statistics, the mean then the std
        of each feature, as the store holds them now (a voice put there, as
        bench/unseen_speakers.py puts an unseen speaker's seed, is the one read)."""
        return torch.from_numpy(np.concatenate([self.store.acoustic_mean, self.store.acoustic_std], axis=1)).float()

    def on_device(self, batch: dict) -> dict:
        """The batch's tensors on the device, its speakers as the model takes them: speaker rows, or
        PASE seeds (followed by the speaker's statistics with model.speaker_statistics)."""
        moved = {key: value.to(self.device) if torch.is_tensor(value) else value for key, value in batch.items()}
        speaker = moved["speaker"]
        if self.speaker_vectors is not None:
            vectors = self.speaker_vectors
            if self.model_config.speaker_statistics:
                vectors = torch.cat([vectors, self.speaker_statistics()], dim=1)
            moved["speaker"] = vectors.to(self.device)[speaker]
        return moved

    # --- training -----------------------------------------------------------------

    def loader(self, split, epoch, shuffle):
        return UtteranceBatches(self.store, self.utterance_ids(split), self.config["training"]["batch_size"],
                                self.config["seed"], epoch, self.context.rank, self.context.world_size, shuffle)

    def train_batches(self, epoch, position):
        return self.positioned(self.loader("train", epoch, shuffle=True), position,
                               empty="data: no training utterance with labels of a modeling speaker")

    def batch_losses(self, model, batch) -> dict[str, torch.Tensor]:
        """{"loss", "duration_loss", "acoustic_loss", "vuv_loss"} of one batch."""
        batch = self.on_device(batch)
        log_durations, features = model(batch)
        return losses(log_durations, features, batch, self.loss_weights, self.model_config.delta_loss)

    @cached_property
    def loss_weights(self) -> torch.Tensor | None:
        """model.feature_loss "cepstral_distance": each mel-cepstrum column from mcep1 weighted by its
        variance (mean over the modeling speakers), the weights' mean over those columns 1, the
        other columns 1. Normalized to unit variance, mcep39 (std 0.07 on the demo) weighs as
        much as mcep1 (std 1.1), and the high cepstra, noise the network cannot predict, take
        most of the loss; weighted, the loss is the squared cepstral distance that MCD measures
        (up to a constant), which is dominated by the formant-bearing low cepstra."""
        if self.model_config.feature_loss != "cepstral_distance":
            return None
        fields = self.index["acoustic_fields"]
        modeling = [s["index"] for s in self.index["speakers"] if s["set"] == "modeling"]
        variance = (self.store.acoustic_std[modeling].astype(np.float64) ** 2).mean(axis=0)
        cepstra = [k for k, name in enumerate(fields) if name.startswith("mcep") and name != "mcep0"]
        weights = np.ones(len(fields))
        weights[cepstra] = variance[cepstra] / variance[cepstra].mean()
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def training_step(self, model, batch, optimize):
        result = self.batch_losses(model, batch)
        if not optimize("model", result["loss"]):
            return {}
        return {name: value.detach() for name, value in result.items()}

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            total += float(self.batch_losses(self.model, batch)["loss"]) * len(batch["ids"])
            count += len(batch["ids"])
        return total, count

    # --- prediction -----------------------------------------------------------------

    @torch.no_grad()
    def predict(self, utterance_id: str) -> dict:
        """The utterance's features (un-normalized, voicing decided) predicted with the recording's
        durations (`oracle`) and with predicted ones (`predicted`), the durations in frames
        (`durations` the recording's or the labels', `predicted_durations`) and the real features."""
        self.model.eval()
        item = utterance_item(self.store, utterance_id)
        speaker = item["speaker"]
        batch = self.on_device(collate([item]))
        log_durations, oracle = self.model(batch)
        durations = frames_of(log_durations[0]).cpu().numpy()
        if durations.sum() == 0:
            durations[:] = 1        # a model that says nothing still says every phone once
        utterance = self.store.load(utterance_id)
        categorical, real = frame_linguistic(utterance.phone_categorical, utterance.phone_real, durations,
                                             self.store.hop_length / self.store.sample_rate,
                                             self.store.linguistic_mean[speaker], self.store.linguistic_std[speaker])
        frames = {"frame_categorical": torch.from_numpy(categorical)[None],
                  "frame_real": torch.from_numpy(real)[None],
                  "frame_phone": torch.from_numpy(expand_phones(durations)[0])[None],
                  "frame_lengths": torch.tensor([len(categorical)])}
        predicted = self.model.features({**batch, **{k: v.to(self.device) for k, v in frames.items()}})
        mean, std = self.store.acoustic_mean[speaker], self.store.acoustic_std[speaker]

        def raw(features):
            features = to_features(features[0])
            if self.model_config.global_variance:
                features = scale_variance(features, self.model.utterance_variance[speaker])
            return denormalize(features.cpu().numpy(), mean, std)
        return {"oracle": raw(oracle), "predicted": raw(predicted), "durations": item["durations"],
                "predicted_durations": durations, "real": self.store.raw_acoustic(utterance),
                "speaker": speaker, "symbols": utterance.phone_categorical[:, PHONE_COLUMN],
                "phone_index": utterance.phone_index}

    @cached_property
    def baselines(self) -> dict[str, np.ndarray]:
        """The trivial baselines of the training split (data/phone_sequences.phone_symbol_means)."""
        phonemes = self.store.linguistic_table_sizes[self.store.linguistic_column_tables[PHONE_COLUMN]]
        return phone_symbol_means(self.store, self.utterance_ids("train"), phonemes)

    def feature_metrics(self, prediction: dict) -> dict:
        """The predicted features (oracle durations) and the per-symbol baseline against the real
        ones, and both models' durations against the real ones (per utterance)."""
        params = self.evaluation.params
        speaker = prediction["speaker"]
        real = feature_analysis(prediction["real"], params)
        table = self.baselines["acoustic"][speaker][prediction["symbols"][prediction["phone_index"]]]
        baseline = denormalize(table, self.store.acoustic_mean[speaker], self.store.acoustic_std[speaker])
        baseline[:, 1] = baseline[:, 1] > 0.5
        metrics = {f"oracle_{key}": value
                   for key, value in compare(feature_analysis(prediction["oracle"], params), real).items()}
        metrics.update({f"baseline_{key}": value
                        for key, value in compare(feature_analysis(baseline, params), real).items()})
        truth = prediction["durations"].astype(np.float64)
        metrics["duration_rmse_frames"] = rmse(prediction["predicted_durations"], truth)
        metrics["baseline_duration_rmse_frames"] = rmse(self.baselines["duration"][prediction["symbols"]], truth)
        return metrics

    # --- the vocoder -------------------------------------------------------------------

    def vocoder_location(self) -> tuple[Path, str, int | str | None] | None:
        """(experiments path, name, epoch) of the vocoder; a release holds it unpacked beside itself."""
        model = self.config["model"]
        if model.get("vocoder_experiment") is None:
            return None
        if self.context.from_release:
            return self.context.experiment.root.parent / VOCODER_FOLDER, "release", None
        return self.context.experiment.root.parent, model["vocoder_experiment"], model.get("vocoder_epoch")

    @cached_property
    def vocoder(self) -> Runner | None:
        """The SampleRNN runner of the vocoder experiment with its checkpoint's weights, rendering
        whole utterances; built on first use (inside the test's own RNG stream)."""
        location = self.vocoder_location()
        if location is None:
            return None
        experiment, config, epoch = named_experiment(*location, "samplernn", FIELD)
        config = {**config, "test": {**config["test"], "max_seconds": None}}
        # The vocoder only renders features: no PASE encoder (from_release), no training.
        context = RunContext(experiment=experiment, config=config, data_path=self.context.data_path,
                             device=self.device, log=self.log, from_release=True)
        from . import runner_class      # the registry: no runner module imports another
        runner = runner_class("samplernn")(context)
        load_weights(runner.model, experiment, epoch, self.device).eval()
        runner.vocoder_epoch = epoch
        return runner

    def vocode(self, ids: list[str], features: list[np.ndarray], speakers: list[str]) -> list[np.ndarray]:
        """The vocoder's audio of un-normalized features, batched as its test is, drawn with this
        rendering's seed (`render_seed`; None: the vocoder experiment's own seed)."""
        vocoder = self.vocoder
        vocoder.render_seed = self.render_seed
        audio = []
        with tempfile.TemporaryDirectory(prefix="samplernn_pase-acoustic-") as folder:
            names = []
            for k, (utterance_id, acoustic, speaker) in enumerate(zip(ids, features, speakers)):
                name = f"{utterance_id}@acoustic-{len(vocoder.store.utterances)}"
                path = Path(folder) / f"{k}.npz"
                atomic_save_npz(path, {"acoustic": acoustic})
                vocoder.store.add(utterance_record(name, speaker, path, {"acoustic": acoustic}, vocoder.index))
                names.append(name)
            batch_size = self.config["test"]["batch_size"]
            for start in range(0, len(names), batch_size):
                audio += [item.audio for item in
                          vocoder.render_batch(names[start:start + batch_size], vocoder.vocoder_epoch)]
        return audio

    # --- test rendering -------------------------------------------------------------

    def test_plan(self, utterance_ids, speaker_set):
        utterance_ids = list(utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids))
        self.refuse_untrained_speakers(utterance_ids)
        return utterance_ids

    def render(self, epoch, items, speaker_set):
        if not items:
            return []
        hop, params = self.store.hop_length, self.evaluation.params
        max_frames = max_test_frames(self.config["test"], self.store.sample_rate, hop)
        predictions = [self.predict(i) for i in items]
        cut = [p["predicted"][:max_frames] for p in predictions]
        speakers = [self.store.utterances[i]["speaker"] for i in items]
        world_predicted = [self.with_echo(world_resynthesis(features, params), p["speaker"])
                           for features, p in zip(cut, predictions)]
        model_audio = world_predicted if self.vocoder is None else [
            self.with_echo(audio, p["speaker"]) for audio, p in zip(self.vocode(items, cut, speakers), predictions)]
        rendered = []
        for utterance_id, prediction, audio, world in zip(items, predictions, model_audio, world_predicted):
            utterance = self.store.load(utterance_id)
            frames = len(prediction["real"]) if max_frames is None else min(len(prediction["real"]), max_frames)
            real = None if utterance.audio is None else np.asarray(utterance.audio[:frames * hop])
            references = {"world": world_resynthesis(prediction["real"][:frames], params)}
            if real is not None:
                references["real"] = real
            if self.vocoder is not None:
                references["world_predicted"] = world
            metrics = {"seconds": len(audio) / self.store.sample_rate,
                       "predicted_frames": int(prediction["predicted_durations"].sum()),
                       "label_frames": int(prediction["durations"].sum()), **self.feature_metrics(prediction)}
            rendered.append(RenderedItem(
                utterance_id, audio, real if real is not None else references["world"], metrics,
                utterance=utterance_id, words_of=utterance_id,
                words_span=hop * recording_frames(prediction["predicted_durations"], prediction["durations"],
                                                  len(audio) // hop),
                references=references,
                reference_metrics={row: {"seconds": len(a) / self.store.sample_rate}
                                   for row, a in references.items()},
                extra={"durations": [prediction["durations"].tolist(), prediction["predicted_durations"].tolist(),
                                     self.baselines["duration"][prediction["symbols"]].tolist()]}))
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        return write_results(out_dir, epoch, self.store.sample_rate, rendered, writer, test_tag(speaker_set),
                             self.evaluation, speaker_set, extra=pooled_duration_metrics(rendered))


def recording_frames(predicted: np.ndarray, recorded: np.ndarray, frames: int) -> int:
    """Frames of the recording that say the phones whose predicted frames end within the first
    `frames` predicted frames (all of the recording when the rendering is whole): the span whose
    words the rendering is judged against."""
    complete = int(np.searchsorted(np.cumsum(predicted), frames, side="right"))
    return int(np.sum(recorded)) if complete >= len(predicted) else int(np.sum(recorded[:complete]))


def rmse(predicted, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def pearson(a, b) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def pooled_duration_metrics(rendered: list[RenderedItem]) -> dict:
    """Duration RMSE (frames) and Pearson correlation over every phone of the test together,
    for the model and the per-symbol baseline."""
    truth = np.concatenate([item.extra["durations"][0] for item in rendered])
    predicted = np.concatenate([item.extra["durations"][1] for item in rendered])
    baseline = np.concatenate([item.extra["durations"][2] for item in rendered])
    return {"duration_rmse_frames_all_phones": rmse(predicted, truth), "duration_pearson": pearson(predicted, truth),
            "baseline_duration_rmse_frames_all_phones": rmse(baseline, truth),
            "baseline_duration_pearson": pearson(baseline, truth)}
