"""Audio and MIDI ops, the Maestro TFDS builder, the embedded corpus and the grain pipeline."""
