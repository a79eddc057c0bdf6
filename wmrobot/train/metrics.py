"""What a training run reports: ``metrics.csv`` and TensorBoard rows, the collapse watch, and
the share of time spent waiting for data."""

from __future__ import annotations

import csv
import io
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from wmrobot.files import write_atomically
from wmrobot.model.collapse import SHRINK_FRACTION, collapse_report

METRICS = "metrics.csv"


class MetricsLog:
    """Rows of ``out/metrics.csv`` and, with ``tensorboard``, ``out/tb`` event files.

    A run starting at ``first`` > 0 (resumed) keeps the rows of the steps before it and
    continues the files; a fresh run (``first`` = 0) starts them anew."""

    def __init__(self, out: Path, first: int, tensorboard: bool) -> None:
        self.path, self.start = out / METRICS, time.perf_counter()
        if first == 0:
            self.path.unlink(missing_ok=True)
        else:
            keep_rows_up_to(self.path, first - 1)
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer: csv.DictWriter | None = None
        self.board = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out / "tb"), purge_step=first)

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` (a ``step`` and numbers), stamped with the seconds since the start;
        rows may leave columns empty, and a row with new keys widens the CSV's header (the
        file is rewritten once, atomically)."""
        row = {**row, "seconds": round(time.perf_counter() - self.start, 2)}
        if self.writer is None:
            header = self._header()
            self.writer = csv.DictWriter(self.file, fieldnames=header or list(row))
            if not header:
                self.writer.writeheader()
        new = [k for k in row if k not in self.writer.fieldnames]
        if new:
            self._widen(list(self.writer.fieldnames) + new)
        self.writer.writerow(row)
        self.file.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(f"train/{key}", value, row["step"])

    def _header(self) -> list[str]:
        """The columns of the CSV written so far (none for a new log)."""
        self.file.flush()
        with open(self.path, newline="") as f:
            return next(csv.reader(f), [])

    def _widen(self, fieldnames: list[str]) -> None:
        """Rewrite the CSV under ``fieldnames`` (the old columns first) and append to it."""
        self.file.close()
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))

        def dump(out: Any) -> None:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            out.write(text.getvalue().encode())

        write_atomically(self.path, dump, sync=False)
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer = csv.DictWriter(self.file, fieldnames=fieldnames)

    def largest(self, column: str) -> float | None:
        """The largest value of ``column`` logged so far, if any."""
        with open(self.path, newline="") as f:
            values = [float(r[column]) for r in csv.DictReader(f) if r.get(column)]
        return max(values) if values else None

    def close(self) -> None:
        """Close the CSV file and the TensorBoard writer."""
        self.file.close()
        if self.board is not None:
            self.board.close()


def keep_rows_up_to(path: Path, step: int) -> None:
    """Drop the log rows of steps after ``step`` (written before a crash, to be redone)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    write_atomically(path, lambda f: f.write("".join(kept).encode()), sync=False)


class CollapseWatch:
    """Collapse statistics of the logged latents; warns once, the first time they look
    collapsed (shrunk under a fraction of their peak spread, or of low effective rank)."""

    def __init__(self, peak_std: float | None = None) -> None:
        self.peak_std, self.warned = peak_std, False  # the largest z_std logged so far

    def __call__(self, z: torch.Tensor, step: int) -> dict[str, float]:
        """The ``effective_rank``, ``z_std_min`` and ``collapsed`` columns for latents (..., D)."""
        flat = z.detach().reshape(-1, z.shape[-1]).float().cpu()
        report = collapse_report(flat, self.peak_std)
        # as logged (z_std, 6 decimals), so that a resumed run reads back the same peak
        self.peak_std = max(self.peak_std or 0.0, round(report["z_std_mean"], 6))
        if report["collapsed"] and not self.warned:
            self.warned = True
            why = (
                f"mean std {report['z_std_mean']:.2g}, under "
                f"{SHRINK_FRACTION:g} x its peak {self.peak_std:.2g}"
                if report["shrunk"]
                else f"effective rank {report['effective_rank']:.2f} of {z.shape[-1]}, "
                f"smallest std {report['z_std_min']:.2g}"
            )
            warnings.warn(
                f"the latents look collapsed at step {step} ({why}); use "
                f"model.train.anticollapse=vicreg or sigreg, or raise its weight",
                stacklevel=4,  # the caller of train()
            )
        return {
            "effective_rank": round(report["effective_rank"], 3),
            "z_std_min": round(report["z_std_min"], 6),
            "collapsed": int(report["collapsed"]),
        }


class DataWait:
    """The share of step time spent drawing batches, since it was last read."""

    def __init__(self) -> None:
        self.waited = self.busy = 0.0

    def add(self, data_seconds: float, step_seconds: float) -> None:
        """Count one step: its seconds drawing data, of its seconds in all."""
        self.waited += data_seconds
        self.busy += step_seconds

    def take(self) -> float:
        """The share since the last call (4 decimals), and start counting afresh."""
        share = round(self.waited / max(self.busy, 1e-9), 4)
        self.waited = self.busy = 0.0
        return share
