"""How codes become bytes and back: raw and language-model coders, the integer LM of
coder 3, and Meta's float LM for format-0 files."""
