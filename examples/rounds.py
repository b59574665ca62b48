"""Jacobi relaxation in bulk-synchronous rounds: the example ``make demo`` runs.

The problem: the steady temperature of a square plate whose top edge is held
at 100 degrees and whose other edges are held at 0 (Laplace's equation). The
plate is a grid of ``size x size`` cells, split into square tiles. Each round:

1. one job per tile goes to the ``COMPUTE`` pool: it relaxes its tile
   ``sweeps`` times, reading its one-cell border (halo) from the previous
   round, and returns the new tile and the largest change of one cell;
2. one job goes to the smaller ``CHECKPOINT`` pool: it "writes" the previous
   round's grid to storage (a short sleep stands in for the I/O) while the
   tiles compute;
3. ``await d.barrier()`` waits for both, then the tiles are pasted back.

The rounds stop when the largest change falls below ``--tol`` or after
``--rounds`` rounds. On a terminal with ``rich`` installed (the ``demo`` extra)
a live per-pool view is shown, then a summary table; otherwise one plain line
is printed per round. Ctrl-C finishes the current round, finalizes the
dispatcher and prints the summary; a second Ctrl-C stops at once.

Run it::

    python examples/rounds.py                 # thread pool, live view
    python examples/rounds.py --plain         # one line per round
    python examples/rounds.py --kind process  # every core, speed-up vs serial
    python examples/rounds.py --kind dask     # the same rounds on a Dask cluster

``--kind dask`` starts a ``distributed.LocalCluster`` on loopback (the ``dask``
extra); pointing the pool at a real cluster is one more argument,
``PoolConfig(..., kind="dask", dask_address="tcp://scheduler:8786")``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import trio

import bulkhead

COMPUTE = bulkhead.Priority.HIGH
"""The pool that relaxes the tiles."""
CHECKPOINT = bulkhead.Priority.LOW
"""The small pool that writes checkpoints, isolated from the tile jobs."""
HOT = 100.0
"""Temperature of the top edge of the plate."""

Grid = list[list[float]]
Kind = Literal["async", "thread", "process", "dask"]


# --- The numerical kernel: plain functions, no bulkhead in sight -------------


@dataclass(frozen=True)
class Tile:
    """A rectangle of interior cells: first row and column, height and width."""

    row: int
    col: int
    rows: int
    cols: int


def make_grid(size: int) -> Grid:
    """A ``(size + 2)``-square grid: a cold interior inside fixed edges."""
    grid = [[0.0] * (size + 2) for _ in range(size + 2)]
    grid[0] = [HOT] * (size + 2)
    return grid


def make_tiles(size: int, tile: int) -> list[Tile]:
    """Cover the interior (rows and columns 1..size) with tiles of side ``tile``."""
    starts = range(1, size + 1, tile)
    return [
        Tile(r, c, min(tile, size + 1 - r), min(tile, size + 1 - c))
        for r in starts
        for c in starts
    ]


def cut(grid: Grid, tile: Tile) -> Grid:
    """A copy of ``tile`` with its one-cell halo: what a tile job needs."""
    return [
        row[tile.col - 1 : tile.col + tile.cols + 1]
        for row in grid[tile.row - 1 : tile.row + tile.rows + 1]
    ]


def paste(grid: Grid, tile: Tile, interior: Grid) -> None:
    """Write a relaxed tile back into the grid."""
    for i, row in enumerate(interior):
        grid[tile.row + i][tile.col : tile.col + tile.cols] = row


def relax(block: Grid, sweeps: int) -> tuple[Grid, float]:
    """Run ``sweeps`` Jacobi sweeps over the interior of ``block``.

    The halo (first and last row and column) stays fixed. Returns the new
    interior and the largest change of one cell. Pure and CPU-bound: it runs
    the same in an async, thread or process pool.
    """
    current = block
    for _ in range(sweeps):
        new = [current[0]]
        for i in range(1, len(current) - 1):
            up, mid, down = current[i - 1], current[i], current[i + 1]
            inner = [
                0.25 * (u + d + left + right)
                for u, d, left, right in zip(
                    up[1:-1], down[1:-1], mid[:-2], mid[2:], strict=True
                )
            ]
            new.append([mid[0], *inner, mid[-1]])
        new.append(current[-1])
        current = new
    interior = [row[1:-1] for row in current[1:-1]]
    change = max(
        abs(a - b)
        for new_row, old_row in zip(interior, block[1:-1], strict=True)
        for a, b in zip(new_row, old_row[1:-1], strict=True)
    )
    return interior, change


async def relax_async(block: Grid, sweeps: int) -> tuple[Grid, float]:
    """:func:`relax` for an ``"async"`` pool (which runs async functions)."""
    return relax(block, sweeps)


async def checkpoint(round_no: int, grid: Grid, io_delay: float) -> float:
    """Pretend to write ``grid`` to storage; return its mean temperature."""
    await trio.sleep(io_delay)  # simulated I/O
    cells = [value for row in grid[1:-1] for value in row[1:-1]]
    return sum(cells) / len(cells)


# --- Reporting ----------------------------------------------------------------


@dataclass(frozen=True)
class RoundRecord:
    """What one round did."""

    number: int
    jobs: int
    seconds: float
    change: float
    stats: bulkhead.DispatcherStatistics
    """A snapshot taken when the round's last job had been dispatched."""


