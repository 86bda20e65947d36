"""geoaudio: model."""
