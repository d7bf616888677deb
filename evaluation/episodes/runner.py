"""Whole test sets, live: every task becomes one episode; many episodes are in flight at once.

The runner keeps `in_flight` episodes going. Each episode (agent_loop.episode_steps) waits on one
request at a time; requests for the same role are sent together as one batch, so a local export
generates for many episodes in one `generate` call, and an endpoint role gets them concurrently.
Tool calls and judge calls run on worker threads. A role that batches (`serial`: a local model)
takes the next batch when its current one is done; requests that come meanwhile join it.

Each finished episode is one line of `episodes.jsonl` (the simulator's append-only log: flushed
and fsynced per line; a torn last line from a kill is dropped and redone), so a rerun skips the
ids already there. An episode that crashes (a role or executor error after the client's retries)
is recorded as `termination: error` (like `max_steps` it fails in the denominator), but it is not
final: a rerun runs it again, as it does an episode whose judge failed. An endpoint that fails
`down_after` requests in a row (timeouts, 5xx, refused connections; a refused connection at once)
ends the run with EndpointDown (exit 1) once what finished is written; Ctrl-C ends it with one line.
"""
from __future__ import annotations

import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from core.llm_client import TRANSPORT, LLMError, run_sync

from .. import EvaluationError
from ..agent.loop import Request, ToolRequest, episode_steps, finish, new_trajectory
from ..agent.team import Team

JUDGE, TOOL = "judge", "tool"  # the runner's other kinds of work besides the team's roles


@dataclass
class _Episode:
    task: Mapping
    traj: dict
    steps: object
    executor: object
    started: float
    request: Request | None = None
    member_calls: int = 0
    record: dict | None = None
    error: str | None = None
    counters: Counter = field(default_factory=Counter)


class EndpointDown(EvaluationError):
    exit_code = 1  # the endpoint failed for good, not the input


class EpisodesInterrupted(EvaluationError):
    exit_code = 130


def is_final(record: Mapping) -> bool:
    """A record a rerun keeps: not a crash, and judged (or not to be judged) without error."""
    return record.get("termination") != "error" and "error" not in (record.get("verdict") or {})


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class EpisodeRunner:
    def __init__(self, team: Team, make_executor: Callable[[Mapping], object], *, max_steps: int,
                 in_flight: int, judge=None, references: Mapping[str, Mapping] | None = None,
                 unjudged: Sequence[str] = ("error",), progress: bool = True,
                 workers: int | None = None, down_after: int):
        self.team, self.make_executor = team, make_executor
        self.max_steps, self.in_flight = int(max_steps), int(in_flight)
        self.judge, self.references = judge, references or {}
        self.unjudged = set(unjudged) | {"error"}
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=workers or self.in_flight + 4)
        self.stats = Counter()
        self.down_after, self.failing = int(down_after), Counter()  # transport failures in a row, per kind
        self.down: tuple[str, LLMError] | None = None

    # ----- the loop ------------------------------------------------------------------------
    def run(self, tasks: Sequence[Mapping], out: Path) -> list[dict]:
        """Run every task whose id is not in `out` yet; return all records in `out`."""
        from core.append_log import AppendLog
        from tqdm import tqdm

        records: dict[str, dict] = {}
        log = AppendLog(Path(out), lambda r: records.__setitem__(r["id"], r))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        log.load()
        todo = [t for t in tasks if t["id"] not in records or not is_final(records[t["id"]])]
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="episode",
                   disable=not self.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        # one writer thread, in finishing order: the loop does not wait for each line's fsync
        writer, writes = ThreadPoolExecutor(max_workers=1), []

        def write(rec):
            writes.append(writer.submit(lambda: (run_sync(log.append(rec)), bar.update(1))))
        clean = False
        try:
            self._loop(todo, write)
            clean = self.down is None
        except KeyboardInterrupt:
            raise EpisodesInterrupted(f"interrupted; the episodes that finished are in {out}; rerun the "
                                      "same command to run the rest") from None
        finally:
            writer.shutdown(wait=True)
            log.close()
            bar.close()
            self.pool.shutdown(wait=clean, cancel_futures=True)  # requests left end by their timeout
        for done in writes:
            done.result()  # a failed write (disk full, ...) is an error of the run
        if self.down is not None:
            kind, exc = self.down
            raise EndpointDown(f"the {kind} endpoint {exc.url} failed for good ({exc}); the episodes that "
                               f"finished are in {out}; rerun the same command once it answers")
        self.stats["wall_s"] = time.perf_counter() - t0
        self.stats["episodes_run"] = len(todo)
        return [records[t["id"]] for t in tasks if t["id"] in records]

    def _loop(self, todo: list[Mapping], write: Callable[[dict], None]) -> None:
        queue = list(reversed(todo))
        active: list[_Episode] = []
        pending: dict[str, list[_Episode]] = {role: [] for role in self.team.members}
        running: dict[Future, tuple[str, list[_Episode]]] = {}
        busy: set[int] = set()
        while (queue or active) and self.down is None:
            while queue and len(active) < self.in_flight:
                ep = self._start(queue.pop())
                active.append(ep)
                if ep.record is not None:  # no executor for it
                    self._finish(ep, running, active, write)
                else:
                    self._route(ep, pending, running)
            for role, eps in pending.items():
                member = self.team.members[role]
                if eps and not (getattr(member, "serial", False) and id(member) in busy):
                    busy.add(id(member))
                    running[self.pool.submit(self._batch, role, [e.traj for e in eps])] = (role, eps)
                    pending[role] = []
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                kind, eps = running.pop(fut)
                if kind in self.team.members:
                    busy.discard(id(self.team.members[kind]))
                try:
                    answers = fut.result()
                except BaseException as exc:  # noqa: BLE001 - counted as the episode's outcome
                    answers = [_Failed(exc)] * len(eps)
                if any(self._endpoint_down(kind, a) for a in answers):
                    return  # what finished is written; the rest is run again on rerun
                for ep, answer in zip(eps, answers):
                    if kind == JUDGE:
                        ep.record["verdict"] = answer if not isinstance(answer, _Failed) else \
                            {"error": describe(answer.exc)}
                        self._close(ep, active, write)
                        continue
                    if kind in self.team.members:
                        ep.member_calls += 1
                    self._advance(ep, answer)
                    if ep.record is not None:
                        self._finish(ep, running, active, write)
                    else:
                        self._route(ep, pending, running)

    def _endpoint_down(self, kind: str, answer) -> bool:
        exc = answer.exc if isinstance(answer, _Failed) else None
        if not (isinstance(exc, LLMError) and exc.reason in TRANSPORT):
            self.failing[kind] = 0
            return False
        self.failing[kind] += 1
        if exc.reason == "connection_errors" or self.failing[kind] >= self.down_after:
            self.down = (kind, exc)
        return self.down is not None

    def _start(self, task: Mapping) -> _Episode:
        traj = new_trajectory(task, self.max_steps)
        ep = _Episode(task, traj, episode_steps(traj), None, time.perf_counter())
        try:
            ep.executor = self.make_executor(task)
            ep.request = next(ep.steps)
        except Exception as exc:  # noqa: BLE001
            self._crash(ep, exc)
        return ep

    def _advance(self, ep: _Episode, answer) -> None:
        if isinstance(answer, _Failed):
            self._crash(ep, answer.exc)
            return
        try:
            ep.request = ep.steps.send(answer)
        except StopIteration as stop:
            ep.record = self._record(ep, stop.value)
        except Exception as exc:  # noqa: BLE001 - e.g. a trajectory the schema rejects
            self._crash(ep, exc)

    def _crash(self, ep: _Episode, exc: BaseException) -> None:
        ep.steps.close()
        self.stats["errors"] += 1
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        ep.record = self._record(ep, finish(ep.traj, "error", error=detail))

    def _route(self, ep: _Episode, pending, running) -> None:
        if ep.record is not None:
            return
        if isinstance(ep.request, ToolRequest):
            fut = self.pool.submit(self._tool, ep.executor, ep.request.name, ep.request.arguments)
            running[fut] = (TOOL, [ep])
        else:
            pending[ep.request.role].append(ep)

    def _finish(self, ep: _Episode, running, active, write) -> None:
        ref = self.references.get(ep.task["id"])
        if self.judge is not None and ep.record["termination"] not in self.unjudged:
            running[self.pool.submit(self._judge, ref, ep.record["trajectory"])] = (JUDGE, [ep])
        else:
            self._close(ep, active, write)

    def _close(self, ep: _Episode, active, write) -> None:
        counters = getattr(ep.executor, "counters", None) or {}
        ep.record["executor"] = dict(counters)
        ep.record["llm_calls"] = ep.member_calls + int(counters.get("llm_calls", 0)) + \
            int((ep.record.get("verdict") or {}).get("llm_calls", 0))
        ep.record["seconds"] = round(time.perf_counter() - ep.started, 3)
        closer = getattr(ep.executor, "close", None)
        if closer is not None:
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        active.remove(ep)
        self.stats["llm_calls"] += ep.record["llm_calls"]
        write(ep.record)

    # ----- work on the pool --------------------------------------------------------------------
    def _batch(self, role: str, trajs: list[dict]) -> list:
        def method(batch):
            return self.team.act(role, batch)
        try:
            return method(trajs)
        except Exception:  # noqa: BLE001 - find the episode at fault: ask each alone, all at once
            if len(trajs) == 1:
                raise

        def alone(traj):
            try:
                return method([traj])[0]
            except Exception as exc:  # noqa: BLE001
                return _Failed(exc)
        with ThreadPoolExecutor(max_workers=len(trajs)) as each:
            return list(each.map(alone, trajs))

    @staticmethod
    def _tool(executor, name: str, arguments: str) -> list:
        return [executor.execute(name, arguments)]

    def _judge(self, reference, trajectory) -> list:
        return [self.judge.verdict(reference, trajectory)]

    @staticmethod
    def _record(ep: _Episode, traj: dict) -> dict:
        meta = traj["meta"]
        return {"id": traj["id"], "api": (ep.task.get("meta") or {}).get("api"),
                "termination": meta["termination"], "steps": meta["steps"],
                "error": meta.get("error"), "trajectory": traj, "verdict": None}


def summarize(records: Sequence[Mapping], stats: Mapping, n_tasks: int) -> dict:
    """Outcome counts over all records, and this invocation's throughput."""
    terms = Counter(r["termination"] for r in records)
    wall = float(stats.get("wall_s") or 0.0)
    run = int(stats.get("episodes_run") or 0)
    return {"tasks": n_tasks, "episodes": len(records), "terminations": dict(sorted(terms.items())),
            "concluded": terms.get("conclusion", 0), "errors": terms.get("error", 0),
            "run": {"episodes": run, "wall_s": round(wall, 3),
                    "episodes_per_s": round(run / wall, 4) if wall else None,
                    "llm_calls": int(stats.get("llm_calls") or 0),
                    "llm_calls_per_s": round(stats.get("llm_calls", 0) / wall, 4) if wall else None}}
