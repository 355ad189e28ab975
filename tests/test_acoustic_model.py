"""The acoustic family's model and data: shapes, padding, frames made from durations against the
store's frames from the label file, the features' own analysis against the recording's, and a
briefly trained model against trivial baselines on real demo utterances."""

import numpy as np
import pytest
import torch

from samplernn_pase.data import hts_labels
from samplernn_pase.data.phone_sequences import (
    PHONE_COLUMN, collate, expand_phones, frame_linguistic, phone_frames, phone_symbol_means, utterance_item)
from samplernn_pase.data.store import UtteranceStore
from samplernn_pase.metrics.speech import analyse, compare, feature_analysis
from samplernn_pase.models.acoustic import (AcousticConfig, AcousticModel, frames_of, losses, scale_variance,
                                            utterance_variances)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(**overrides) -> AcousticModel:
    options = dict(hidden_size=12, duration_hidden_size=8, rnn_layers=2, conv_kernel=3,
                   linguistic_embedding_size=3, speaker_embedding_size=4, num_speakers=3, acoustic_dim=43,
                   linguistic_table_sizes=[6, 4], linguistic_column_tables=[0, 0, 1], frame_real_dim=5)
    options.update(overrides)
    torch.manual_seed(0)
    return AcousticModel(AcousticConfig(**options)).eval()


