"""The report's charts: Altair specifications rendered to static SVG by vl-convert, so the page carries them
inline and needs no JavaScript, no network and no fonts from elsewhere (it prints as drawn)."""

from __future__ import annotations

import altair as alt
import vl_convert

from assets.reports.report import ENTITY_LABELS, Report, TenantReport

FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
STATUS = ["In agreement", "Needs attention", "Noted, nothing to do"]
STATUS_COLORS = ["#3f8f5f", "#c8553d", "#a9b4c2"]
# one colour per entity across every chart of the page
ENTITY_DOMAIN = list(ENTITY_LABELS.values())
ENTITY_COLORS = ["#e39b3b", "#31639c", "#6a9fb5", "#8a6bb1", "#5b8c5a", "#b05a7a"]
WIDTH = 320  # half-page charts: drawn at about the size they are shown, so 12 px text stays 12 px
WIDE = 900


def _count_x(field: str, title: str, largest: int) -> alt.X:
    """A stacked count axis with whole-number ticks at a round step (1, 2, 5, 10, 20, 50, ...): a count of 1 gets
    no 0.5 tick, and the scale ends on the last tick."""
    step = next(m * 10 ** e for e in range(15) for m in (1, 2, 5) if largest / (m * 10 ** e) <= 10)
    end = max(step, -(-largest // step) * step)
    return alt.X(field, title=title, stack="zero", scale=alt.Scale(domain=[0, end], nice=False),
                 axis=alt.Axis(values=list(range(0, end + 1, step)), format="d"))


def _svg(chart: alt.TopLevelMixin) -> str:
    spec = (chart.configure(font=FONT, background="transparent")
            .configure_view(stroke=None)
            .configure_axis(labelFontSize=12, titleFontSize=12, labelColor="#334155", titleColor="#334155",
                            gridColor="#e6e9ef", domainColor="#cbd2db", tickColor="#cbd2db")
            .configure_legend(labelFontSize=12, titleFontSize=12, orient="bottom", direction="horizontal",
                              labelColor="#334155", titleColor="#334155", symbolType="square")
            .to_dict())
    svg = vl_convert.vegalite_to_svg(spec)
    # scale with the page: the browser keeps the aspect ratio from the viewBox
    return svg.replace("<svg ", '<svg role="img" class="chart" preserveAspectRatio="xMinYMin meet" ', 1)


def _bar_height(rows: int) -> int:
    return max(60, 28 * rows)


def _entities_in(rows: list[dict]) -> alt.Color:
    """Entity colours from the fixed page-wide scale, the legend listing only the entities drawn."""
    present = [e for e in ENTITY_DOMAIN if any(r["entity"] == e for r in rows)]
    return alt.Color("entity:N", title=None, scale=alt.Scale(domain=ENTITY_DOMAIN, range=ENTITY_COLORS),
                     legend=alt.Legend(values=present, columns=3))


def agreement_chart(tenant: TenantReport) -> str | None:
    rows = []
    for a in tenant.agreement:
        for status, value in zip(STATUS, (a.agree or 0, a.disagree, a.noted), strict=True):
            if value:
                rows.append({"row": a.label, "status": status, "records": value, "order": STATUS.index(status)})
    if not rows:
        return None
    order = [a.label for a in tenant.agreement]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(height={"band": 0.7}).encode(
        y=alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
        x=_count_x("records:Q", "records", max(a.compared for a in tenant.agreement)),
        color=alt.Color("status:N", title=None, scale=alt.Scale(domain=STATUS, range=STATUS_COLORS)),
        order=alt.Order("order:Q"),
    ).properties(width=WIDTH, height=_bar_height(len(order)))
    return _svg(chart)


def reasons_chart(tenant: TenantReport) -> str | None:
    rows = [{"reason": r.label, "entity": ENTITY_LABELS.get(r.entity, r.entity), "records": r.records}
            for r in tenant.reasons]
    if not rows:
        return None
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["reason"]] = totals.get(row["reason"], 0) + row["records"]
    order = sorted(totals, key=lambda k: (-totals[k], k))
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(height={"band": 0.7}).encode(
        y=alt.Y("reason:N", sort=order, title=None, axis=alt.Axis(labelLimit=260)),
        x=_count_x("records:Q", "records", max(totals.values())),
        color=_entities_in(rows),
    ).properties(width=WIDTH - 40, height=_bar_height(len(order)))
    return _svg(chart)


def fields_chart(tenant: TenantReport) -> str | None:
    rows = [{"field": f.label, "entity": ENTITY_LABELS.get(f.entity, f.entity), "count": f.count}
            for f in tenant.fields]
    if not rows:
        return None
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["field"]] = totals.get(row["field"], 0) + row["count"]
    order = sorted(totals, key=lambda k: (-totals[k], k))
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(height={"band": 0.7}).encode(
        y=alt.Y("field:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
        x=_count_x("count:Q", "differences", max(totals.values())),
        color=_entities_in(rows),
    ).properties(width=WIDTH, height=_bar_height(len(order)))
    return _svg(chart)


def trend_chart(tenant: TenantReport) -> str | None:
    rows = [{"at": p.at.isoformat(), "kind": p.kind, "count": p.count} for p in tenant.trend]
    if len({r["at"] for r in rows}) < 2:  # one point is not a trend
        return None
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("at:T", title=None, axis=alt.Axis(format="%d %b", tickCount="day")),
        y=alt.Y("sum(count):Q", title="mismatches", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("kind:N", title=None),
    ).properties(width=WIDTH, height=180)
    return _svg(chart)


def overview_chart(report: Report) -> str | None:
    rows = []
    for t in report.tenants:
        for status, value in zip(STATUS, (t.agree, t.disagree, t.noted), strict=True):
            if value:
                rows.append({"tenant": t.tenant, "status": status, "records": value, "order": STATUS.index(status)})
    if not rows:
        return None
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(height={"band": 0.6}).encode(
        y=alt.Y("tenant:N", title=None, sort=[t.tenant for t in report.tenants]),
        x=_count_x("records:Q", "records compared", max(t.compared for t in report.tenants)),
        color=alt.Color("status:N", title=None, scale=alt.Scale(domain=STATUS, range=STATUS_COLORS)),
        order=alt.Order("order:Q"),
    ).properties(width=WIDE, height=_bar_height(len(report.tenants)))
    return _svg(chart)


def chart_ids(tenant: TenantReport) -> dict[str, str]:
    return {name: f"{name}-{tenant.tenant}" for name in ("agreement", "reasons", "fields", "trend")}


def draw_charts(report: Report) -> dict[str, str]:
    """Every chart of the report as SVG text, by id ("overview", "agreement-<tenant>", ...); absent when empty."""
    charts: dict[str, str | None] = {"overview": overview_chart(report)}
    for tenant in report.tenants:
        ids = chart_ids(tenant)
        charts[ids["agreement"]] = agreement_chart(tenant)
        charts[ids["reasons"]] = reasons_chart(tenant)
        charts[ids["fields"]] = fields_chart(tenant)
        charts[ids["trend"]] = trend_chart(tenant)
    return {name: svg for name, svg in charts.items() if svg}
