"""geoaudio: export."""