@dataclass
class Summary:
    """What the whole run did."""

    kind: str
    rounds: list[RoundRecord] = field(default_factory=list)
    checkpoints: list[float] = field(default_factory=list)
    stats: bulkhead.DispatcherStatistics | None = None
    startup: float = 0.0
    elapsed: float = 0.0
    interrupted: bool = False
    grid: Grid = field(default_factory=list)
    serial_rounds: list[float] | None = None
    """Seconds of each round of the serial run, when one was made."""
    serial_identical: bool | None = None


def pool_line(name: str, pool: bulkhead.PoolStatistics) -> str:
    return (
        f"{name} busy {pool.busy}/{pool.workers} idle {pool.idle} queued {pool.queued}"
    )


POOL_NAMES: dict[int, str] = {COMPUTE: "compute", CHECKPOINT: "checkpoint"}


class View(Protocol):
    """How the run is shown: plain lines or a live rich view."""

    async def follow(self, d: bulkhead.Dispatcher) -> None: ...
    def round_done(self, record: RoundRecord) -> None: ...
    def close(self) -> None: ...


class PlainView:
    """One line per round, for logs, pipes and tests."""

    async def follow(self, d: bulkhead.Dispatcher) -> None:
        await trio.sleep_forever()

    def round_done(self, record: RoundRecord) -> None:
        pools = " | ".join(
            pool_line(POOL_NAMES.get(p, str(p)), s)
            for p, s in record.stats.pools.items()
        )
        print(
            f"round {record.number:3d}  jobs {record.jobs:3d}  "
            f"time {record.seconds:6.3f}s  max change {record.change:9.3e} | {pools}",
            flush=True,
        )

    def close(self) -> None:
        pass


