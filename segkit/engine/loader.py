"""DataLoaders whose sample errors reach the main process and end the run cleanly.

Paddle 3.3's ``paddle.io.DataLoader`` loses an exception raised by a dataset or a collate function:

* ``num_workers=0``: the prefetch thread (``_DataLoaderIterSingleProcess._thread_loop``) catches
  only ``StopIteration`` around the fetch. Any other exception ends the thread without closing
  the blocking queue, and the main thread waits forever in ``MultiDeviceFeedReader::WaitFutures``.
* ``num_workers>0``: the worker's exception is re-raised in the loader's thread (a thread
  traceback on the screen), which kills the queue; the main process then gets
  ``SystemError: Blocking queue is killed`` instead of the error.

So no exception ever leaves a dataset inside a DataLoader built by segkit: ``GuardedDataset`` and
``guard_collate`` turn it into a ``SampleFailure`` value (a ``DatasetError`` naming the sample's
files), the batch carries it to the main process like any other Python object, and
``raise_failures`` raises it there, where the tools print one message and exit with status 2.

Worker processes are stopped by the main process, never left to interpreter exit. At exit,
``multiprocessing`` terminates (SIGTERM) the daemon workers still alive, and Paddle's SIGCHLD
handler reports each such death as a ``SystemError`` traceback ("DataLoader process ... killed by
signal: Terminated"): the traceback a Ctrl-C during training used to end with. So a loader stream
stops its workers when it ends, however it ends (exhausted, an error, ``close()``), and an exit
hook, which runs before multiprocessing's own, stops those of any stream still open. The workers
ignore SIGINT (``segkit.runtime.worker_init``): a terminal's Ctrl-C reaches the whole process
group, and only the main process decides how to stop.
"""

import atexit
import multiprocessing.util  # noqa: F401 (its exit hook is registered first, so segkit's runs before it)
import traceback
import weakref
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import paddle
import paddle.distributed as dist

from segkit.errors import DatasetError, SegkitError


class SampleFailure:
    """The error raised while loading one sample, carried as data (it pickles across processes)."""

    def __init__(self, error: SegkitError):
        self.error = error


def describe_sample(dataset: Any, index: int) -> str:
    """``sample 3 (image a.png, label a_label.png)`` when the dataset has a file list, else ``sample 3``."""
    files = getattr(dataset, "file_list", None)
    if files is None or not 0 <= index < len(files):
        return f"sample {index}"
    image, label = files[index]
    return f"sample {index} (image {image}" + (f", label {label})" if label else ")")


def as_segkit_error(exc: BaseException, where: str) -> SegkitError:
    """``exc`` itself when it is a SegkitError (its message already names the file), else a
    DatasetError naming ``where``, the exception and the line that raised it."""
    if isinstance(exc, SegkitError):
        return exc
    frames = traceback.extract_tb(exc.__traceback__)
    origin = f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return DatasetError(
        f"loading {where} failed: {type(exc).__name__}: {exc}{origin}. Check that file (tools/check_dataset.py "
        "scans a whole dataset), or remove it from the dataset."
    )


def load_sample(dataset: Any, index: int, key: Any = None):
    """``dataset[key]`` (``key`` defaults to ``index``), or a SampleFailure when that raises."""
    try:
        return dataset[index if key is None else key]
    except Exception as exc:  # every error becomes data; raise_failures raises it in the main process
        return SampleFailure(as_segkit_error(exc, describe_sample(dataset, index)))


class GuardedDataset(paddle.io.Dataset):
    """``dataset`` whose ``__getitem__`` returns a SampleFailure instead of raising."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return load_sample(self.dataset, index)


def _failure_batch(failure: SampleFailure) -> list:
    # Paddle ends the iteration at a batch without any array, so the failure travels beside a dummy one.
    return [np.zeros([1], np.uint8), failure]


def guard_collate(collate_fn: Callable[[Sequence[Any]], Any]) -> Callable[[Sequence[Any]], Any]:
    """``collate_fn`` that passes a sample's SampleFailure on as the batch and turns its own errors into one."""

    def collate(batch: Sequence[Any]):
        for sample in batch:
            if isinstance(sample, SampleFailure):
                return _failure_batch(sample)
        try:
            return collate_fn(batch)
        except Exception as exc:
            return _failure_batch(SampleFailure(as_segkit_error(exc, f"a batch of {len(batch)} samples")))

    return collate