def random_item(phones: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    durations = rng.integers(0, 6, phones)
    frames = int(durations.sum())
    return {"speaker": int(rng.integers(0, 3)),
            "phone_categorical": np.stack([rng.integers(0, 6, phones), rng.integers(0, 6, phones),
                                           rng.integers(0, 4, phones)], axis=1),
            "phone_real": rng.standard_normal((phones, 3)).astype(np.float32), "durations": durations,
            "frame_categorical": np.stack([rng.integers(0, 6, frames), rng.integers(0, 6, frames),
                                           rng.integers(0, 4, frames)], axis=1),
            "frame_real": rng.standard_normal((frames, 5)).astype(np.float32),
            "frame_phone": expand_phones(durations)[0],
            "acoustic": np.concatenate([rng.standard_normal((frames, 1)), rng.integers(0, 2, (frames, 1)),
                                        rng.standard_normal((frames, 41))], axis=1).astype(np.float32)}


@pytest.mark.parametrize("options", [{}, {"trajectory_points": 3, "duration_encoder": "conv", "phone_encoder": "conv"},
                                     {"speaker_output": True}])
def test_shapes_and_padding_does_not_change_a_sequence(options):
    model = tiny_model(**options)
    short, long = random_item(5, seed=1), random_item(9, seed=2)
    with torch.no_grad():
        alone = model(collate([short]))
        together = model(collate([short, long]))
    batch = collate([short, long])
    assert together[0].shape == (2, 9) and together[1].shape == (2, batch["frame_lengths"].max(), 43)
    frames = len(short["acoustic"])
    torch.testing.assert_close(together[0][0, :5], alone[0][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(together[1][0, :frames], alone[1][0], atol=1e-6, rtol=1e-5)
    # and each step depends on its neighbours (the sequence is modeled, not frame by frame)
    changed = {**short, "frame_real": short["frame_real"].copy()}
    changed["frame_real"][0] += 1.0
    with torch.no_grad():
        moved = model(collate([changed]))[1][0]
    assert (moved[-1] - alone[1][0][-1]).abs().max() > 1e-6


def test_losses_are_the_closed_forms_over_the_unpadded_steps():
    model = tiny_model()
    items = [random_item(4, seed=3), random_item(7, seed=4)]
    batch = collate(items)
    with torch.no_grad():
        log_durations, features = model(batch)
    result = losses(log_durations, features, batch)
    duration = np.concatenate([(log_durations[k, :len(i["durations"])].numpy() - i["durations"] / 10.0) ** 2
                               for k, i in enumerate(items)]).mean()
    predicted = np.concatenate([features[k, :len(i["acoustic"])].numpy() for k, i in enumerate(items)])
    target = np.concatenate([i["acoustic"] for i in items])
    logit, flag = predicted[:, 1].astype(np.float64), target[:, 1]
    bce = np.mean(np.logaddexp(0, logit) - flag * logit)
    mse = np.mean((np.delete(predicted, 1, axis=1) - np.delete(target, 1, axis=1)) ** 2)
    assert float(result["duration_loss"]) == pytest.approx(duration, rel=1e-5)
    assert float(result["vuv_loss"]) == pytest.approx(bce, rel=1e-5)
    assert float(result["acoustic_loss"]) == pytest.approx(mse + bce, rel=1e-5)
    assert float(result["loss"]) == pytest.approx(duration + mse + bce, rel=1e-5)
    assert frames_of(torch.tensor([0.0, 0.24, 0.26, -0.5])).tolist() == [0, 2, 3, 0]


def test_delta_loss_is_the_closed_form_of_a_ramp_and_ignores_offsets_and_padding():
    """Features off by a constant have no delta loss; features off by a ramp a * t in every
    continuous column (the voiced flag left alone) have delta loss a^2 exactly, however long
    the padding after each sequence, and it enters the loss times its weight."""
    items = [random_item(5, seed=3), random_item(9, seed=4)]
    batch = collate(items)
    target = batch["acoustic"]
    durations = torch.zeros(batch["phone_categorical"].shape[:2])
    frames = torch.arange(target.shape[1], dtype=torch.float32)[None, :, None]
    continuous = torch.ones(target.shape[-1])
    continuous[1] = 0
    offset = losses(durations, target + 0.7 * continuous, batch, delta_weight=2.0)
    assert float(offset["delta_loss"]) == pytest.approx(0.0, abs=1e-10)
    ramp = losses(durations, target + 0.3 * frames * continuous, batch, delta_weight=2.0)
    plain = losses(durations, target + 0.3 * frames * continuous, batch)
    assert "delta_loss" not in plain
    assert float(ramp["delta_loss"]) == pytest.approx(0.09, rel=1e-5)
    assert float(ramp["loss"]) == pytest.approx(float(plain["loss"]) + 2.0 * 0.09, rel=1e-5)
    garbage = target.clone()
    shorter = int(batch["frame_lengths"].min())
    assert shorter < target.shape[1]
    garbage[int(batch["frame_lengths"].argmin()), shorter:] = 1e3     # the shorter sequence's padding
    moved = losses(durations, garbage + 0.3 * frames * continuous, {**batch, "acoustic": target}, delta_weight=2.0)
    assert float(moved["delta_loss"]) == pytest.approx(0.09, rel=1e-5)


def test_speaker_output_adds_each_speakers_own_linear_map_of_the_last_hidden_layer():
    """Started at zero the speaker layers change nothing (the same weights as without them);
    given a layer, a speaker's features move by exactly its hidden frames times that matrix,
    and the other speakers' not at all."""
    plain, model = tiny_model(), tiny_model(speaker_output=True)
    items = [random_item(6, seed=3), random_item(4, seed=4), random_item(5, seed=5)]
    items = [{**item, "speaker": k} for k, item in enumerate(items)]
    batch = collate(items)
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[1], plain(batch)[1])
        hidden = []
        hook = model.frame_decoder.output.register_forward_hook(lambda module, args, out: hidden.append(args[0]))
        before = model.features(batch)
        layer = torch.randn(12, 43)
        model.frame_decoder.speaker_output[1] = layer
        after = model.features(batch)
        hook.remove()
    moved = after - before
    assert moved[[0, 2]].abs().max() == 0
    torch.testing.assert_close(moved[1], hidden[1][1] @ layer, rtol=1e-5, atol=1e-5)
    assert moved[1].abs().max() > 0.1


def test_phone_trajectories_interpolate_each_phones_points_linearly():
    model = tiny_model(trajectory_points=3)
    knots = torch.tensor([[0.0, 4.0, 2.0], [1.0, 1.0, -3.0]])          # phone x point
    with torch.no_grad():   # each phone's encoding one-hot in its first units; point k of feature a = knots * (a + 1)
        model.trajectory.weight.zero_()
        weight = model.trajectory.weight.view(3, 43, -1)
        for point in range(3):
            for phone in range(2):
                weight[point, :, phone] = knots[phone, point] * torch.arange(1, 44)
    phones = torch.eye(2, 12)[None]
    phone_index, position = expand_phones(np.array([4, 3]))
    out = model.phone_trajectories(phones, torch.from_numpy(phone_index).long()[None],
                                   torch.from_numpy(position)[None])[0]
    # the piecewise-linear curve through the points at 0, 1/2, 1 of each phone, by hand
    expected = [np.interp(p, [0, 0.5, 1], knots[i].numpy()) for i, p in zip(phone_index, position)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32)[:, None] * torch.arange(1, 44),
                               rtol=1e-5, atol=1e-5)


def test_scale_variance_gives_each_cepstrum_the_target_variance_about_its_mean():
    rng = np.random.default_rng(5)
    features = torch.from_numpy(rng.standard_normal((200, 43)).astype(np.float32) * 0.4 + 2.0)
    target = torch.from_numpy(rng.uniform(0.5, 1.5, 43).astype(np.float32))
    target[10] = 0.0                                   # no target: left as predicted
    out = scale_variance(features, target).numpy()
    x = features.numpy()
    for column in range(43):
        if 3 <= column < 42 and column != 10:          # mcep1..mcep39
            assert out[:, column].var() == pytest.approx(float(target[column]), rel=1e-4)
            assert out[:, column].mean() == pytest.approx(x[:, column].mean(), abs=1e-4)
            # an affine map of the column, increasing: the trajectory's shape is kept
            assert np.corrcoef(out[:, column], x[:, column])[0, 1] == pytest.approx(1.0, abs=1e-6)
        else:                                          # lf0, vuv, mcep0, bap and the column without a target
            np.testing.assert_array_equal(out[:, column], x[:, column])


def test_utterance_variances_are_each_speakers_mean_variance_over_its_utterances():
    a, b, c = np.arange(6.0).reshape(3, 2), np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[0.0, 5.0], [0.0, 5.0]])
    variances = utterance_variances([(0, a), (0, b), (2, c)], speakers=3, dim=2)
    # by hand: a's columns vary as 0, 2, 4 (variance 8/3), b's as 1, 3 (1) and 0; c's not at all
    np.testing.assert_allclose(variances, [[(8 / 3 + 1) / 2, (8 / 3 + 0) / 2], [0, 0], [0, 0]], rtol=1e-6)


