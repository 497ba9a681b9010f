"""The report's charts: Altair specifications rendered to static SVG by vl-convert, so the page carries them
inline and needs no JavaScript, no network and no fonts from elsewhere (it prints as drawn)."""

from __future__ import annotations

import altair as alt
import vl_convert

from assets.reports.report import ENTITY_LABELS, Report, TenantReport, app_label

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


def _time_x(points: list) -> alt.X:
    """Dates for runs days apart, dates and hours for runs within a couple of days (a frequent schedule)."""
    times = [p.at for p in points]
    span = (max(times) - min(times)).total_seconds() if times else 0
    if span >= 2 * 86400:
        return alt.X("at:T", title=None, axis=alt.Axis(format="%d %b", tickCount="day", labelAngle=0))
    return alt.X("at:T", title=None, axis=alt.Axis(format="%d %b %H:%M", labelAngle=0, labelOverlap=True))


def _series_chart(points: list, title: str, width: int, *, colors: dict[str, str] | None = None) -> str | None:
    """Counts per run as one line per series (a reason or an app); None for fewer than two runs (not a trend)."""
    rows = [{"at": p.at.isoformat(), "series": p.series, "count": p.count} for p in points]
    if len({r["at"] for r in rows}) < 2:
        return None
    series = sorted({r["series"] for r in rows})
    color = alt.Color("series:N", title=None, legend=alt.Legend(columns=3, labelLimit=260))
    if colors and all(s in colors for s in series):
        color = alt.Color("series:N", title=None, scale=alt.Scale(domain=series, range=[colors[s] for s in series]),
                          legend=alt.Legend(columns=3, labelLimit=260))
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True, strokeWidth=2).encode(
        x=_time_x(points),
        y=alt.Y("count:Q", title=title, axis=alt.Axis(tickMinStep=1, format="d")),
        color=color,
    ).properties(width=width, height=180)
    return _svg(chart)


# one colour per app across every chart of the page
APP_COLORS = {"QuickBooks": "#2c6e3f", "Xero": "#1f8fbf", "Sequence's own data": "#8a6bb1", "HubSpot": "#e0713b",
              "Salesforce": "#4c7fd1", "Attio": "#6b6f7b", "Sequence": "#8a6bb1"}


def trend_chart(tenant: TenantReport) -> str | None:
    """Mismatches per run, one line per reason (summed over apps)."""
    return _series_chart(tenant.trend, "differences", WIDTH)


def trend_apps_chart(tenant: TenantReport) -> str | None:
    """Mismatches per run, one line per app (summed over reasons); none for one app (the reasons' chart says it)."""
    if len({p.series for p in tenant.trend_apps}) < 2:
        return None
    return _series_chart(tenant.trend_apps, "differences", WIDTH, colors=APP_COLORS)


def overview_trend_chart(report: Report) -> str | None:
    return _series_chart(report.trend_apps, "differences, all tenants", WIDE, colors=APP_COLORS)


def syncs_chart(tenant: TenantReport) -> str | None:
    """Rows loaded per day and connection as bars, failed syncs as red marks above them."""
    rows = [{"at": p.at.date().isoformat(), "app": app_label(p.app), "rows": p.rows, "runs": p.runs,
             "failed": p.failed} for p in tenant.sync_points]
    if not rows:
        return None
    apps = sorted({r["app"] for r in rows})
    palette = [APP_COLORS.get(a, "#94a3b8") for a in apps]
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("at:O", title=None, axis=alt.Axis(labelAngle=0, labelExpr="timeFormat(toDate(datum.value), '%d %b')")),
        xOffset=alt.XOffset("app:N", sort=apps))
    bars = base.mark_bar().encode(
        y=alt.Y("rows:Q", title="rows loaded", axis=alt.Axis(tickMinStep=1, format=",d")),
        color=alt.Color("app:N", title=None, scale=alt.Scale(domain=apps, range=palette)))
    layers = [bars]
    if any(r["failed"] for r in rows):
        # written upwards from the bar's top, so the words fit the bar's width
        failures = alt.Chart(alt.Data(values=[r for r in rows if r["failed"]])).transform_calculate(
            label="datum.failed + ' failed'").mark_text(
            color="#c8553d", fontWeight="bold", fontSize=11, angle=270, align="left", baseline="middle", dx=4).encode(
            x=alt.X("at:O"), xOffset=alt.XOffset("app:N", sort=apps), y=alt.Y("rows:Q"), text="label:N")
        layers.append(failures)
    return _svg(alt.layer(*layers).properties(width=WIDTH, height=170))


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


CHARTS = {"agreement": agreement_chart, "reasons": reasons_chart, "fields": fields_chart, "trend": trend_chart,
          "trend_apps": trend_apps_chart, "syncs": syncs_chart}


def chart_ids(tenant: TenantReport) -> dict[str, str]:
    return {name: f"{name}-{tenant.tenant}" for name in CHARTS}


def draw_charts(report: Report) -> dict[str, str]:
    """Every chart of the report as SVG text, by id ("overview", "trend", "agreement-<tenant>", ...); absent
    when empty."""
    charts: dict[str, str | None] = {"overview": overview_chart(report), "trend": overview_trend_chart(report)}
    for tenant in report.tenants:
        for name, chart_id in chart_ids(tenant).items():
            charts[chart_id] = CHARTS[name](tenant)
    return {name: svg for name, svg in charts.items() if svg}
