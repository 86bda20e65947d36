"""Fitting what a bundle carries beside its encoders: the audio gallery and the soundscape head."""
