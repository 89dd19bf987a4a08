"""The .ecdc container: the records both versions are read into, version 1 (ours), version
0 (Meta's encodec), seeking by the packet table, and the reader for either. Imports no torch."""