class RichView:
    """A live per-pool view, refreshed ten times a second."""

    def __init__(self, kind: str, max_rounds: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.kind = kind
        self.max_rounds = max_rounds
        self.last: RoundRecord | None = None
        self.dispatcher: bulkhead.Dispatcher | None = None
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def render(self, stats: bulkhead.DispatcherStatistics) -> Any:
        from rich.table import Table

        table = Table(title=f"bulkhead: Jacobi rounds ({self.kind} compute pool)")
        for header in ("pool", "workers", "busy", "idle", "queued", "done", "failed"):
            table.add_column(header, justify="left" if header == "pool" else "right")
        for priority, pool in stats.pools.items():
            bar = "[green]" + "█" * pool.busy + "[/][dim]" + "·" * pool.idle + "[/]"
            table.add_row(
                POOL_NAMES.get(priority, str(priority)),
                str(pool.workers),
                f"{bar} {pool.busy}",
                str(pool.idle),
                str(pool.queued),
                str(pool.succeeded),
                str(pool.failed),
            )
        last = self.last
        if last is None:
            table.caption = "round 1 running..."
        else:
            table.caption = (
                f"round {last.number}/{self.max_rounds}: {last.jobs} jobs in "
                f"{last.seconds:.3f}s, max change {last.change:.3e}"
            )
        return table

    async def follow(self, d: bulkhead.Dispatcher) -> None:
        self.dispatcher = d
        while True:
            self.live.update(self.render(d.statistics()), refresh=True)
            await trio.sleep(0.1)

    def round_done(self, record: RoundRecord) -> None:
        self.last = record

    def close(self) -> None:
        if self.dispatcher is not None:  # show the final state
            self.live.update(self.render(self.dispatcher.statistics()), refresh=True)
        self.live.stop()


def print_summary(summary: Summary, *, rich_table: bool) -> None:
    """Per-pool totals and round times, as a rich table or plain text."""
    times = [r.seconds for r in summary.rounds]
    lines = [
        f"rounds: {len(times)}"
        + (" (interrupted)" if summary.interrupted else "")
        + f", {summary.elapsed:.3f}s"
        + f" (+{summary.startup:.3f}s pool start-up)",
    ]
    if times:
        lines.append(
            f"round time: mean {sum(times) / len(times):.4f}s, "
            f"min {min(times):.4f}s, max {max(times):.4f}s; "
            f"final max change {summary.rounds[-1].change:.3e}"
        )
    if summary.checkpoints:
        lines.append(
            f"checkpoints written: {len(summary.checkpoints)}, "
            f"last mean temperature {summary.checkpoints[-1]:.4f}"
        )
    if summary.serial_rounds and times:
        serial = summary.serial_rounds
        lines.append(
            f"serial run: {sum(serial):.3f}s; speed-up with the {summary.kind} "
            f"pool {sum(serial) / sum(times):.2f}x"
            + (
                f", {sum(serial[1:]) / sum(times[1:]):.2f}x after round 1"
                " (which starts the workers)"
                if len(times) > 1
                else ""
            )
            + f"; identical result: {'yes' if summary.serial_identical else 'NO'}"
        )
    pools = summary.stats.pools if summary.stats else {}
    headers = ("pool", "workers", "submitted", "succeeded", "failed", "cancelled")
    rows = [
        (
            POOL_NAMES.get(p, str(p)),
            *(str(getattr(s, h)) for h in headers[1:]),
        )
        for p, s in pools.items()
    ]
    if rich_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="summary")
        for header in headers:
            table.add_column(header, justify="left" if header == "pool" else "right")
        for row in rows:
            table.add_row(*row)
        console = Console()
        console.print(table)
        for line in lines:
            console.print(line)
        return
    print("summary:")
    for name, *numbers in rows:
        fields = zip(headers[1:], numbers, strict=True)
        print(f"  pool {name:<10} " + "  ".join(f"{h} {v:>5}" for h, v in fields))
    for line in lines:
        print("  " + line)


# --- The bulk-synchronous loop --------------------------------------------------


@dataclass(frozen=True)
class Config:
    size: int
    tile: int
    sweeps: int
    rounds: int
    tol: float
    workers: int
    kind: Kind
    io_delay: float


