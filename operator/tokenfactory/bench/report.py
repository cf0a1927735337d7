"""The report: the text table and one PNG per trace (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

from tokenfactory.bench.scenario import Setup

def table(report: dict) -> str:
    lines = []
    hdr = (f"{'trace':<9} {'policy':<26} {'cost $':>9} {'$/Mtok':>7} {'SLO %':>6} {'changes':>7} "
           f"{'dropped Mtok':>12} {'late Mtok':>9}  notes")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for tname, res in report["traces"].items():
        for n, r in res.items():
            note = r.get("note", "")
            if "variant" in r:
                note = f"best of {len(r.get('grid', []))}: {r['variant']}"
            cpm = f"{r['cost_per_mtok']:.3f}" if r["cost_per_mtok"] is not None else "-"
            lines.append(f"{tname:<9} {n:<26} {r['cost_dollars']:>9,.0f} {cpm:>7} {100 * r['slo_attainment']:>6.1f} "
                         f"{r['replica_changes']:>7} {r['tokens_dropped'] / 1e6:>12.2f} {r['tokens_late'] / 1e6:>9.1f}  "
                         f"{note[:90]}")
        lines.append("")
    return "\n".join(lines)


def targets_text(targets: list[dict]) -> str:
    """One line per target and trace: met / MISSED / n/a, with the figures."""
    lines = ["targets (issue 16 item 6; full mode is the one that counts):"]
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  [{verdict:>6}] {t['trace']:<9} {t['target']}: {t['detail']}")
    return "\n".join(lines)


def plot(path: Path, tname: str, timelines: dict[str, list[dict]], results: dict[str, dict], setup: Setup) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["tokenfactory", "oracle", "hpa"]
    pools = [p.name for p in setup.profiles]
    colors = {pools[i]: c for i, c in enumerate(["tab:green", "tab:orange", "tab:purple", "tab:brown"][:len(pools)])}
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 3 * (len(shown) + 1)), sharex=True)
    for ax, name in zip(axes, shown):
        tl = timelines[name]
        hours = [r["t"] / 3600 for r in tl]
        stacks = [[r["capacity"].get(p, 0.0) / 1000 for r in tl] for p in pools]
        ax.stackplot(hours, *stacks, labels=[f"{p} capacity" for p in pools], colors=[colors[p] for p in pools],
                     alpha=0.6, step="pre")
        ax.plot(hours, [r["demand"] / 1000 for r in tl], color="black", lw=1.2, label="demand")
        bad = [h for h, r in zip(hours, tl) if not r["ok"]]
        if bad:
            ax.plot(bad, [0] * len(bad), "|", color="red", ms=8, label="SLO missed")
        r = results[name]
        title = f"{name} (best of the grid: {r['variant']})" if "variant" in r else name
        ax.set_title(f"{tname}: {title} — \\${r['cost_dollars']:,.0f}, "
                     f"\\${r['cost_per_mtok'] or 0:.3f}/Mtok, SLO {100 * r['slo_attainment']:.1f}%", fontsize=10)
        ax.set_ylabel("K tok/s")
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[-1]
    for name, c in zip(shown, ["tab:blue", "black", "tab:red"]):
        tl = timelines[name]
        k = max(1, int(round(600 / setup.interval)))  # 10-minute rolling $/Mtok
        xs, ys = [], []
        for i in range(len(tl)):
            w = tl[max(0, i - k + 1): i + 1]
            tok = sum(r["tokens"] for r in w)
            if tok > 0:
                xs.append(tl[i]["t"] / 3600)
                ys.append(sum(r["cost"] for r in w) / (tok / 1e6))
        ax.plot(xs, ys, color=c, lw=1, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("\\$/Mtok (10 min rolling)")
    ax.set_xlabel("hours")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

