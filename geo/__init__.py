"""geoaudio: geo."""