def test_expand_phones_closed_form():
    phone_index, position = expand_phones(np.array([2, 0, 3]))
    assert phone_index.tolist() == [0, 0, 2, 2, 2]
    np.testing.assert_allclose(position, [0.25, 0.75, 1 / 6, 0.5, 5 / 6], rtol=1e-6)
    assert phone_frames(phone_index, 3).tolist() == [2, 0, 3]


@pytest.fixture(scope="module")
def store(demo_prepared):
    index, normalization, data_path = demo_prepared
    return UtteranceStore(index, normalization, data_path)


def test_frames_from_the_recordings_durations_match_the_label_files(store):
    """The frames the acoustic model reads, made from phone durations in frames, against the
    store's frames made from the .lab file's times (hts_labels.frame_alignment)."""
    utterance_id = store.ids(split="train")[0]
    utterance = store.load(utterance_id)
    speaker = utterance.speaker_index
    mean, std = store.linguistic_mean[speaker], store.linguistic_std[speaker]
    durations = phone_frames(utterance.phone_index, len(utterance.phone_categorical))
    assert durations.sum() == utterance.num_frames
    categorical, real = frame_linguistic(utterance.phone_categorical, utterance.phone_real, durations,
                                         store.hop_length / store.sample_rate, mean, std)
    np.testing.assert_array_equal(categorical, utterance.linguistic_categorical)
    np.testing.assert_allclose(real[:, 2:], utterance.linguistic_real[:, 2:], atol=1e-5)
    # the phone's duration (normalized seconds) within one frame of the label's, the position within a frame
    hop = store.hop_length / store.sample_rate
    assert np.all(np.abs(real[:, 0] - utterance.linguistic_real[:, 0]) * std[0] <= hop + 1e-6)
    assert np.all(np.abs(real[:, 1] - utterance.linguistic_real[:, 1]) <= 1.0 / np.maximum(
        durations[utterance.phone_index], 1) + 1e-6)
    assert hts_labels.CATEGORICAL_FIELDS[PHONE_COLUMN] == "p3"


def test_features_analysis_is_the_recordings_analysis(store):
    """The metrics of predicted features read F0 and mel-cepstrum from the columns; on the
    recording's own features that is what analysing the recording gives."""
    utterance = store.load(store.ids(split="test")[0])
    params = store.index["feature_params"]
    figures = compare(feature_analysis(store.raw_acoustic(utterance), params), analyse(utterance.audio, params))
    assert figures["mcd_db"] < 1e-3 and figures["vuv_error"] == 0 and figures["f0_rmse_hz"] < 1e-3


