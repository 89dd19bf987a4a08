"""The codes of a corpus as Parquet shards: the table's layout, a shard written row by row
to a temporary name and renamed when whole, and its rows read back as `Codes`. pyarrow is
the `datasets` extra, imported here only; the shards load in pyarrow and Hugging Face
`datasets` without ecdc.

One row per file:
  path               str: the file's path under the folder given (or its name), '/' between folders
  codes              fixed_size_list<list<uint16>, codebooks>: [codebooks][frames]
  frames             int32
  sample_rate        int32: the original's
  channels           int32: the original's
  num_samples        int64: the original's
  duration           float64: seconds (num_samples / sample_rate)
  model_num_samples  int64: the decoded length at the model's rate
  segment_frames     list<int32>: 48 kHz, frames of each 1 s segment (null at 24 kHz)
  scales             list<float32>: 48 kHz, each segment's scale (null at 24 kHz)
The schema's metadata holds b"ecdc": JSON with model, bandwidth, codebooks, frame_rate,
sample_rate (the model's), weights_fingerprint, and `plan` (what `--resume` compares);
the file's key-value metadata b"ecdc.failed", the inputs that failed (JSON). Parquet's
dictionary encoding stores the codes in 10 bits each, 0.63 of uint16.
"""
from __future__ import annotations

import json
import os
import typing as tp

import numpy as np

from .codes import Codes, CodesError
from .errors import FormatError, OptionError
from .specs import SPECS

ROW_GROUP = 64        # rows buffered before they are written (memory stays flat)
META_KEY = b"ecdc"
FAILED_KEY = b"ecdc.failed"
LAYOUT = 1            # of the table; a reader refuses a later one


def pyarrow():
    """pyarrow, or a one-line error that says what to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise OptionError("Parquet shards need pyarrow: pip install 'encodec-cli[datasets]'") from None
    return pa


def shard_name(index: int, count: int, split: str = "train") -> str:
    """The Hugging Face Hub's name of shard `index` of `count`."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def schema(model: str, codebooks: int, meta: tp.Dict[str, tp.Any]):
    pa = pyarrow()
    fields = [("path", pa.string()), ("codes", pa.list_(pa.list_(pa.uint16()), codebooks)),
              ("frames", pa.int32()), ("sample_rate", pa.int32()), ("channels", pa.int32()),
              ("num_samples", pa.int64()), ("duration", pa.float64()), ("model_num_samples", pa.int64()),
              ("segment_frames", pa.list_(pa.int32())), ("scales", pa.list_(pa.float32()))]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


def table_meta(model: str, bandwidth: float, weights_fingerprint: tp.Optional[bytes], plan: str
               ) -> tp.Dict[str, tp.Any]:
    spec = SPECS[model]
    return {"layout": LAYOUT, "model": model, "bandwidth": bandwidth, "codebooks": spec.codebooks_for(bandwidth),
            "frame_rate": spec.frame_rate, "sample_rate": spec.sample_rate,
            "weights_fingerprint": weights_fingerprint.hex() if weights_fingerprint else None, "plan": plan}


class ShardWriter:
    """Rows appended in order to Parquet file `path` (a temporary name), ROW_GROUP at a time.
    The schema's metadata is written with the first rows (the weights are the first row's);
    the inputs that failed, known at the end, go in the file's key-value metadata."""

    def __init__(self, path: str, model: str, bandwidth: float, plan: str):
        self.path, self.model, self.bandwidth, self.plan = path, model, bandwidth, plan
        self.codebooks = SPECS[model].codebooks_for(bandwidth)
        self.rows: tp.List[tp.Tuple[str, Codes]] = []
        self.fingerprint: tp.Optional[bytes] = None
        self._writer: tp.Any = None
        self._schema: tp.Any = None

    def check(self, codes: Codes) -> None:
        """A row must be of the table's model and bandwidth, and weights."""
        if codes.model != self.model or codes.n_codebooks != self.codebooks:
            raise CodesError(f"its codes are {codes.model} at {codes.bandwidth:g} kbps; the shards hold "
                             f"{self.model} at {self.bandwidth:g} kbps")
        if self.fingerprint and codes.weights_fingerprint and codes.weights_fingerprint != self.fingerprint:
            raise CodesError("its codes were made with other codec weights than the shard's other rows")

    def append(self, path: str, codes: Codes) -> None:
        self.check(codes)
        self.fingerprint = self.fingerprint or codes.weights_fingerprint
        self.rows.append((path, codes))
        if len(self.rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        pa = pyarrow()
        if self._writer is None:
            meta = table_meta(self.model, self.bandwidth, self.fingerprint, self.plan)
            self._schema = schema(self.model, self.codebooks, meta)
            self._writer = pq.ParquetWriter(self.path, self._schema, compression="snappy", use_dictionary=True)
        if self.rows:
            self._writer.write_table(_table(pa, self.rows, self._schema, self.codebooks))
        self.rows = []

    def close(self, failed: tp.Sequence[str]) -> None:
        """Write what is left, and the inputs that failed (`--resume` does such a shard again)."""
        self._flush()
        self._writer.add_key_value_metadata({FAILED_KEY.decode(): json.dumps(list(failed))})
        self._writer.close()


def _table(pa, rows: tp.Sequence[tp.Tuple[str, Codes]], sch, codebooks: int):
    """Rows as a table of `sch`, built from flat arrays (no Python list per code)."""
    lengths = np.repeat([c.frames for _, c in rows], codebooks).astype(np.int32)
    values = pa.array(np.concatenate([c.codes.ravel() for _, c in rows]) if rows else np.zeros(0, np.uint16),
                      pa.uint16())
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), values)
    codes = pa.FixedSizeListArray.from_arrays(inner, codebooks)
    segments = [c.segment_frames.tolist() if c.segment_frames is not None else None for _, c in rows]
    scales = [c.scales.tolist() if c.scales is not None else None for _, c in rows]
    columns = {"path": [p for p, _ in rows], "codes": codes, "frames": [c.frames for _, c in rows],
               "sample_rate": [c.source_sample_rate for _, c in rows],
               "channels": [c.source_channels for _, c in rows],
               "num_samples": [c.source_num_samples for _, c in rows], "duration": [c.duration for _, c in rows],
               "model_num_samples": [c.num_samples for _, c in rows], "segment_frames": segments, "scales": scales}
    return pa.Table.from_arrays([pa.array(v, type=sch.field(k).type) if not isinstance(v, pa.Array) else v
                                 for k, v in columns.items()], schema=sch)


