"""Background learning: after every ``LADEDA_LEARN_EVERY`` new labels, one learn step, off every request path.

:func:`maybe_learn` is cheap (two small reads) and is called after a label (the decide door with
``learn=...``, the Review page) and when Review or Monitor is drawn. When there is work, it starts
at most one daemon thread per process, which opens its *own* store connection (the page's
connection is never held by it) and runs, in order:

- :func:`core.review.actions.learn.reprioritise` when the queue's priorities belong to another
  version than the active one (a manual activate or roll back, here or in another process);
- :func:`core.review.actions.learn.learn_step` when at least N label events arrived since the last
  step began (the ``learn`` job's marker in the store).

Across processes and replicas the store's job lease decides who runs (``job_leases``); the thread
guard here only avoids starting a second thread in one process. The learner reads stored features
and never touches the served detector or the model gate, so analyses never wait for it; an
activation is picked up by each page on its next run (the registry names the active version).

The learner competes with analyses for the same cores, so it yields to them: its thread runs at the
lowest CPU priority (``nice`` 19, this thread only, on Linux), and during a step the BLAS pool is held
to one thread, so the fit's matrix products run in that low-priority thread instead of in BLAS worker
threads at normal priority. A claim or an upload then takes the cores it needs while an adapt runs.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger("ladeda.learning")

_GUARD = threading.Lock()
_THREAD: threading.Thread | None = None
#: The last outcome of a learn step in this process (for pages and the benchmark).
last_outcome: Any = None
last_error: str | None = None


def due(store: Any, every: int | None = None) -> bool:
    """True when at least ``every`` (default ``$LADEDA_LEARN_EVERY``) label events arrived since the
    last learn step began; never when learning is off (0)."""
    from core.review.actions.learn import LEARN_JOB, learn_every

    n = learn_every() if every is None else int(every)
    if n <= 0:
        return False
    row = store.jobs.get(LEARN_JOB) or {}
    try:
        done = int(row.get("done_marker") or 0)
    except ValueError:
        done = 0
    return store.label_event_count() - done >= n


def _reopen(store: Any) -> Any:
    """A second connection to the same store (same images, artifacts, clock and review rules)."""
    from core.review.store import ReviewStore

    target = store.db.path if store.db.path is not None else store.db.url.render_as_string(hide_password=False)
    return ReviewStore(target, image_dir=store.image_dir, artifact_dir=store.artifact_dir,
                       clock=store.db._clock, second_review_share=store.second_review_share,
                       lease_seconds=store.lease_seconds)


def running() -> bool:
    """True while this process's learner thread is at work."""
    t = _THREAD
    return t is not None and t.is_alive()


def maybe_learn(store: Any, registry: Any = None, *, every: int | None = None, activate: str | None = None,
                wait: bool = False, **learn_kwargs: Any) -> threading.Thread | None:
    """Start the learner thread when there is work (see module doc); returns it, or None when there
    is nothing to do or it is already running in this process. ``wait`` joins it (the benchmark)."""
    global _THREAD
    from core.model.registry import ModelRegistry
    from core.review.actions.learn import priorities_stale

    registry = registry if registry is not None else ModelRegistry()
    try:
        work = due(store, every) or priorities_stale(store, registry)
    except Exception:  # noqa: BLE001 - the trigger must never break the page that called it
        log.warning("learning trigger failed", exc_info=True)
        return None
    if not work:
        return None
    with _GUARD:
        if _THREAD is not None and _THREAD.is_alive():
            return None
        t = threading.Thread(target=_run, args=(store, registry, every, activate, learn_kwargs),
                             name="ladeda-learner", daemon=True)
        _THREAD = t
        t.start()
    if wait:
        t.join()
    return t


LEARNER_NICE = 19


def _yield_cpu() -> None:
    """Lower this thread's CPU priority (Linux: ``setpriority`` on a thread id affects that thread only)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LEARNER_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the learner still runs, at normal priority
        log.debug("could not lower the learner thread's priority", exc_info=True)


@contextmanager
def _blas_in_this_thread() -> Iterator[None]:
    """One BLAS thread while the learner fits, so its products run in the (low-priority) learner thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it BLAS keeps its pool
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _run(store: Any, registry: Any, every: int | None, activate: str | None, learn_kwargs: dict[str, Any]) -> None:
    global last_outcome, last_error
    from core.review.actions.learn import learn_step, priorities_stale, reprioritise

    _yield_cpu()
    try:
        own = _reopen(store)
    except Exception as exc:  # noqa: BLE001
        last_error = f"cannot open the store for learning: {exc}"
        log.warning(last_error)
        return
    try:
        if priorities_stale(own, registry):
            reprioritise(own, registry)
        if due(own, every):
            with _blas_in_this_thread():
                last_outcome = learn_step(own, registry, activate=activate, **learn_kwargs)
            log.info("learn step: %s", last_outcome.message)
        last_error = None
    except Exception as exc:  # noqa: BLE001 - logged; the next label tries again
        last_error = str(exc)
        log.exception("background learning failed")
    finally:
        own.close()


def wait(timeout: float | None = None) -> None:
    """Wait for this process's learner thread, if any (tests and the benchmark)."""
    t = _THREAD
    if t is not None:
        t.join(timeout)
