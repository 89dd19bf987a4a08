"""EnCodec's networks (the codec and its language model) as PyTorch modules, streaming
encode and decode, and where their weights come from (registry, resolution, download)."""