def failure_of(batch: Any) -> Optional[SampleFailure]:
    """The SampleFailure a batch carries, or None."""
    if isinstance(batch, SampleFailure):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[-1], SampleFailure):
        return batch[-1]
    return None


WORKER_STOP_SECONDS = 10  # for a worker to finish the sample it is loading before it is killed

_open_streams: "weakref.WeakSet[Any]" = weakref.WeakSet()  # Paddle iterators whose workers may be alive


def stop_workers(iterator: Any) -> None:
    """Stop the worker processes of a ``paddle.io.DataLoader`` iterator, if it has any, and forget them.

    Paddle's own shutdown (``_try_shutdown_all``, what it runs at the end of an epoch) tells each
    worker to finish and unregisters them from its SIGCHLD check; a worker still busy after
    ``WORKER_STOP_SECONDS`` is killed, which no longer counts as a failure.
    """
    _open_streams.discard(iterator)
    workers = getattr(iterator, "_workers", None)
    if not workers:
        return
    iterator._try_shutdown_all(WORKER_STOP_SECONDS)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()


@atexit.register
def _stop_open_streams() -> None:
    for iterator in list(_open_streams):
        stop_workers(iterator)


def raise_failures(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield ``batches``; raise the error of the first one that carries a SampleFailure. The loader's
    workers stop when the stream ends (exhausted, an error, ``close()``), else at interpreter exit.

    A worker killed by the system (out of memory, a crash in native code) makes Paddle raise a
    bare SystemError or RuntimeError; it is reported as a DatasetError with the way to see the cause.
    """
    iterator = iter(batches)
    _open_streams.add(iterator)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (SystemError, RuntimeError) as exc:
                raise DatasetError(
                    f"data loading stopped: {str(exc).strip().splitlines()[0]}. A loading worker died (often out "
                    "of memory); rerun with --num_workers 0 to see the cause, or lower batch_size / num_workers."
                ) from None
            failure = failure_of(batch)
            if failure is not None:
                raise failure.error
            yield batch
    finally:
        stop_workers(iterator)


def guarded_loader(dataset: Any, batch_sampler: Iterable, num_workers: int, collate_fn: Callable, **kwargs) -> Iterator:
    """An iterator over a ``paddle.io.DataLoader`` whose sample errors are raised here, in the caller.

    ``dataset`` must return SampleFailures rather than raise (``GuardedDataset`` or ``load_sample``).
    """
    loader = paddle.io.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                                  collate_fn=guard_collate(collate_fn), **kwargs)
    return raise_failures(loader)


def raise_on_any_rank(error: Optional[SegkitError], what: str) -> None:
    """Raise ``error`` here, and the failed ranks' errors on every other rank.

    In a multi-process run each rank calls this at the same point with its own outcome (one small
    all-reduce; the messages are gathered only after a failure), so a rank whose data failed never
    leaves the others waiting in a collective, and rank 0, whose output the launcher shows, prints
    the message even when the launcher stops the failed rank first.
    """
    world = dist.get_world_size()
    if world > 1:
        flags = paddle.to_tensor([int(error is not None)], dtype="int32")
        dist.all_reduce(flags)
        if int(flags.numpy()[0]) and error is None:
            messages: List[Optional[str]] = []
            dist.all_gather_object(messages, None)
            failed = "\n".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
            error = DatasetError(f"{failed}\n(every rank stopped: rank(s) above could not load {what}.)")
        elif error is not None:
            dist.all_gather_object([], str(error))
    if error is not None:
        raise error


def next_batch(batches: Iterator[Any], what: str) -> Any:
    """``next(batches)``; in a multi-process run every rank also learns whether all ranks got theirs."""
    batch, error = None, None
    try:
        batch = next(batches)
    except SegkitError as exc:
        error = exc
    raise_on_any_rank(error, what)
    return batch
