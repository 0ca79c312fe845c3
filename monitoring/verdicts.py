"""Champion against challengers and against its baseline, live: one line when a verdict changes.

Pure logic over the rolling logs (testable without a broker or a registry). A verdict needs enough
minutes (`min_minutes`) scored by both sides in the judging window, and compares them on the same
minutes: a challenger loaded after the champion is judged from its own first minute on. A verdict
that holds from its first judgement is said once; one that never holds is never said; each flip after
that is one line. A challenger that starts beating the champion is what `--promote` hands to the gate.
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
    held: dict[tuple[str, ...], bool] = field(default_factory=dict)

    def judge(self, spec: ModelSpec, champion: str | None, logs: dict[str, RollingLog]) -> list[Verdict]:
        """The changes since the last call, for one model's versions (`logs`: version -> its log)."""
        changes: list[Verdict] = []
        if champion is None or champion not in logs:
            return changes
        key, name, w = spec.primary_metric, spec.registered_name, self.window
        champ = logs[champion]
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
            if self._flipped(("beats", spec.name, version, champion), beats):
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
            if self._flipped(("below", spec.name, champion), below):
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

    def _flipped(self, key: tuple[str, ...], now: bool) -> bool:
        """Record a verdict; whether it is news (first judgement true, or any change)."""
        before = self.held.get(key)
        self.held[key] = now
        return now != before if before is not None else now
