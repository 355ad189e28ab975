"""The evaluation metrics against closed forms and independent implementations.

MCD and F0 errors against hand computations, the analysis against pysptk /
pyworld called directly, the WORLD resynthesis against the recording it came
from, Resemblyzer and DNSMOS on real demo speech, Fréchet distances against
closed forms and an eigen-decomposition.
"""

import math

import numpy as np
import pytest

from samplernn_pase.audio.io import read_audio
from samplernn_pase.data.features import acoustic_features, feature_params, world_resynthesis
from samplernn_pase.metrics.frechet import audio_frechet, frechet_distance, gaussian, report, set_distance
from samplernn_pase.metrics.speech import (Analysis, analyse, compare, mel_cepstral_distortion,
                                           multi_resolution_stft_distance, speech_metrics)

RATE = 16000


@pytest.fixture(scope="module")
def params(make_data_config):
    return feature_params(make_data_config())


def demo_audio(corpus, speaker, number):
    audio, _, _ = read_audio(corpus / speaker / f"{speaker}_{number:03d}.wav", RATE)
    return audio[: len(audio) // 80 * 80]


# --- MCD, F0, V/UV -----------------------------------------------------------------------


def test_mcd_matches_a_hand_computation_on_known_cepstra():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 40)), rng.normal(size=(9, 40))   # lengths differ: common frames
    by_hand = np.mean([10 / math.log(10) * math.sqrt(2 * sum((a[t, d] - b[t, d]) ** 2 for d in range(1, 40)))
                       for t in range(7)])
    assert mel_cepstral_distortion(a, b) == pytest.approx(by_hand, rel=1e-12)
    shifted = np.zeros((5, 40))
    shifted[:, 1] = 1.0                                   # c1 differs by 1: 10 / ln 10 * sqrt(2)
    assert mel_cepstral_distortion(np.zeros((5, 40)), shifted) == pytest.approx(6.1418, abs=1e-4)
    energy = np.zeros((5, 40))
    energy[:, 0] = 3.0                                    # c0 (energy) is not counted
    assert mel_cepstral_distortion(np.zeros((5, 40)), energy) == 0.0


def test_identical_signals_have_zero_errors(demo_corpus_path, params):
    audio = demo_audio(demo_corpus_path, "f1", 1)
    metrics = speech_metrics(audio, audio.copy(), params)
    assert metrics == {"mcd_db": 0.0, "f0_rmse_hz": 0.0, "vuv_error": 0.0}


