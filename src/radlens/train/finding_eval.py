"""How a finding trainer (ClassFine, VocabFine) ends: thresholds on validation into ``best/``, test metrics in ``eval/``.

:class:`FindingEvaluation` is handed to :func:`radlens.train.run.run` as ``best_extra`` (called with
the best weights in place: validation scores, thresholds chosen on them) and then :meth:`write` scores
the test split with those thresholds (patient-bootstrap CIs, per scan) into ``RUN/eval/``
(``metrics.json``, ``predictions.csv``, ``run.json``) and prints the macro line of
:func:`radlens.metrics.explain.macro_line`, which says over which findings it was taken and why any
was left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.metrics.findings import ThresholdMethod

if TYPE_CHECKING:
    import pandas as pd


class FindingEvaluation:
    """Validation thresholds (stored in the ``best/`` bundle under ``key``) and test metrics of a finding model.

    ``scores(split)`` returns the :func:`radlens.metrics.findings.scan_scores` table of a split with
    the model's current weights.
    """

    def __init__(self, key: str, scores: Callable[[str], pd.DataFrame], findings: Sequence[str],
                 threshold_method: ThresholdMethod, n_bootstrap: int, seed: int) -> None:
        self.key, self.scores, self.findings = key, scores, list(findings)
        self.threshold_method, self.n_bootstrap, self.seed = threshold_method, n_bootstrap, seed
        self.validation: pd.DataFrame | None = None

    def __call__(self, _task: Any) -> dict[str, Any]:
        """``best_extra`` of :func:`radlens.train.run.run`: thresholds chosen on the validation split."""
        from radlens.metrics.findings import validation_thresholds

        self.validation = self.scores("validation")
        chosen = validation_thresholds(self.validation, self.findings, self.threshold_method)
        return {self.key: {"thresholds": chosen, "threshold_method": self.threshold_method}}

    def write(self, run_dir: Path, command: str, config: dict[str, Any], label: str) -> dict[str, Any]:
        """Score the test split with the validation thresholds into ``run_dir/eval``; print and return the metrics."""
        from radlens.common.runinfo import run_info, write_results
        from radlens.metrics.explain import macro_line
        from radlens.metrics.findings import finding_results

        if self.validation is None:
            self.validation = self.scores("validation")
        metrics, predictions = finding_results(self.validation, self.scores("test"), self.findings,
                                               self.threshold_method, self.n_bootstrap, self.seed)
        metrics["split"] = "test"
        # eval/ is this run's own folder (one from before output markers has none): write into it, deleting nothing.
        write_results(run_dir / "eval", metrics, predictions, run_info(command, config, self.seed), overwrite=True)
        shown = (("auroc", "AUROC"), ("f1", "F1"))
        print(f"{label} on test: {macro_line(metrics, shown)} -> {run_dir / 'eval'}", flush=True)
        return metrics
