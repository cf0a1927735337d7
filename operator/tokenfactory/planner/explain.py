"""The one place where the planner's structured reasons become text (for ``kubectl describe``,
Events and the benchmark). The engine builds :class:`Reason` values (a code and its parameters);
:func:`render` turns one into a phrase, :func:`render_pool` / :func:`render_summary` /
:func:`render_capacity` join them into the lines a :class:`Plan` and a ``CapacityState`` carry.

Codes (parameters in brackets):

* pool lines: ``pool.change`` / ``pool.stay`` [pool, current, target], ``need.headroom`` [demand,
  headroom, required], ``role.*`` (why the pool takes its share: ``cheapest``, ``adds``, ``min``,
  ``max_zero``, ``no_demand``, ``no_room``, ``not_needed``), ``cheaper.*`` (why a cheaper pool takes
  no more), ``others`` [items], ``learned`` [capacity, profile], ``note`` [note, optimum] around the
  stabilisation notes (``defer``, ``down.*``, ``released``), ``serving_most``; while holding:
  ``holding`` [problem], ``hold.lowered``, ``hold.clamped``;
* the summary: ``summary.plan`` [demand, demand_note, headroom, required, mix, capacity, cost] then
  ``summary.per_mtok``, ``summary.mw``, ``summary.minimums``, ``summary.limited``,
  ``summary.over_cost``; ``demand.observed`` is the demand note; ``band.*`` the hysteresis band;
* capacity learning: ``cap.*`` (``profile``, ``settle_start``, ``settle_wait``, ``light_latency``,
  ``saturated``, ``latency``, ``utilization``, ``lower``) and ``cap.update`` [estimate, new, profile].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tokenfactory.planner.types import INF, Reason


def tok(x: float) -> str:
    return f"{x:,.0f}"


def usd(x: float) -> str:
    return f"${x:,.2f}"


def mtok(x: float) -> str:
    return f"${x:.4f}" if x < 0.01 else f"${x:,.2f}"


def limits_text(budget: float | None, megawatts: float | None) -> str:
    parts = []
    if budget is not None:
        parts.append(f"the {usd(budget)}/h budget")
    if megawatts is not None:
        parts.append(f"the {megawatts:g} MW power cap")
    return " and ".join(parts) or "maxReplicas"


def limited_text(limited_by: Iterable[str], budget: float | None, megawatts: float | None) -> str:
    parts = []
    for what in limited_by:
        if what == "budget" and budget is not None:
            parts.append(f"the {usd(budget)}/h budget")
        elif what == "power" and megawatts is not None:
            parts.append(f"the {megawatts:g} MW power cap")
        elif what == "maxReplicas":
            parts.append("maxReplicas")
    return " and ".join(parts) or "the limits"


def _price(eff: float) -> str:
    return f"{mtok(eff)}/Mtok at capacity" if eff < INF else "no capacity"


def _cheaper(a: dict[str, Any]) -> str:
    return "; ".join(render(x) for x in a["cheaper"])


def _state_line(a: dict[str, Any], why: str) -> str:
    return f"{a['pool']} {a['n']} x {tok(a['cap'])} = {tok(a['n'] * a['cap'])} tok/s, {why}"


def _backlog(a: dict[str, Any]) -> str:
    txt = f"backlog {tok(a['backlog'])}"
    if a["queued_tokens"] > 0:
        txt += (f" ({a['waiting']:,.0f} waiting x {tok(a['tokens_per_request'])} tok/request"
                + (f", {tok(a['drained'])} tok of it drained by {tok(a['spare'])} tok/s"
                   f" spare capacity within the {a['startup']:.0f}s start-up" if a["drained"] > 0 else "")
                + (f", the rest over {a['drain_seconds']:.0f}s" if a["backlog"] > 0 else "") + ")")
    return txt


def _plan(a: dict[str, Any]) -> str:
    note = render(a["demand_note"]) if a["demand_note"] is not None else ""
    mix = ", ".join(f"{name}={n}" for name, n in a["mix"])
    return (f"demand {tok(a['demand'])} tok/s{note} x{1 + a['headroom']:g} headroom = {tok(a['required'])} tok/s; "
            f"plan {mix}: {tok(a['capacity'])} tok/s for {usd(a['cost'])}/h")


def _quantile(a: dict[str, Any]) -> str:
    src = (f"error measured over {a['samples']} intervals" if a["measured"]
           else f"prior error band, {a['samples']} intervals measured so far")
    return (f"its {a['quantile']:.3g} quantile over the {a['horizon']:.0f}s start-up is {a['error']:+.1%} "
            f"({src})")


def _need_slo(a: dict[str, Any]) -> str:
    txt = f"demand {tok(a['demand'])} tok/s forecast, {_quantile(a)}"
    if a.get("peak") is not None:
        txt += (f", at most the recurring peak {tok(a['peak'])} tok/s of the last {a['peak_seconds'] / 3600:g} h "
                f"x{1 + a['peak_band']:.3g} (the band of the peak's own level or of every level, the lower)")
    txt += f": needs {tok(a['required'])} tok/s at the loads the latency objectives allow"
    if a["floor"] is not None:
        txt += (f" (headroom floor x{1 + a['floor']:g} " + ("binds" if a["floor_binds"] else "does not bind") + ")")
    return txt


def _slo_plan(a: dict[str, Any]) -> str:
    note = render(a["demand_note"]) if a["demand_note"] is not None else ""
    mix = ", ".join(f"{name}={n}" for name, n in a["mix"])
    need = a["need"].as_dict
    floor = ""
    if need["floor"] is not None and need["floor_binds"]:
        floor = f", headroom floor x{1 + need['floor']:g}"
    return (f"demand {tok(a['demand'])} tok/s{note}; SLO plan for the {need['quantile']:.3g} quantile "
            f"({need['error']:+.1%}{floor}) = {tok(a['required'])} tok/s at latency-safe loads; "
            f"plan {mix}: {tok(a['capacity'])} tok/s for {usd(a['cost'])}/h")


def _slo_bound(a: dict[str, Any]) -> str:
    head = (f"{a['pool']} planned at {a['fraction']:.0%} of profile capacity ({tok(a['tokens_per_second'])} "
            f"tok/s/replica)")
    curve = ("calibrated latency curve" if a["prior"] else "no calibrated latency curve")
    learned = (f", load scale x{a['scale']:.2f} learned over {a['observations']} intervals" if a["observations"]
               else "")
    if a["at_max"]:
        return f"{head}: {a['metric']} p95 stays within {a['objective']:g}s up to full load ({curve}{learned})"
    noise = ""
    if a["margin"]:
        noise = (f"; typical window at {a['typical']:.0%}, {a['margin']:.1%} below it for the {a['quantile']:.3g} "
                 f"quantile window's load")
    return f"{head}: bound by {a['metric']} p95 {a['objective']:g}s ({curve}{learned}{noise})"


def _saturated(a: dict[str, Any]) -> str:
    why = f"{a['waiting']:.1f} waiting/replica" if a["kv"] is None else f"KV cache {a['kv']:.0%}"
    if a["itl"] is not None:
        why += f", ITL p95 {a['itl']:.3g}s over {a['itl_objective']:g}s"
    return f"saturated ({why}): delivering {tok(a['delivered'])} tok/s/replica"


def _band(a: dict[str, Any]) -> str:
    return (f"{a['multiple']:g} x the {a['noise']:.2%} standard deviation of demand around its trend over "
            f"{a['window']:.0f}s" + (f", capped at {a['cap']:.0%}" if a["capped"] else ""))


def _defer(a: dict[str, Any]) -> str:
    return (f"scale-up waits: queue for {a['queued_for']:.0f}s; the last {a['count']} "
            f"excursion(s) above capacity were over within {a['longest']:.0f}s (<= the {a['horizon']:.0f}s "
            f"start-up), so replicas ordered at their start served after them; ordering if "
            f"this one lasts {a['longest']:.0f}s (scale-up to {a['optimum']})")


def _limits(a: dict[str, Any]) -> str:
    return limits_text(a["budget"], a["megawatts"])


TEMPLATES: dict[str, Callable[[dict[str, Any]], str]] = {
    # pool lines
    "pool.change": lambda a: f"{a['pool']}: {a['current']} -> {a['target']}",
    "pool.stay": lambda a: f"{a['pool']}: stays at {a['current']}",
    "need.headroom": lambda a: (f"demand {tok(a['demand'])} tok/s forecast x{1 + a['headroom']:g} headroom needs "
                                f"{tok(a['required'])} tok/s"),
    "role.cheapest": lambda a: (f"{a['pool']} is cheapest per token ({_price(a['eff'])}): {a['n']} x {tok(a['cap'])} = "
                                f"{tok(a['n'] * a['cap'])} tok/s"),
    "role.adds": lambda a: (f"{a['pool']} ({_price(a['eff'])}, #{a['rank'] + 1} by cost per token) adds "
                            f"{a['n']} x {tok(a['cap'])} = {tok(a['n'] * a['cap'])} tok/s beyond cheaper pools "
                            f"({_cheaper(a)})"),
    "role.min": lambda a: f"{a['pool']} held at minReplicas {a['min']} ({_price(a['eff'])})",
    "role.max_zero": lambda a: f"{a['pool']} has maxReplicas 0",
    "role.no_demand": lambda a: f"{a['pool']} covers 0 ({_price(a['eff'])}): no demand",
    "role.no_room": lambda a: f"{a['pool']} covers 0 ({_price(a['eff'])}): no room within {_limits(a)}",
    "role.not_needed": lambda a: f"{a['pool']} covers 0 ({_price(a['eff'])}; cheaper pools cover the need)",
    "cheaper.at_max": lambda a: f"{a['pool']} at maxReplicas {a['max']} = {tok(a['n'] * a['cap'])} tok/s",
    "cheaper.budget": lambda a: _state_line(a, f"one more does not fit the {usd(a['budget'])}/h budget"),
    "cheaper.power": lambda a: _state_line(a, f"one more does not fit the {a['megawatts']:g} MW power cap"),
    "cheaper.costlier": lambda a: _state_line(a, f"one more {a['pool']} replica would cost more than covering the "
                                                 f"rest here"),
    "others": lambda a: ", ".join(f"{name} covers {tok(n * cap)}" + (f" ({n} x {tok(cap)})" if n else "")
                                  for name, n, cap in a["items"]),
    "learned": lambda a: f"learned capacity {tok(a['capacity'])} tok/s/replica vs profile {tok(a['profile'])}",
    "note": lambda a: f"{render(a['note'])} (optimum {a['optimum']})",
    "serving_most": lambda a: "serving the most that fits",
    "need.slo": _need_slo,
    "slo.bound": _slo_bound,
    "slo.no_latency_objective": lambda a: (f"{a['pool']} planned at {a['fraction']:.0%} of capacity "
                                           f"(no latency objective)"),
    "holding": lambda a: f"holding: metrics unavailable ({a['problem']})",
    "hold.lowered": lambda a: f"lowered to stay within {_limits(a)}",
    "hold.clamped": lambda a: f"kept within minReplicas {a['min']} .. maxReplicas {a['max']}",
    # stabilisation notes
    "defer": _defer,
    "down.hysteresis": lambda a: (f"scale-down to {a['optimum']} waits: {a['keep']} would be needed at "
                                  f"{a['band']:.1%} more demand (scale-down hysteresis: {render(a['band_why'])})"),
    "down.window": lambda a: (f"scale-down to {a['optimum']} waits: up to {a['window_max']} recommended within the "
                              f"last {a['window']:.0f}s stabilization window"),
    "down.flap": lambda a: (f"scale-down keeps one replica above the optimum {a['optimum']}: {a['pool']} went back "
                            f"up past a scale-down within the last {a['memory']:.0f}s (the optimum sits at a replica "
                            f"boundary)"),
    "down.step": lambda a: f"scale-down to {a['optimum']} limited to {a['step']} replica(s) per interval",
    "released": lambda a: (f"released early to stay within {_limits(a)}"
                           + (f" ({render(a['inner'])})" if a["inner"] is not None else "")),
    "band.disabled": lambda a: "disabled",
    "band.warmup": lambda a: f"{a['cap']:.0%} until the demand noise is measured",
    "band.no_demand": lambda a: "no demand",
    "band.noise": _band,
    # the summary (each part after the first carries its own separator)
    "summary.plan": _plan,
    "summary.slo": _slo_plan,
    "summary.per_mtok": lambda a: f" ({mtok(a['per_mtok'])}/Mtok at {tok(a['served'])} tok/s)",
    "summary.stopped": lambda a: (f"; time budget reached after {a['nodes']:,} search nodes: best mix found so far, "
                                  f"not proven cheapest"),
    "summary.mw": lambda a: f", {a['kilowatts'] / 1000:.3g} MW",
    "summary.minimums": lambda a: (f"; minReplicas alone ({usd(a['dollars'])}/h, {a['kilowatts'] / 1000:.3g} MW) "
                                   f"exceed {_limits(a)}: keeping the minimums"),
    "summary.limited": lambda a: (f"; cannot meet {tok(a['required'])} tok/s within "
                                  f"{limited_text(a['limited_by'], a['budget'], a['megawatts'])}: serving the most "
                                  f"that fits ({tok(a['capacity'])} tok/s"
                                  + ("" if a["unserved"] is None else f", {tok(a['unserved'])} tok/s of demand unserved")
                                  + ")"),
    "summary.over_cost": lambda a: (f"; expected {mtok(a['per_mtok'])}/Mtok is over the "
                                    f"{mtok(a['objective'])}/Mtok objective"),
    "demand.observed": lambda a: (f" (observed {tok(a['observed'])} + {_backlog(a)}, smoothed {tok(a['level'])}, "
                                  f"trend {a['trend']:+,.1f} tok/s/s over {a['horizon']:.0f}s start-up)"),
    # capacity learning
    "cap.profile": lambda a: "profile",
    "cap.settle_start": lambda a: (f"{a['ready']} ready replica(s) since now: waiting {a['settle']:.0f}s for rates "
                                   f"to settle"),
    "cap.settle_wait": lambda a: (f"{a['ready']} ready replica(s) for {a['age']:.0f}s: waiting {a['settle']:.0f}s "
                                  f"for rates to settle"),
    "cap.light_latency": lambda a: (f"latency over objective at light load ({tok(a['delivered'])} tok/s/replica): not "
                                    f"a capacity limit, estimate kept at {tok(a['estimate'])} tok/s/replica"),
    "cap.saturated": _saturated,
    "cap.latency": lambda a: (f"latency over objective at {tok(a['delivered'])} tok/s/replica "
                              f"(latency-bounded capacity {tok(a['value'])})"),
    "cap.utilization": lambda a: (f"healthy at {tok(a['delivered'])} tok/s/replica with KV cache {a['kv']:.0%} "
                                  f"(extrapolates to {tok(a['value'])})"),
    "cap.lower": lambda a: f"healthy at {tok(a['delivered'])} tok/s/replica (capacity at least that)",
    "cap.update": lambda a: (f"estimate {tok(a['estimate'])} -> {tok(a['new'])} tok/s/replica "
                             f"(profile {tok(a['profile'])})"),
}


def render(reason: Reason) -> str:
    """One reason as a phrase."""
    try:
        template = TEMPLATES[reason.code]
    except KeyError:
        raise ValueError(f"unknown planner reason code {reason.code!r}") from None
    return template(reason.as_dict)


def render_pool(why: Sequence[Reason]) -> str:
    """A pool line: ``head: first; second; ...``."""
    if not why:
        return ""
    text = render(why[0])
    if len(why) > 1:
        text += ": " + "; ".join(render(r) for r in why[1:])
    return text


def render_summary(why: Sequence[Reason]) -> str:
    """The plan's summary: the parts one after another (each carries its separator)."""
    return "".join(render(r) for r in why)


def render_capacity(why: Sequence[Reason]) -> str:
    """A capacity estimator's reason: the observation, then the update."""
    return "; ".join(render(r) for r in why)