# ---------------------------------------------------------------- reading

def read_meta(path: str) -> tp.Dict[str, tp.Any]:
    """A shard's ecdc metadata (its schema's), checked."""
    pyarrow()
    import pyarrow.parquet as pq

    try:
        sch = pq.read_schema(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise FormatError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    raw = (sch.metadata or {}).get(META_KEY)
    if raw is None:
        raise FormatError(f"{path}: not a shard of ecdc codes (no '{META_KEY.decode()}' metadata)")
    meta = json.loads(raw)
    meta["failed"] = json.loads((pq.read_metadata(path).metadata or {}).get(FAILED_KEY, b"null"))
    if meta.get("layout") != LAYOUT:
        raise FormatError(f"{path}: a shard of layout {meta.get('layout')}; this ecdc reads layout {LAYOUT}")
    return meta


def read_rows(path: str, batch_rows: int = 16) -> tp.Iterator[tp.Tuple[str, tp.Union[Codes, CodesError]]]:
    """(path, Codes) of each row of shard `path`, a few rows at a time, or (path, a
    CodesError that says what is wrong with the row)."""
    meta = read_meta(path)
    import pyarrow.parquet as pq

    fp = bytes.fromhex(meta["weights_fingerprint"]) if meta.get("weights_fingerprint") else None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            try:
                segments, scales = row.get("segment_frames"), row.get("scales")
                codes = Codes(codes=np.array(row["codes"], np.int64).reshape(meta["codebooks"], -1),
                              model=meta["model"], bandwidth=meta["bandwidth"], num_samples=row["model_num_samples"],
                              source_sample_rate=row["sample_rate"], source_channels=row["channels"],
                              source_num_samples=row["num_samples"], weights_fingerprint=fp,
                              segment_frames=None if segments is None else np.array(segments, np.int32),
                              scales=None if scales is None else np.array(scales, np.float32))
            except (CodesError, KeyError, TypeError, ValueError) as e:
                yield str(row.get("path")), CodesError(str(e))
                continue
            yield row["path"], codes


def row_output(folder: str, path: str, suffix: str) -> str:
    """Where a row's audio goes: its path under `folder`, with `suffix`; a path that would
    leave the folder is refused."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise CodesError(f"row path {path!r} does not name a file under the output folder")
    return os.path.join(folder, *parts[:-1], os.path.splitext(parts[-1])[0] + suffix)


def decompress_rows(src: str, folder: str, write: tp.Callable[[Codes, str], tp.Any], suffix: str,
                    progress: tp.Optional[tp.Callable[[float], None]] = None) -> float:
    """Each row of shard `src` decoded by `write(codes, output)` to its path under `folder`
    (made as needed); a row that fails is said at the end, after the others are written.
    Returns the seconds of audio written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OptionError(f"-o {folder} is a file; a shard's rows need a folder (-o wavs/)")
    seconds, failed, rows = 0.0, [], 0
    for path, codes in read_rows(src):
        rows += 1
        try:
            if isinstance(codes, CodesError):
                raise codes
            out = row_output(folder, path, suffix)
            os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
            write(codes, out)
        except (CodesError, OptionError, FormatError) as e:
            failed.append((f"row {path!r}: {e}", f"row {path!r}: {e.cli}"))
            continue
        seconds += codes.duration
        if progress:
            progress(codes.duration)
    if failed:
        say = f"{src}: {len(failed)} of {rows} rows were not written; the first: "
        raise FormatError(say + failed[0][0], cli=say + failed[0][1])
    return seconds
