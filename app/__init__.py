"""geoaudio: app."""
