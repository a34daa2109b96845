"""What the report cites: the works a run used, each with its full reference and the
summary the "Details of the approach" pages give (what it does, why it works, where this
repository uses it). A work is cited only when the run used it: the model family from the
checkpoint's model_config, the phase methods from the scored runs."""

from __future__ import annotations

from dataclasses import dataclass

from reporting.runs import Run, Training


@dataclass(frozen=True)
class Work:
    key: str
    name: str  # short: the heading on the "Details of the approach" pages
    reference: str  # the full citation, as on the references page
    summary: str  # what it is and why it works: the "Details of the approach" text
    used_here: str  # where this repository uses it


WORKS = {w.key: w for w in (
    Work("open-unmix", "Open-Unmix (Stöter et al. 2019)",
         "F.-R. Stöter, S. Uhlich, A. Liutkus and Y. Mitsufuji, \"Open-Unmix - A Reference Implementation for "
         "Music Source Separation\", Journal of Open Source Software, vol. 4, no. 41, p. 1667, 2019. "
         "doi:10.21105/joss.01667",
         "A spectrogram-masking separator: the magnitude STFT, normalised per frequency bin, passes a fully "
         "connected encoder, a 3-layer bidirectional LSTM with a skip connection and a decoder that outputs a "
         "non-negative mask per source. The LSTM sees the whole excerpt in both directions, so each frame's mask "
         "uses the musical context around it; masking the mixture keeps the estimate's scale and detail tied to "
         "the input, so the network only has to learn which bins belong to which source.",
         "the default model (--model umx) and the training recipe: Adam, MSE on magnitudes, 6-s excerpts, "
         "gain/swap/chunk/remix augmentation"),
    Work("bsrnn", "Band-split RNN (Luo & Yu 2023)",
         "Y. Luo and J. Yu, \"Music Source Separation with Band-split RNN\", IEEE/ACM Transactions on Audio, "
         "Speech, and Language Processing, vol. 31, 2023. arXiv:2209.15174",
         "Splits the spectrogram into sub-bands chosen from knowledge of the sources (narrow at low frequencies, "
         "wide at high ones), embeds each band separately, then alternates LSTMs across time and across bands. "
         "Band-wise modelling gives every frequency region its own features at a fraction of the cost of a "
         "full-resolution model, and the interleaved RNNs model both temporal and spectral structure.",
         "--model bsrnn (and its complex masks, --mask complex)"),
    Work("musdb18", "MUSDB18 (Rafii et al. 2017)",
         "Z. Rafii, A. Liutkus, F.-R. Stöter, S. I. Mimilakis and R. Bittner, \"The MUSDB18 corpus for music "
         "separation\", Zenodo, 2017. doi:10.5281/zenodo.1117372",
         "150 professionally produced full-length songs (about 10 hours) with drums, bass, other and vocals "
         "stems: 100 for training, 50 for testing. Vocals vs accompaniment here: accompaniment is the sum of the "
         "three other stems.",
         "training (86 train + 14 validation tracks, musdb's split) and the test-set scores"),
    Work("musdb18-hq", "MUSDB18-HQ (Rafii et al. 2019)",
         "Z. Rafii, A. Liutkus, F.-R. Stöter, S. I. Mimilakis and R. Bittner, \"MUSDB18-HQ - an uncompressed "
         "version of MUSDB18\", Zenodo, 2019. doi:10.5281/zenodo.3338373",
         "", "the uncompressed WAV release of the same tracks (--is-wav)"),
    Work("museval", "BSSEval v4 / museval (Stöter et al. 2018)",
         "F.-R. Stöter, A. Liutkus and N. Ito, \"The 2018 Signal Separation Evaluation Campaign\", in Latent "
         "Variable Analysis and Signal Separation (LVA/ICA 2018), Lecture Notes in Computer Science, vol. 10891, "
         "Springer, 2018. arXiv:1804.06267",
         "Introduces MUSDB18 and BSSEval v4 (the museval package): each estimate is split into the true source "
         "under an allowed time-invariant filter plus interference, spatial and artefact errors, measured on "
         "1-second frames. SDR is the ratio of the true-source part to all errors; the median over frames and "
         "then over tracks makes the score robust to silent and outlier frames.",
         "every SDR in this report (museval.eval_mus_track, median over frames, then over tracks)"),
    Work("griffin-lim", "Griffin-Lim (Griffin & Lim 1984)",
         "D. W. Griffin and J. S. Lim, \"Signal estimation from modified short-time Fourier transform\", IEEE "
         "Transactions on Acoustics, Speech, and Signal Processing, vol. 32, no. 2, pp. 236-243, 1984. "
         "doi:10.1109/TASSP.1984.1164317",
         "Finds a signal whose STFT magnitude matches a given one by alternating projections: impose the target "
         "magnitude, inverse STFT, STFT again, repeat. Each step cannot increase the distance between the "
         "consistent spectrogram and the target magnitude, so the phase converges to one that fits the "
         "magnitude. Its phase is unrelated to the reference's, and SDR punishes any phase difference.",
         "--phase griffinlim (Task 2): the model's magnitudes with a phase from a random start"),
    Work("fast-griffin-lim", "Fast Griffin-Lim (Perraudin et al. 2013)",
         "N. Perraudin, P. Balazs and P. L. Søndergaard, \"A fast Griffin-Lim algorithm\", IEEE Workshop on "
         "Applications of Signal Processing to Audio and Acoustics (WASPAA), 2013. doi:10.1109/WASPAA.2013.6701851",
         "Adds a momentum term to each Griffin-Lim projection (an extrapolation from the previous iterate), which "
         "converges faster and to spectrograms of higher consistency in the same number of iterations.",
         "librosa.griffinlim's algorithm (momentum 0.99, 32 iterations), which --phase griffinlim runs"),
    Work("norbert", "Multichannel Wiener filter, norbert (Liutkus & Stöter 2019)",
         "A. Liutkus and F.-R. Stöter, \"sigsep/norbert: First official Norbert release\", Zenodo, 2019. "
         "doi:10.5281/zenodo.3269749",
         "The multichannel Wiener filter: from the estimated magnitudes it models each source as a Gaussian with "
         "a power spectrum and a spatial covariance and applies the filter that minimises the mean squared "
         "error; its EM iterations re-estimate both. The estimates then sum to the mixture and take a phase "
         "consistent with it and with each other.",
         "--phase wiener (Open-Unmix's post-filter, re-implemented on this repository's STFT)"),
    Work("nugraha", "DNN + multichannel Wiener EM (Nugraha et al. 2016)",
         "A. A. Nugraha, A. Liutkus and E. Vincent, \"Multichannel audio source separation with deep neural "
         "networks\", IEEE/ACM Transactions on Audio, Speech, and Language Processing, vol. 24, no. 9, "
         "pp. 1652-1664, 2016. doi:10.1109/TASLP.2016.2580946",
         "Combines network-estimated source spectra with the multichannel Wiener filter's EM, the framework "
         "norbert implements.", "--phase wiener"),
    Work("misi", "MISI (Gunawan & Sen 2010)",
         "D. Gunawan and D. Sen, \"Iterative phase estimation for the synthesis of separated sources from "
         "single-channel mixtures\", IEEE Signal Processing Letters, vol. 17, no. 5, pp. 421-424, 2010. "
         "doi:10.1109/LSP.2010.2042530",
         "Multiple Input Spectrogram Inversion: Griffin-Lim for all sources jointly, with the mixture's error "
         "shared among them at every iteration, so the estimates keep summing to the mixture.",
         "--phase misi"),
    Work("vocos", "Vocos (Siuzdak 2023)",
         "H. Siuzdak, \"Vocos: Closing the gap between time-domain and Fourier-based neural vocoders for "
         "high-quality audio synthesis\", arXiv:2306.00581, 2023",
         "A neural vocoder that predicts STFT coefficients (magnitude and phase) from a mel spectrogram at the "
         "frame rate and inverts them with one ISTFT.",
         "--phase vocoder (vocoder.py's mel vocoder follows its design)"),
)}

# Phase methods -> the works they rest on.
PHASE_WORKS = {"griffinlim": ("griffin-lim", "fast-griffin-lim"), "griffinlim-mixinit": ("griffin-lim",),
               "misi": ("misi", "griffin-lim"), "wiener": ("norbert", "nugraha"), "vocoder": ("vocos",)}


def cited(training: Training, runs: list[Run]) -> list[Work]:
    """The works this run used, in the order the references page lists them."""
    keys = ["open-unmix"]  # the recipe and evaluation protocol, whichever model
    if training.model_config.get("model", "umx") == "bsrnn":
        keys.append("bsrnn")
    keys += ["musdb18", "musdb18-hq", "museval"]
    for run in runs:
        keys += [k for k in PHASE_WORKS.get(run.phase, ()) if k not in keys]
    return [WORKS[k] for k in dict.fromkeys(keys)]


def repository_reference(link: str | None, commit: str | None) -> str:
    """This repository's own entry."""
    where = link or "(add the code's address with report.py --link)"
    return (f"This repository: two-stem music source separation on MUSDB18, {where}"
            + (f", commit {commit}" if commit else "") + ".")
