"""Turning a trained model's estimates into separated audio and scores: the segment-wise
separation of one signal (segments), the phase methods (phase, with the mel vocoder in
mel_vocoder), scoring MUSDB18 tracks (evaluation), separating audio files (audio_files)
and the process pool behind --workers (processes)."""
