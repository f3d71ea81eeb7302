"""A private PulseAudio null sink and a recorder of its monitor (in progress)."""
