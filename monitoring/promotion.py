"""What `--promote` hands a challenger to: training's champion/challenger gate, never the monitor's own say.

The live verdict only says a challenger did better on the last minutes of the stream; the gate decides on
rows none of the versions trained on (the batch files), and refuses one that does not beat the naive
baseline, exactly as `btcflow promote --best --require-baseline`. It starts Spark, so training is imported
only when a hand-off happens: the monitor's scoring path never loads the JVM bridge.
"""

from __future__ import annotations

from collections.abc import Callable

from training.settings import TrainingSettings

Gate = Callable[[str], str]  # model kind -> what the gate did, in one line


def promotion_gate(settings: TrainingSettings) -> Gate:
    """training.gate.promote_best (training.registry.promote_best's home), recorded as made `by` monitor."""

    def gate(kind: str) -> str:
        from training.gate import promote_best

        return promote_best(settings, kind, require_baseline=True, by="monitor").message

    return gate
