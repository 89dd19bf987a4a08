"""Audio in and out, block by block: files through libsndfile, WAV streams on pipes,
resampling and channel mixing. Imports no torch."""
