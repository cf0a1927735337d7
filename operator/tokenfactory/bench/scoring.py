"""Scoring across policies: the best-variant pick and the targets, checked per trace."""

from __future__ import annotations

SLO_TARGET = 0.99


def pick_best_hpa(results: dict[str, dict], names: list[str]) -> str:
    """The best HPA variant, SLO first: the cheapest variant whose SLO attainment is >= 99%; when
    none reaches it, the highest SLO attainment (to 0.1%), then the lowest cost. A variant that is
    cheap because it drops demand is not the best."""
    meeting = [n for n in names if results[n]["slo_attainment"] >= SLO_TARGET]
    if meeting:
        return min(meeting, key=lambda n: (results[n]["cost_dollars"], n))
    return min(names, key=lambda n: (-round(results[n]["slo_attainment"], 3), results[n]["cost_dollars"], n))



def targets(report: dict) -> dict:
    """The brief's targets, checked per trace (reported, not tuned for)."""
    out = {}
    for tname, res in report["traces"].items():
        tf, orc, hpa = res["tokenfactory"], res["oracle"], res["hpa"]
        out[tname] = {
            "cost_vs_oracle": tf["cost_dollars"] / orc["cost_dollars"],
            "within_1_05_of_oracle": tf["cost_dollars"] <= 1.05 * orc["cost_dollars"],
            "slo_at_least_99": tf["slo_attainment"] >= 0.99,
            # the first target is both together: a policy that misses the SLO can undercut the oracle
            "cost_and_slo_target_met": (tf["cost_dollars"] <= 1.05 * orc["cost_dollars"]
                                        and tf["slo_attainment"] >= 0.99),
            "saving_vs_best_hpa": 1 - tf["cost_dollars"] / hpa["cost_dollars"],
            "at_least_25pct_cheaper_than_hpa": tf["cost_dollars"] <= 0.75 * hpa["cost_dollars"],
            "hpa_variant": hpa["variant"],
            "hpa_slo_attainment": hpa["slo_attainment"],
        }
        if "hpa_both" in res:
            out[tname]["saving_vs_hpa_both"] = 1 - tf["cost_dollars"] / res["hpa_both"]["cost_dollars"]
    return out

