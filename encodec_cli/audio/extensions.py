"""File-name extensions of the formats libsndfile reads (headerless RAW excluded), known
without importing libsndfile."""

AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".mp3", ".voc", ".sd2", ".paf",
                    ".svx", ".nist", ".sph", ".ircam", ".sf", ".mat", ".pvf", ".xi", ".htk",
                    ".sds", ".avr", ".wve", ".mpc"}


def is_audio_name(path: str) -> bool:
    import os

    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS
