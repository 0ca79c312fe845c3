"""Champion against challengers and against its baseline, live: one line when a verdict changes.

Pure logic over the rolling logs (testable without a broker or a registry). A verdict needs enough
minutes (`min_minutes`) scored by both sides in the judging window, and compares them on the same
minutes: a challenger loaded after the champion is judged from its own first minute on. A verdict
that holds from its first judgement is said once; one that never holds is never said; a flip after that
is said once it has held for `hold` minutes of event time (a 60-minute roc_auc near 0.5 would otherwise
flip every few minutes). A challenger that starts beating the champion is what `--promote` hands to the
gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.windows import BASELINES, RollingLog, metrics
from training.specs import ModelSpec


@dataclass(frozen=True)
class Verdict:
    """One change of verdict, said in `line`; `challenger` when a challenger starts beating Production."""

    model: str
    line: str
    challenger: str | None = None


def _figure(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class Judge:
    """Remembers the last verdict of each (challenger, champion) pair and of each champion's baseline."""

    window: int
    min_minutes: int
    hold: int = 5
    held: dict[tuple[str, ...], bool] = field(default_factory=dict)
    pending: dict[tuple[str, ...], int] = field(default_factory=dict)  # a flip not said yet: since minute

    def judge(self, spec: ModelSpec, champion: str | None, logs: dict[str, RollingLog]) -> list[Verdict]:
        """The changes since the last call, for one model's versions (`logs`: version -> its log)."""
        changes: list[Verdict] = []
        if champion is None or champion not in logs:
            return changes
        key, name, w = spec.primary_metric, spec.registered_name, self.window
        champ = logs[champion]
        minute = champ.newest or 0
        for version, log in logs.items():
            if version == champion or log.first is None or champ.first is None:
                continue
            since = max(log.first, champ.first)
            mine, theirs = (
                metrics(log.kind, log.window(w, since)),
                metrics(champ.kind, champ.window(w, since)),
            )
            n = int(min(mine["minutes"], theirs["minutes"]))
            if n < self.min_minutes:
                continue
            beats = spec.better(mine[key], theirs[key])
            if self._flipped(("beats", spec.name, version, champion), beats, minute):
                verb = "beats" if beats else "no longer beats"
                changes.append(
                    Verdict(
                        spec.name,
                        f"{name} v{version} {verb} Production v{champion} live: {key} "
                        f"{_figure(mine[key])} vs {_figure(theirs[key])} over the last {w} minutes "
                        f"({n} scored)",
                        version if beats else None,
                    )
                )
        own = metrics(champ.kind, champ.window(w))
        if own["minutes"] >= self.min_minutes:
            below = spec.better(own[f"baseline_{key}"], own[key])
            if self._flipped(("below", spec.name, champion), below, minute):
                state = "is below its baseline" if below else "is back above its baseline"
                changes.append(
                    Verdict(
                        spec.name,
                        f"{name} Production v{champion} {state} live: {key} {_figure(own[key])} vs "
                        f"{_figure(own[f'baseline_{key}'])} for {BASELINES[spec.kind]}, over the last "
                        f"{w} minutes ({int(own['minutes'])} scored)",
                    )
                )
        return changes

    def forget(self, model: str, version: str) -> None:
        """A version left the lineup: the verdicts it took part in go (a return is judged afresh)."""
        for memory in (self.held, self.pending):
            for key in [k for k in memory if k[1] == model and version in k[2:]]:
                del memory[key]

    def _flipped(self, key: tuple[str, ...], now: bool, minute: int) -> bool:
        """Record a verdict at `minute`; whether it is news: a first judgement that holds, or a change
        that has held for `hold` minutes."""
        before = self.held.get(key)
        if before is None:
            self.held[key] = now
            return now
        if now == before:
            self.pending.pop(key, None)
            return False
        since = self.pending.setdefault(key, minute)
        if minute - since < self.hold:
            return False
        self.held[key] = now
        del self.pending[key]
        return True