def test_f0_rmse_and_vuv_against_known_tones(params):
    def tone(f0, seconds=1.0):
        t = np.arange(int(seconds * RATE)) / RATE
        return sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)).astype(np.float32)

    silence = np.zeros(RATE // 2, np.float32)
    low, high = tone(200.0), tone(220.0)
    metrics = compare(analyse(np.concatenate([low, silence]), params),
                      analyse(np.concatenate([high, silence]), params))
    assert metrics["f0_rmse_hz"] == pytest.approx(20.0, abs=3.0)
    assert metrics["vuv_error"] < 0.05
    # Half of the frames voiced in one signal only: V/UV error about one half.
    half = compare(analyse(np.concatenate([low, low]), params),
                   analyse(np.concatenate([low, np.zeros(RATE, np.float32)]), params))
    assert half["vuv_error"] == pytest.approx(0.5, abs=0.05)
    # Nothing voiced in both: no F0 RMSE (None), not NaN.
    assert compare(Analysis(np.zeros(5), np.zeros((5, 3))),
                   Analysis(np.full(5, 100.0), np.zeros((5, 3))))["f0_rmse_hz"] is None


def test_f0_rmse_on_common_frames_counts_only_those_frames():
    """Two renders of one reference: one voices every frame (10 Hz off on the last two, which the
    other leaves unvoiced), the other is 4 Hz off where it voices. Over each one's own voiced
    frames the second looks better (4 Hz against sqrt((3*0 + 2*100) / 5)); over the frames
    both voice, the first is exact (0 Hz) and the second still 4 Hz."""
    empty = np.zeros((5, 3))
    reference = Analysis(np.array([100.0, 110, 120, 130, 140]), empty)
    everywhere = Analysis(np.array([100.0, 110, 120, 140, 150]), empty)
    selective = Analysis(np.array([104.0, 114, 124, 0, 0]), empty)
    assert compare(everywhere, reference)["f0_rmse_hz"] == pytest.approx(np.sqrt(200 / 5))
    assert compare(selective, reference)["f0_rmse_hz"] == pytest.approx(4.0)
    common = (everywhere.f0 > 0) & (selective.f0 > 0) & (reference.f0 > 0)
    assert compare(everywhere, reference, f0_frames=common)["f0_rmse_hz"] == pytest.approx(0.0)
    assert compare(selective, reference, f0_frames=common)["f0_rmse_hz"] == pytest.approx(4.0)
    # V/UV does not change with the F0 frames.
    assert compare(selective, reference, f0_frames=common)["vuv_error"] == pytest.approx(0.4)


def test_analysis_uses_the_feature_settings(demo_corpus_path, params):
    """Metrics and features see the same F0 and mel-cepstrum: all-pass constant 0.41 at 16 kHz and
    F0 50-600 Hz from the data config, checked against pyworld + pysptk called directly."""
    import pysptk
    import pyworld

    assert params["mcep_alpha"] == 0.41 and (params["f0_floor"], params["f0_ceil"]) == (50.0, 600.0)
    audio = demo_audio(demo_corpus_path, "m1", 2)
    analysis = analyse(audio, params)
    features = acoustic_features(audio, params)
    frames = len(features)
    np.testing.assert_allclose(analysis.mcep[:frames], features[:, 2:42], atol=1e-4)
    np.testing.assert_array_equal(analysis.f0[:frames] > 0, features[:, 1] > 0.5)

    signal = audio.astype(np.float64)
    f0, times = pyworld.dio(signal, RATE, 50.0, 600.0, frame_period=5.0)
    f0 = pyworld.stonemask(signal, f0, times, RATE)
    envelope = pyworld.cheaptrick(signal, f0, times, RATE, f0_floor=50.0)
    np.testing.assert_allclose(analysis.f0, f0)
    np.testing.assert_allclose(analysis.mcep, pysptk.sp2mc(envelope, 39, 0.41), atol=1e-8)


def test_world_resynthesis_is_close_to_the_recording(demo_corpus_path, params):
    audio = demo_audio(demo_corpus_path, "f2", 3)
    resynthesized = world_resynthesis(acoustic_features(audio, params), params)
    assert len(resynthesized) == len(audio) and np.all(np.isfinite(resynthesized))
    metrics = speech_metrics(resynthesized, audio, params)
    assert metrics["mcd_db"] < 6.0 and metrics["vuv_error"] < 0.15 and metrics["f0_rmse_hz"] < 10.0
    noise = np.random.default_rng(0).normal(0, 0.1, len(audio)).astype(np.float32)
    assert speech_metrics(noise, audio, params)["mcd_db"] > metrics["mcd_db"] + 3.0


# --- speaker similarity and DNSMOS -------------------------------------------------------


def test_resemblyzer_embedding_is_resemblyzers_own_preprocessing(demo_corpus_path):
    from samplernn_pase.metrics.speaker import cosine_similarity, resemblyzer_embedding, voice_encoder

    voice_encoder()                   # imports resemblyzer with its deprecation notices silenced
    from resemblyzer import preprocess_wav

    audio = demo_audio(demo_corpus_path, "f1", 4)
    reference = voice_encoder().embed_utterance(preprocess_wav(audio, source_sr=RATE))
    assert cosine_similarity(resemblyzer_embedding(audio, RATE), reference) > 0.999
    assert resemblyzer_embedding(np.zeros(RATE, np.float32), RATE) is None


def test_real_speech_is_closest_to_its_own_speaker(demo_corpus_path):
    """Each probe utterance is nearer its own speaker's other utterances than any other speaker's."""
    from samplernn_pase.metrics.speaker import SpeakerCentroids, resemblyzer_embedding, speaker_identification

    speakers = ("f1", "f2", "m1", "m2")
    embeddings = {f"{s}_{n}": resemblyzer_embedding(demo_audio(demo_corpus_path, s, n), RATE)
                  for s in speakers for n in range(1, 5)}
    speaker_of = {u: u.split("_")[0] for u in embeddings}
    centroids = SpeakerCentroids(embeddings, speaker_of)
    for speaker in speakers:
        scores = centroids.scores(embeddings[f"{speaker}_1"], speaker, exclude=f"{speaker}_1")
        assert scores["speaker_similarity_own"] > scores["speaker_similarity_other"] + 0.05
        assert scores["speaker_identified"] == 1.0
    identification = speaker_identification(
        {s: [embeddings[f"{s}_{n}"] for n in (2, 3, 4)] for s in speakers},
        [(s, embeddings[f"{s}_1"]) for s in speakers])
    assert identification["accuracy"] == 1.0 and identification["chance"] == 0.25


def test_dnsmos_prefers_speech_to_white_noise(demo_corpus_path):
    from samplernn_pase.metrics.mos import dnsmos

    speech = dnsmos(demo_audio(demo_corpus_path, "m2", 1), RATE)
    noise = dnsmos(np.random.default_rng(0).normal(0, 0.1, 2 * RATE).astype(np.float32), RATE)
    assert set(speech) == {"dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    for key in speech:
        assert 0.0 < noise[key] < speech[key] <= 5.0, key
    assert speech["dnsmos_ovrl"] > noise["dnsmos_ovrl"] + 0.5


# --- Fréchet distances -----------------------------------------------------------------


def test_frechet_distance_of_a_set_to_itself_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    assert set_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    few = rng.normal(size=(5, 64))            # singular covariance: fewer samples than dimensions
    assert set_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(set_distance(few, rng.normal(size=(7, 64)) + 1.0))


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_an_eigendecomposition_for_full_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # tr sqrt(S1 S2) = sum of square roots of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric).
    values, vectors = np.linalg.eigh(s1)
    root1 = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    trace = np.sum(np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Two samples of the Gaussians: the fitted distance approaches the true one.
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    assert set_distance(x, y) == pytest.approx(expected, rel=0.05)
    mean, covariance = gaussian(x)
    np.testing.assert_allclose(covariance, np.cov(x.T), rtol=1e-12)


def test_frechet_report_has_a_floor_and_sample_counts(demo_corpus_path):
    real = [demo_audio(demo_corpus_path, s, n) for s in ("f1", "m1") for n in range(1, 5)]
    noise = [np.random.default_rng(n).normal(0, 0.1, RATE).astype(np.float32) for n in range(4)]
    reports = audio_frechet(noise, real, RATE)
    assert set(reports) == {"resemblyzer", "log_mel"}
    for name, figures in reports.items():
        assert figures["generated"] == 4 and figures["real"] == 8
        assert figures["distance"] > figures["floor"] >= 0, name
    single = report([np.eye(3)], [np.eye(3)])           # one real item: no halves, no floor
    assert single["floor"] is None and single["distance"] == pytest.approx(0.0, abs=1e-9)


def test_multi_resolution_stft_distance_matches_librosa():
    """Spectral convergence + log-magnitude L1, averaged over three resolutions, against
    librosa's centred STFT (reflect padding, the Hann window centred in n_fft)."""
    import librosa
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    reference = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32)
    generated = (0.25 * np.sin(2 * np.pi * 230 * t) + 0.02 * rng.standard_normal(8000)).astype(np.float32)
    want = []
    for n_fft, hop, win in ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200)):
        spectra = [np.maximum(np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win,
                                                  center=True, pad_mode="reflect")), 1e-7).astype(np.float64)
                   for x in (generated, reference)]
        fake, real = spectra
        want.append(np.linalg.norm(real - fake) / np.linalg.norm(real) + np.mean(np.abs(np.log(real) - np.log(fake))))
    assert multi_resolution_stft_distance(generated, reference) == pytest.approx(np.mean(want), rel=1e-4)
    assert multi_resolution_stft_distance(reference, reference) == pytest.approx(0.0, abs=1e-9)
    # The common length: a longer generated signal is cut to the reference's.
    longer = np.concatenate([generated, np.ones(500, np.float32)])
    assert multi_resolution_stft_distance(longer, reference) == pytest.approx(np.mean(want), rel=1e-4)