def test_briefly_trained_model_beats_the_trivial_baselines(store):
    """Trained briefly on a few real utterances (each model on its own loss): the features closer
    than each utterance's own mean (the voiced flag decided by its majority), the durations closer
    than the mean duration of each phone symbol."""
    ids = store.ids(split="train", speaker_set="modeling")
    items = [utterance_item(store, i) for i in ids[:3]]
    batch = collate(items)
    model = tiny_model(hidden_size=24, duration_hidden_size=16, rnn_layers=1, num_speakers=store.num_speakers,
                       linguistic_table_sizes=store.linguistic_table_sizes,
                       linguistic_column_tables=store.linguistic_column_tables,
                       frame_real_dim=store.linguistic_real_dim).train()

    def train(parameters, loss_of, steps, learning_rate):
        optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            loss_of().backward()
            optimizer.step()

    def features():
        return model.features(batch)

    train(model.parameters(), lambda: losses(torch.zeros_like(batch["durations"], dtype=torch.float),
                                             features(), batch)["acoustic_loss"], 40, 1e-2)
    duration_items = [utterance_item(store, i) for i in ids[:12]]
    phones = collate(duration_items)

    def log_durations():
        return model.log_durations(phones["phone_categorical"], phones["phone_real"], phones["speaker"],
                                   phones["phone_lengths"])

    train(list(model.duration_model.parameters()) + list(model.speaker.parameters()),
          lambda: losses(log_durations(), torch.zeros_like(phones["acoustic"]), phones)["duration_loss"], 150, 1e-2)
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([f[:len(i["acoustic"])] for f, i in zip(features(), items)]).numpy()
        predicted_log = log_durations()
    frames = np.concatenate([i["acoustic"] for i in items])
    own_mean = np.concatenate([np.broadcast_to(i["acoustic"].mean(axis=0), i["acoustic"].shape) for i in items])
    continuous = [c for c in range(43) if c != 1]
    assert np.mean((predicted[:, continuous] - frames[:, continuous]) ** 2) < \
        0.8 * np.mean((own_mean[:, continuous] - frames[:, continuous]) ** 2)
    assert np.mean((predicted[:, 1] > 0) != (frames[:, 1] > 0.5)) < \
        np.mean((own_mean[:, 1] > 0.5) != (frames[:, 1] > 0.5))
    means = phone_symbol_means(store, ids[:12], store.linguistic_table_sizes[0])
    truth = np.concatenate([i["durations"] for i in duration_items]).astype(float)
    model_frames = np.concatenate([frames_of(predicted_log[k, :len(i["durations"])]).numpy()
                                   for k, i in enumerate(duration_items)])
    baseline = np.concatenate([means["duration"][i["phone_categorical"][:, PHONE_COLUMN]] for i in duration_items])
    assert np.sqrt(np.mean((model_frames - truth) ** 2)) < np.sqrt(np.mean((baseline - truth) ** 2))


def test_phone_symbol_means_are_the_means_of_their_frames(store):
    ids = store.ids(split="train", speaker_set="modeling")[:4]
    means = phone_symbol_means(store, ids, store.linguistic_table_sizes[0])
    first = store.load(ids[0])
    symbol = first.phone_categorical[first.phone_index[0], PHONE_COLUMN]
    frames, durations = [], []
    for i in ids:
        utterance = store.load(i)
        symbols = utterance.phone_categorical[:, PHONE_COLUMN]
        if utterance.speaker_index == first.speaker_index:
            frames.append(utterance.acoustic[symbols[utterance.phone_index] == symbol])
        durations += [int(np.sum(utterance.phone_index == p)) for p in np.flatnonzero(symbols == symbol)]
    np.testing.assert_allclose(means["acoustic"][first.speaker_index, symbol], np.concatenate(frames).mean(axis=0),
                               rtol=1e-4, atol=1e-5)
    assert means["duration"][symbol] == pytest.approx(np.mean(durations), rel=1e-5)


def test_recording_frames_cover_the_phones_said_in_the_cut():
    from samplernn_pase.runners.acoustic import recording_frames
    predicted, recorded = np.array([2, 3, 4]), np.array([1, 5, 2])
    assert recording_frames(predicted, recorded, 1) == 0       # no phone finished
    assert recording_frames(predicted, recorded, 5) == 6       # two phones: 1 + 5 recorded frames
    assert recording_frames(predicted, recorded, 8) == 6
    assert recording_frames(predicted, recorded, 9) == 8       # whole: the whole recording
