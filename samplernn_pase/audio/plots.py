"""Spectrogram images for results/ and TensorBoard (matplotlib, no screen needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..files import atomic_write_bytes  # noqa: E402


def log_spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Log-magnitude STFT (frequency x frames) in dB of the mels' own STFT (audio/mel.py:
    frame t covers samples t * hop onwards, len(audio) // hop frames), for display."""
    import torch

    from .mel import magnitude_spectrogram

    audio = np.array(audio, dtype=np.float32)   # a copy: the store's arrays are read-only
    if len(audio) <= n_fft:  # reflect padding needs more samples than it adds
        audio = np.pad(audio, (0, n_fft + 1 - len(audio)))
    magnitude = magnitude_spectrogram(torch.from_numpy(audio)[None], n_fft, hop, n_fft)[0]
    return 20 * np.log10(np.maximum(magnitude.numpy(), 1e-5))


def figure_to_png(figure) -> bytes:
    import io
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def png_to_array(png: bytes) -> np.ndarray:
    """(H, W, 3) uint8, the layout TensorBoard's add_image(dataformats='HWC') takes."""
    import io
    image = plt.imread(io.BytesIO(png), format="png")
    return (image[..., :3] * 255).astype(np.uint8)


def save_images(path: Path, images: list[tuple[str, np.ndarray]], sample_rate: int | None = None,
                hop: int = 128, colorbar_label: str = "dB") -> bytes:
    """Stack 2-D arrays (frequency x time) vertically, one titled panel each; write a PNG.

    With `sample_rate` the rows are linear STFT bins up to Nyquist and the
    columns frames `hop` samples apart: the axes read Hz and seconds.
    """
    figure, axes = plt.subplots(len(images), 1, figsize=(10, 2.6 * len(images)), squeeze=False,
                                constrained_layout=True)
    for axis, (title, image) in zip(axes[:, 0], images):
        extent = None
        if sample_rate is not None:
            extent = [0, image.shape[1] * hop / sample_rate, 0, sample_rate / 2]
        shown = axis.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=extent,
                            vmin=np.percentile(image, 5), vmax=np.percentile(image, 99.5))
        figure.colorbar(shown, ax=axis, label=colorbar_label, pad=0.01)
        axis.set_title(title)
        axis.set_ylabel("frequency (Hz)" if sample_rate is not None else "bin")
    axes[-1, 0].set_xlabel("time (s)" if sample_rate is not None else "frame")
    png = figure_to_png(figure)
    atomic_write_bytes(path, png)
    return png


def save_spectrogram_comparison(path: Path, generated: np.ndarray, reference: np.ndarray,
                                sample_rate: int = 16000, n_fft: int = 512, hop: int = 128) -> bytes:
    """Generated above reference, log-magnitude STFT in dB, Hz against seconds."""
    return save_images(path, [("generated", log_spectrogram(generated, n_fft, hop)),
                              ("reference", log_spectrogram(reference, n_fft, hop))],
                       sample_rate=sample_rate, hop=hop)


def save_image_grid(path: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> bytes:
    """A grid of 2-D arrays (frequency x time): one row per (row title, [(panel title, image)]),
    all on one colour scale so rows can be compared; write a PNG."""
    columns = max(len(panels) for _, panels in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.0 * len(rows)),
                                squeeze=False, constrained_layout=True)
    values = np.concatenate([image.ravel() for _, panels in rows for _, image in panels])
    low, high = np.percentile(values, 1), np.percentile(values, 99.5)
    for row, (row_title, panels) in enumerate(rows):
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(panels):
                axis.axis("off")
                continue
            title, image = panels[column]
            axis.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
            axis.set_title(title, fontsize=8)
        axes[row, 0].set_ylabel(row_title, fontsize=8)
    png = figure_to_png(figure)
    atomic_write_bytes(path, png)
    return png
