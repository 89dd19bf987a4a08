"""The figure of `ecdc eval --plot`: rate-quality curves above mel spectrograms.

matplotlib's object API on the Agg canvas: no display, no pyplot state.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from . import metrics as M
from .report import Report, Row

DPI = 100
WIDTH = 12.0            # inches: 1200 pixels
CURVES_HEIGHT = 4.0      # inches, title included
SPECTROGRAM_HEIGHT = 1.8
SPECTROGRAM_MARGINS = 0.8
RANGE_DB = 80.0         # the colour scale spans this far below the loudest cell of all
TICKS_HZ = (100, 500, 1000, 2000, 4000, 8000, 16000)
STYLE = {"ecdc": dict(color="tab:blue", marker="o"), "opus": dict(color="tab:orange", marker="s")}


def formats() -> tp.Dict[str, str]:
    """The file extensions the figure can be written as, with their descriptions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg.get_supported_filetypes()


def size_px(report: Report) -> tp.Tuple[int, int]:
    """(width, height) of the figure in pixels."""
    return int(WIDTH * DPI), int(round(_height(report) * DPI))


def _height(report: Report) -> float:
    return CURVES_HEIGHT + SPECTROGRAM_HEIGHT * len(report.spectrograms) + SPECTROGRAM_MARGINS


def write(report: Report, path: str, fmt: str = "png") -> None:
    """Draw the figure and save it to `path` as `fmt` (an extension of `formats()`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, _height(report)), dpi=DPI)
    FigureCanvasAgg(fig)
    n = len(report.spectrograms)
    top, bottom = np.asarray(fig.subfigures(2, 1, height_ratios=[CURVES_HEIGHT,
                                                                 SPECTROGRAM_HEIGHT * n + SPECTROGRAM_MARGINS])).ravel()
    _curves(top, report)
    _spectrograms(bottom, report)
    fig.savefig(path, dpi=DPI, format=fmt)


def _curves(fig, report: Report) -> None:
    coder = {"lm": "LM", "raw": "raw"}[report.coder]
    fig.suptitle(f"{report.input_line()}.    ecdc: {report.model}, "
                 f"{coder} coder" + (f".    Opus: {report.opus}" if report.opus else ""),
                 fontsize=12, fontweight="bold")
    fig.text(0.5, 0.885, "Each point is one coding of the input: x is the bitrate achieved (the coded file's size over "
             "the duration), the label the bitrate asked for.", ha="center", fontsize=9, color="0.3")
    panels = [("si_snr", "SI-SNR (dB)", "SI-SNR: higher is better"),
              ("mel_distance", "mel distance", "mel distance (EnCodec's loss): lower is better")]
    if any(r.stoi is not None for r in report.rows):
        panels.append(("stoi", "STOI", "STOI (speech only): higher is better"))
    axes = fig.subplots(1, len(panels))
    for i, (ax, (key, label, hint)) in enumerate(zip(axes, panels)):
        for codec in ("ecdc", "opus"):
            rows = [r for r in report.rows if r.codec == codec and getattr(r, key) is not None]
            if not rows:
                continue
            kbps = [r.kbps for r in rows]
            ax.plot(kbps, [getattr(r, key) for r in rows], label="ecdc" if codec == "ecdc" else "Opus",
                    **STYLE[codec])
            for r in rows:
                ax.annotate(f"{r.bandwidth:g}", (r.kbps, getattr(r, key)), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=8, color=STYLE[codec]["color"])
        ax.set_xscale("log", base=2)
        _kbps_ticks(ax, report.rows)
        ax.set_xlabel("achieved bitrate (kbps)")
        ax.set_ylabel(label)
        ax.set_title(hint, fontsize=10)
        ax.margins(x=0.08, y=0.14)
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.8, wspace=0.28)


def _kbps_ticks(ax, rows: tp.Sequence[Row]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    lo, hi = min(r.kbps for r in rows), max(r.kbps for r in rows)
    ticks = [t for t in (0.75, 1.5, 3, 6, 12, 24, 48, 96) if lo / 1.5 <= t <= hi * 1.5]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])


def _spectrograms(fig, report: Report) -> None:
    specs = report.spectrograms
    vmax = max(float(s.db.max()) for s in specs)
    axes = fig.subplots(len(specs), 1, sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    top_mel = M.hz_to_mel(specs[0].max_hz)
    image = None
    for ax, s in zip(axes, specs):
        image = ax.imshow(s.db.T, origin="lower", aspect="auto", cmap="magma", vmin=vmax - RANGE_DB, vmax=vmax,
                          extent=(0, len(s.db) * s.hop_s, 0, top_mel), interpolation="nearest")
        ax.set_title(s.label, loc="left", fontsize=10)
        ticks = [f for f in TICKS_HZ if f < s.max_hz]
        ax.set_yticks(M.hz_to_mel(ticks))
        ax.set_yticklabels([f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks], fontsize=8)
        ax.set_ylabel("Hz (mel scale)", fontsize=9)
    axes[-1].set_xlabel("time (s)")
    inches = SPECTROGRAM_HEIGHT * len(specs) + SPECTROGRAM_MARGINS
    bottom, top = 0.5 / inches, 1 - 0.3 / inches
    fig.subplots_adjust(left=0.06, right=0.9, bottom=bottom, top=top, hspace=0.4)
    bar = fig.colorbar(image, cax=fig.add_axes((0.915, bottom, 0.012, top - bottom)))
    bar.set_label("mel magnitude (dB), one scale for all")
