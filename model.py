"""The networks. Separators, selected by name through `MODELS` / `build_model`: an
Open-Unmix-style BiLSTM ("umx") and a band-split RNN ("bsrnn"), both predicting masks for
vocals and accompaniment from one trunk shared by the two stems: real masks on the mixture
magnitude, or for bsrnn complex masks on the mixture STFT (`MASKS`).

A separator says which it is by its `mask` attribute (`takes_complex`): a "magnitude"
model maps the mixture magnitude (batch, channels, bins, frames) to magnitude estimates
(batch, stems, channels, bins, frames); a "complex" one maps the complex mixture STFT to
complex estimates of the same shapes."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from utils import SAMPLE_RATE, STEMS


def lstm_forward(lstm: nn.LSTM, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """lstm(x) under the precision policy of precision.py: float16 under CUDA fp16 autocast
    (cuDNN's fp16 LSTM, guarded by the GradScaler), float32 under any other autocast.

    Under bf16, CPU autocast would run the LSTM in bf16, and on CUDA what happens to a bf16
    LSTM depends on the torch and cuDNN versions (some raise, some fall back to slow kernels);
    a recurrence also compounds its rounding step after step, and bf16 keeps 8 bits of
    mantissa. CPU fp16 has no oneDNN LSTM. Outside autocast this is exactly lstm(x)."""
    device_type = x.device.type
    if (device_type == "cuda" and torch.is_autocast_enabled(device_type)
            and torch.get_autocast_dtype(device_type) == torch.float16):
        return lstm(x)
    with torch.autocast(device_type, enabled=False):
        return lstm(x.float())


MASKS = {
    "magnitude": "real masks on the mixture magnitude; the phase comes from inference.py --phase",
    "complex": "complex ratio masks on the complex mixture STFT, which the network also sees: it estimates "
               "the phase too (inference.py --phase model)",
}


def takes_complex(model: nn.Module) -> bool:
    """Whether `model` (or the model DistributedDataParallel wraps) works on the complex
    STFT: its `mask` is "complex". A module without a `mask` (a test's stand-in separator)
    works on magnitudes."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "mask", "magnitude") == "complex"


def config_mask(config: dict) -> str:
    """The mask kind of a build_model config: a config without "mask" (umx's, and the
    first bsrnn checkpoints') is "magnitude"."""
    return config.get("mask", "magnitude")


def bandwidth_bins(bandwidth_hz: float, sample_rate: int, n_fft: int) -> int:
    """Number of STFT bins at or below `bandwidth_hz` (the bins the network looks at)."""
    return min(n_fft // 2 + 1, int(math.floor(bandwidth_hz * n_fft / sample_rate)) + 1)


class Separator(nn.Module):
    """Mixture magnitude -> magnitude estimates of both stems.

    One trunk (normalise, fc+BN+tanh encoder, BiLSTM with a skip connection, fc+BN+ReLU)
    is shared by the two stems; only the last linear layer is per stem. Sharing the
    trunk is what keeps the whole two-stem system under 10M parameters at hidden size
    448, while each stem keeps its own unconstrained mask.
    """

    def __init__(
        self,
        nb_bins: int = 2049,
        nb_channels: int = 2,
        hidden_size: int = 448,
        nb_layers: int = 3,
        max_bin: int = 1487,
        use_mask: bool = True,
        bidirectional: bool = True,
        input_mean: list[float] | None = None,
        input_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        if hidden_size % 2 and bidirectional:
            raise ValueError("hidden_size must be even for a bidirectional LSTM")
        self.nb_bins, self.nb_channels, self.max_bin = nb_bins, nb_channels, max_bin
        self.hidden_size, self.nb_layers, self.use_mask = hidden_size, nb_layers, use_mask
        self.nb_stems = len(STEMS)

        # Input statistics start from the training set (or neutral values) and are
        # learned further, as in Open-Unmix: they are what lets tanh see unit-scale inputs.
        mean = torch.zeros(max_bin) if input_mean is None else torch.tensor(input_mean[:max_bin])
        scale = torch.ones(max_bin) if input_scale is None else torch.tensor(input_scale[:max_bin])
        self.input_mean = nn.Parameter(mean.float())
        self.input_scale = nn.Parameter(scale.float())

        self.encoder = nn.Sequential(
            nn.Linear(max_bin * nb_channels, hidden_size, bias=False),
            nn.BatchNorm1d(hidden_size),
            nn.Tanh(),
        )
        if nb_layers > 0:
            self.lstm = nn.LSTM(
                hidden_size, hidden_size // 2 if bidirectional else hidden_size,
                num_layers=nb_layers, bidirectional=bidirectional,
                dropout=0.4 if nb_layers > 1 else 0.0,
            )
            decoder_in = 2 * hidden_size  # skip connection: encoder output ++ LSTM output
        else:
            self.lstm = None
            decoder_in = hidden_size
        self.decoder = nn.Sequential(
            nn.Linear(decoder_in, hidden_size, bias=False),
            nn.BatchNorm1d(hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, self.nb_stems * nb_channels * nb_bins, bias=False),
            nn.BatchNorm1d(self.nb_stems * nb_channels * nb_bins),
        )
        # Each stem's mask in a bin is ReLU(output_scale * z + output_mean), z the last
        # BatchNorm's output: zero mean and unit spread over a batch's frames. So these two
        # set the masks' mean and spread over a batch; both start at 1, as in Open-Unmix.
        self.output_mean = nn.Parameter(torch.ones(self.nb_stems, 1, nb_bins))
        self.output_scale = nn.Parameter(torch.ones(self.nb_stems, 1, nb_bins))

    @property
    def config(self) -> dict:
        """Everything the constructor needs to rebuild this model (stored in checkpoints)."""
        return {
            "model": "umx", "nb_bins": self.nb_bins, "nb_channels": self.nb_channels,
            "hidden_size": self.hidden_size, "nb_layers": self.nb_layers,
            "max_bin": self.max_bin, "use_mask": self.use_mask,
            "bidirectional": self.lstm.bidirectional if self.lstm is not None else True,
        }

    def forward(self, mixture_mag: torch.Tensor) -> torch.Tensor:
        """mixture_mag (batch, channels, bins, frames) -> (batch, stems, channels, bins, frames)."""
        batch, channels, bins, frames = mixture_mag.shape
        x = mixture_mag[:, :, : self.max_bin].permute(3, 0, 1, 2)
        x = (x + self.input_mean) * self.input_scale
        x = self.encoder(x.reshape(frames * batch, channels * self.max_bin))
        x = x.reshape(frames, batch, self.hidden_size)
        if self.lstm is not None:
            x = torch.cat([x, lstm_forward(self.lstm, x)[0]], dim=-1)
        x = self.decoder(x.reshape(frames * batch, -1))
        x = x.reshape(frames, batch, self.nb_stems, channels, bins)
        x = x * self.output_scale + self.output_mean
        if not self.use_mask:  # magnitudes themselves: only a ReLU keeps them non-negative
            return torch.relu(x).permute(1, 2, 3, 4, 0)
        mask = torch.relu(x).permute(1, 2, 3, 4, 0)  # batch, stems, ch, bins, frames
        return mask * mixture_mag.unsqueeze(1)


# The paper's band layout for vocals: bands `step` Hz wide up to `upper` Hz, for each
# (upper, step) in turn, then one band for everything above the last `upper`.
VOCALS_BAND_LAYOUT_HZ = ((1000, 100), (4000, 250), (8000, 500), (16000, 1000), (20000, 2000))


def layout_band_widths(nb_bins: int, sample_rate: int,
                       layout: Sequence[tuple[int, int]] = VOCALS_BAND_LAYOUT_HZ) -> list[int]:
    """Widths in bins of consecutive bands that cover all `nb_bins` bins of a one-sided
    spectrum at `sample_rate`; a bin goes to the band whose [lower, upper) Hz holds it."""
    n_fft = 2 * (nb_bins - 1)
    edges_hz, lower = [], 0
    for upper, step in layout:
        edges_hz += range(lower + step, upper + 1, step)
        lower = upper
    edges = sorted({math.ceil(hz * n_fft / sample_rate) for hz in edges_hz} & set(range(1, nb_bins)))
    bounds = [0, *edges, nb_bins]
    return [hi - lo for lo, hi in zip(bounds, bounds[1:])]


class ResidualLSTM(nn.Module):
    """x + Linear(LSTM(LayerNorm(x))) along the first dimension of (sequence, batch, size).

    The LSTM has 2 * size units per direction, as in the paper; LayerNorm works on each
    position alone, so a chunk of a sequence is normalised as it would be in the whole."""

    def __init__(self, size: int, bidirectional: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.lstm = nn.LSTM(size, 2 * size, bidirectional=bidirectional)
        self.project = nn.Linear(2 * size * (2 if bidirectional else 1), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(lstm_forward(self.lstm, self.norm(x))[0])


# A new band-split RNN's size when the constructor is not given one, by mask: (features per
# band N, pairs of time and band LSTMs). Magnitude masks keep the size first measured
# (docs/experiments.md). Complex masks double the band inputs and the mask heads' outputs
# (real and imaginary parts), and those heads' last layers, 4N x 8 x 2049 weights per stem,
# dominate the count, so N is what the 10M budget bounds; the pairs are cheap in parameters
# (~104 N^2 each) and the paper's depth is 12. The default spends the budget on both; the
# alternatives in experiments.py's "complex" set trade one for the other.
BSRNN_SIZES = {"magnitude": (32, 2), "complex": (48, 6)}


def complex_product(mask_parts: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Complex masks times the mixture STFT, in float32 also under mixed-precision autocast.

    mask_parts (..., 2): the real and imaginary parts, whatever autocast made them (bf16);
    spec: complex64, broadcastable against the masks. Autocast has no complex types, so
    the product runs outside it, as the STFT does."""
    with torch.autocast(spec.device.type, enabled=False):
        return torch.view_as_complex(mask_parts.float().contiguous()) * spec


class BandSplitRNN(nn.Module):
    """Band-split RNN (Luo & Yu, "Music Source Separation with Band-split RNN", IEEE/ACM
    TASLP 2023, arXiv:2209.15174): mixture -> estimates of both stems, with masks of one
    of MASKS.

    Band split: the bins are cut into bands (`band_widths`, by default the paper's vocals
    layout); each band, both channels together, gets a LayerNorm and a Linear to
    `feature_size` features. These per-band norms replace Open-Unmix's input statistics.
    Then `nb_layers` pairs of residual LSTMs: one across time within each band (causal
    when not `bidirectional`), one across the bands within each frame (always
    bidirectional). Mask estimation: per band and per stem, LayerNorm, an MLP with a tanh
    hidden layer of 4 * feature_size and a GLU output. The trunk is shared by the stems,
    the mask heads are not.

    mask "complex" is the paper's model: the input is the complex mixture STFT, each band
    seen as the real and imaginary parts of its bins and channels, and each head outputs
    the real and imaginary parts of a complex ratio mask (the GLU's output, unbounded),
    multiplied with the mixture STFT: the estimates are complex, phase included.
    mask "magnitude" is this project's adaptation: the input is the magnitude and each
    mask is real and non-negative (a ReLU after the GLU), applied to the mixture
    magnitude; the phase comes from phase.py as for "umx".

    feature_size and nb_layers left out take BSRNN_SIZES[mask].
    """

    def __init__(
        self,
        nb_bins: int = 2049,
        nb_channels: int = 2,
        feature_size: int | None = None,
        nb_layers: int | None = None,
        band_widths: Sequence[int] | None = None,
        bidirectional: bool = True,
        mask: str = "magnitude",
    ) -> None:
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r} (known: {', '.join(MASKS)})")
        self.mask = mask
        widths = list(layout_band_widths(nb_bins, SAMPLE_RATE) if band_widths is None else band_widths)
        if sum(widths) != nb_bins or min(widths) < 1:
            raise ValueError(f"band widths must be positive and sum to nb_bins={nb_bins}, got {sum(widths)}")
        default_features, default_layers = BSRNN_SIZES[mask]
        feature_size = default_features if feature_size is None else feature_size
        nb_layers = default_layers if nb_layers is None else nb_layers
        self.nb_bins, self.nb_channels, self.band_widths = nb_bins, nb_channels, widths
        self.feature_size, self.nb_layers, self.bidirectional = feature_size, nb_layers, bidirectional
        self.nb_stems = len(STEMS)
        parts = 2 if mask == "complex" else 1  # real and imaginary, or the magnitude, per bin and channel

        self.band_inputs = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(parts * nb_channels * width), nn.Linear(parts * nb_channels * width, feature_size))
            for width in widths
        )
        self.over_time = nn.ModuleList(ResidualLSTM(feature_size, bidirectional) for _ in range(nb_layers))
        self.over_bands = nn.ModuleList(ResidualLSTM(feature_size, True) for _ in range(nb_layers))
        self.mask_heads = nn.ModuleList(
            nn.ModuleList(
                nn.Sequential(
                    nn.LayerNorm(feature_size),
                    nn.Linear(feature_size, 4 * feature_size),
                    nn.Tanh(),
                    nn.Linear(4 * feature_size, 2 * parts * nb_channels * width),
                    nn.GLU(dim=-1),
                )
                for width in widths
            )
            for _ in STEMS
        )

    @property
    def config(self) -> dict:
        """Everything the constructor needs to rebuild this model (stored in checkpoints)."""
        return {
            "model": "bsrnn", "nb_bins": self.nb_bins, "nb_channels": self.nb_channels,
            "feature_size": self.feature_size, "nb_layers": self.nb_layers,
            "band_widths": list(self.band_widths), "bidirectional": self.bidirectional, "mask": self.mask,
        }

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """mixture (batch, channels, bins, frames) -> (batch, stems, channels, bins, frames):
        magnitudes from the magnitude, or with complex masks complex estimates from the
        complex STFT (complex64)."""
        batch, channels, _, frames = mixture.shape
        complex_masks = self.mask == "complex"
        x = mixture.permute(3, 0, 1, 2)  # frames, batch, ch, bins
        if complex_masks:  # each band's input: the real and imaginary parts of its bins, as in the paper
            x = torch.view_as_real(x).movedim(-1, -2)  # frames, batch, ch, 2, bins
        bands = x.split(self.band_widths, dim=-1)
        x = torch.stack([embed(band.reshape(frames, batch, -1)) for embed, band in zip(self.band_inputs, bands)],
                        dim=1)  # frames, bands, batch, features
        nb_bands = len(self.band_widths)
        for over_time, over_bands in zip(self.over_time, self.over_bands):
            x = over_time(x.reshape(frames, nb_bands * batch, -1)).reshape(frames, nb_bands, batch, -1)
            x = over_bands(x.transpose(0, 1).reshape(nb_bands, frames * batch, -1))
            x = x.reshape(nb_bands, frames, batch, -1).transpose(0, 1)
        parts = (2,) if complex_masks else ()
        masks = torch.stack([
            torch.cat([head(x[:, k]).reshape(frames, batch, channels, *parts, width)
                       for k, (head, width) in enumerate(zip(heads, self.band_widths))], dim=-1)
            for heads in self.mask_heads
        ], dim=2)  # frames, batch, stems, ch, (2,) bins
        if complex_masks:
            return complex_product(masks.permute(1, 2, 3, 5, 0, 4), mixture.unsqueeze(1))
        return torch.relu(masks).permute(1, 2, 3, 4, 0) * mixture.unsqueeze(1)


MODELS = {"umx": Separator, "bsrnn": BandSplitRNN}


# Config keys of model options measured and dropped (docs/recipe.md, "Which flags stay"):
# a checkpoint that holds one at the value every model computes still loads.
FIXED_OPTIONS = {"mask_activation": "relu", "input_transform": "linear"}


def build_model(config: dict) -> nn.Module:
    """The model a `.config` describes. A config without "model" (the first checkpoints')
    is an Open-Unmix-style `Separator`."""
    settings = dict(config)
    name = settings.pop("model", "umx")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    for key, value in FIXED_OPTIONS.items():
        if settings.pop(key, value) != value:
            raise ValueError(f"{key} {config[key]!r} is not built by this version (only {value!r}); "
                             "docs/recipe.md says which commit trains and loads it")
    return MODELS[name](**settings)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