async def watch_ctrl_c(stop: trio.Event, scope: trio.CancelScope) -> None:
    """First Ctrl-C: finish the round, then finalize. Second: stop at once."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if stop.is_set():
                scope.cancel()
                return
            stop.set()
            print("\ninterrupted: finishing this round (Ctrl-C again to stop now)")


async def solve(config: Config, view: View) -> Summary:
    """Run the rounds on a dispatcher with a compute and a checkpoint pool."""
    summary = Summary(kind=config.kind)
    grid = make_grid(config.size)
    tiles = make_tiles(config.size, config.tile)
    job_fn = relax_async if config.kind == "async" else relax
    pools = [
        # Room in the queue for a whole round: each dispatch returns at once
        # and the statistics show the round waiting for the workers.
        bulkhead.PoolConfig(
            COMPUTE, config.workers, queue=len(tiles), kind=config.kind
        ),
        # One checkpoint at a time; a slow store makes the next round's
        # dispatch wait (back-pressure) instead of piling up snapshots.
        bulkhead.PoolConfig(CHECKPOINT, 1, kind="async"),
    ]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        if threading.current_thread() is threading.main_thread():
            nursery.start_soon(watch_ctrl_c, stop, nursery.cancel_scope)
        opened = time.perf_counter()
        async with bulkhead.open_dispatcher(pools) as d:
            began = time.perf_counter()
            summary.startup = began - opened
            nursery.start_soon(view.follow, d)
            checkpoints: list[bulkhead.Job] = []
            for number in range(1, config.rounds + 1):
                if stop.is_set():
                    summary.interrupted = True
                    break
                round_start = time.perf_counter()
                if number > 1:
                    snapshot = [row[:] for row in grid]
                    job = await d.dispatch(
                        checkpoint,
                        number - 1,
                        snapshot,
                        config.io_delay,
                        priority=CHECKPOINT,
                    )
                    checkpoints.append(job)
                jobs = [
                    (
                        tile,
                        await d.dispatch(
                            job_fn, cut(grid, tile), config.sweeps, priority=COMPUTE
                        ),
                    )
                    for tile in tiles
                ]
                stats = d.statistics()
                report = await d.barrier()
                change = 0.0
                for tile, job in jobs:
                    interior, tile_change = await job.wait()
                    paste(grid, tile, interior)
                    change = max(change, tile_change)
                record = RoundRecord(
                    number=number,
                    jobs=report.jobs,
                    seconds=time.perf_counter() - round_start,
                    change=change,
                    stats=stats,
                )
                summary.rounds.append(record)
                view.round_done(record)
                if change < config.tol:
                    break
            summary.elapsed = time.perf_counter() - began
        # Leaving the block ran finalize(): every job has ended, no task is left.
        summary.checkpoints = [await job.wait() for job in checkpoints]
        summary.stats = d.statistics()
        nursery.cancel_scope.cancel()
    summary.grid = grid
    return summary


def solve_serial(config: Config, rounds: int) -> tuple[Grid, list[float]]:
    """The same rounds without a dispatcher, for the speed-up figure.

    Returns the final grid and the seconds each round took.
    """
    grid = make_grid(config.size)
    tiles = make_tiles(config.size, config.tile)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        results = [relax(cut(grid, tile), config.sweeps) for tile in tiles]
        for tile, (interior, _change) in zip(tiles, results, strict=True):
            paste(grid, tile, interior)
        seconds.append(time.perf_counter() - start)
    return grid, seconds


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Jacobi relaxation in bulk-synchronous rounds on bulkhead pools."
    )
    parser.add_argument("--size", type=int, default=128, help="interior cells per side")
    parser.add_argument("--tile", type=int, help="tile side (32; 64 for process)")
    parser.add_argument("--sweeps", type=int, help="sweeps per job (20; 100)")
    parser.add_argument("--rounds", type=int, help="at most this many (100; 30)")
    parser.add_argument("--tol", type=float, default=1e-3, help="stop below this")
    parser.add_argument(
        "--kind", choices=("async", "thread", "process", "dask"), default="thread"
    )
    parser.add_argument("--workers", type=int, help="compute workers (4; all cores)")
    parser.add_argument(
        "--io-delay", type=float, default=0.01, help="seconds per checkpoint"
    )
    parser.add_argument("--plain", action="store_true", help="no live view")
    parser.add_argument(
        "--serial",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time a serial run (default: with --kind process or dask)",
    )
    args = parser.parse_args(argv)
    process = args.kind in ("process", "dask")  # jobs that cross a process
    config = Config(
        size=args.size,
        tile=args.tile or (64 if process else 32),
        sweeps=args.sweeps or (100 if process else 20),
        rounds=args.rounds or (30 if process else 100),
        tol=args.tol,
        workers=args.workers or ((os.cpu_count() or 2) if process else 4),
        kind=cast(Kind, args.kind),
        io_delay=args.io_delay,
    )
    if args.serial is None:
        args.serial = process
    return config, args


def use_rich(plain: bool) -> bool:
    if plain or not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; ``argv`` as on the command line (``None``: ``sys.argv``)."""
    config, args = parse_args(argv)
    fancy = use_rich(args.plain)
    tiles = len(make_tiles(config.size, config.tile))
    print(
        f"Jacobi relaxation of a {config.size}x{config.size} plate: {tiles} tiles of "
        f"{config.tile}x{config.tile}, {config.sweeps} sweeps per job, "
        f"{config.workers} {config.kind} compute workers, 1 checkpoint worker",
        flush=True,
    )
    view: View = RichView(config.kind, config.rounds) if fancy else PlainView()
    try:
        summary = trio.run(solve, config, view)
    finally:
        view.close()
    if args.serial and summary.rounds:
        grid, seconds = solve_serial(config, len(summary.rounds))
        summary.serial_rounds = seconds
        summary.serial_identical = grid == summary.grid
    print_summary(summary, rich_table=fancy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
