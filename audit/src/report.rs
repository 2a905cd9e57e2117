//! The audit report: one self-contained HTML page (inline CSS and SVG, no scripts, no network
//! fetches) with the lineage graph, the cohort datasheet, the recorded metrics per class,
//! subgroup and site, the access timeline and the verification status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use plotters::prelude::*;
use serde_json::Value;

use crate::bundle::Verified;
use crate::lineage::ModelLineage;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A chart plotters could not draw.
#[derive(Debug, thiserror::Error)]
#[error("plot: {0}")]
pub struct PlotError(#[source] Box<dyn std::error::Error + Send + Sync>);

fn plot_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> PlotError {
    PlotError(Box::new(e))
}

/// A bar chart of values in [0, 1] (e.g. macro-F1 per subgroup) as SVG text.
pub fn bar_chart(title: &str, bars: &[(String, f64)]) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (160 + 60 * bars.len().max(1) as u32, 380))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(80)
            .y_label_area_size(45)
            .build_cartesian_2d((0..bars.len().max(1)).into_segmented(), 0f64..1f64)
            .map_err(plot_error)?;
        c.configure_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_labels(bars.len().max(1))
            .draw()
            .map_err(plot_error)?;
        c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v.clamp(0.0, 1.0)),
                ],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A line chart of `series` (name, points (x, y)) over `y` in `y_range`, as SVG text.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_range: std::ops::Range<f64>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let x_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold(1.0, f64::max);
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.5f64..x_max + 0.5, y_range)
            .map_err(plot_error)?;
        c.configure_mesh()
            .x_desc(x_label)
            .draw()
            .map_err(plot_error)?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A federated model's rounds: the per-round plot (from the history its ModelTrained entry
/// records), each round's sites, rows and entries (from the LocalRoundTrained entries), and
/// each site's differential privacy as the auditor recomputes it.
fn rounds_section(l: &ModelLineage) -> String {
    if l.model.mode != "federated" {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Federated rounds</h2><p>The model was trained at the gateways: no row left a site; each site's update left masked and only the sum of a round's updates was read (docs/training.md, Federated mode).</p>",
    );
    let history = l.model.hyperparameters["federated"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total_sites = l.model.hyperparameters["federated"]["sites"]
        .as_array()
        .map_or(0, Vec::len)
        .max(1) as f64;
    let point = |r: &Value, k: &str| Some((r["round"].as_f64()?, r[k].as_f64()?));
    let loss: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| point(r, "train_loss"))
        .collect();
    let f1: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| point(r, "val_macro_f1"))
        .collect();
    let share: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| {
            Some((
                r["round"].as_f64()?,
                r["sites"].as_array()?.len() as f64 / total_sites,
            ))
        })
        .collect();
    let top = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(0.1) * 1.1;
    for chart in [
        line_chart(
            "training loss per round",
            "round",
            0.0..top,
            &[("train loss (row-weighted)".into(), loss)],
        ),
        line_chart(
            "validation macro-F1 and sites per round",
            "round",
            0.0..1.0,
            &[
                ("validation macro-F1 (windows)".into(), f1),
                ("share of training sites".into(), share),
            ],
        ),
    ] {
        match chart {
            Ok(svg) => h.push_str(&svg),
            Err(e) => h.push_str(&format!("<p>{}</p>", esc(&e.to_string()))),
        }
    }
    h.push_str("<table><thead><tr><th>round</th><th>attempt</th><th>site</th><th>rows</th><th>entry</th><th>update SHA-256</th></tr></thead><tbody>");
    for r in &l.rounds {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.round,
            r.attempt,
            esc(&r.site),
            r.rows,
            r.entry.index,
            esc(&clip(&r.update_sha256, 16))
        ));
    }
    h.push_str("</tbody></table>");
    if !l.privacy.is_empty() {
        h.push_str("<h3>Differential privacy per site</h3><table><thead><tr><th>site</th><th>ε</th><th>δ</th><th>rounds</th><th>DP-SGD steps</th><th>clip</th><th>σ</th></tr></thead><tbody>");
        for p in &l.privacy {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:e}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.site),
                p.epsilon.map_or("unbounded".to_string(), |e| format!("{e:.3}")),
                p.delta,
                p.rounds,
                p.steps,
                p.clip_norm,
                p.noise_multiplier
            ));
        }
        h.push_str("</tbody></table>");
    }
    h
}

const NODE_W: f64 = 190.0;
const NODE_H: f64 = 44.0;
const COL_GAP: f64 = 60.0;
const ROW_GAP: f64 = 14.0;

/// The lineage graph as SVG: sites → dataset versions → slices → cohort → model, left to
/// right, one column per level, every edge drawn.
pub fn lineage_svg(l: &ModelLineage) -> String {
    let sites: Vec<(String, String)> = l
        .sites
        .iter()
        .map(|s| (s.site.clone(), format!("{} rows · {}", s.rows, s.hospital)))
        .collect();
    let datasets: Vec<(String, String)> = l
        .datasets
        .iter()
        .map(|d| {
            (
                format!("{}@v{}", d.dataset_id, d.version),
                format!("#{} · {} records", d.entry.index, d.records),
            )
        })
        .collect();
    let slices: Vec<(String, String)> = l
        .slices
        .iter()
        .map(|s| {
            let erased: u64 = s.erased_since.iter().map(|e| e.in_slice).sum();
            let unknown = s.erased_since.iter().filter(|e| e.undisclosed).count();
            let mut extra = if erased > 0 {
                format!(" · {erased} erased since")
            } else {
                String::new()
            };
            if unknown > 0 {
                extra.push_str(&format!(
                    " · {unknown} erasures since not disclosed to this audit"
                ));
            }
            (
                s.slice_id.clone(),
                format!(
                    "#{} · {} rows · served {}×{extra}",
                    s.entry.index,
                    s.rows,
                    s.served.len()
                ),
            )
        })
        .collect();
    let cohort = vec![(
        l.cohort.cohort_id.clone(),
        format!("#{} · {}", l.cohort.entry.index, l.cohort.requester),
    )];
    let model = vec![(
        l.model.model_id.clone(),
        format!("#{}", l.model.entry.index),
    )];
    let cols = [
        ("sites", sites),
        ("dataset versions", datasets),
        ("slices", slices),
        ("cohort", cohort),
        ("model", model),
    ];
    let rows = cols.iter().map(|c| c.1.len()).max().unwrap_or(1).max(1) as f64;
    let height = 40.0 + rows * (NODE_H + ROW_GAP);
    let width = cols.len() as f64 * (NODE_W + COL_GAP);
    let pos = |col: usize, i: usize, n: usize| -> (f64, f64) {
        let x = 10.0 + col as f64 * (NODE_W + COL_GAP);
        let block = n as f64 * (NODE_H + ROW_GAP);
        let y = 30.0 + (height - 30.0 - block) / 2.0 + i as f64 * (NODE_H + ROW_GAP);
        (x, y)
    };
    let find = |col: usize, name: &str| -> Option<(f64, f64)> {
        let list = &cols[col].1;
        list.iter()
            .position(|(n, _)| n == name)
            .map(|i| pos(col, i, list.len()))
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="lineage graph">"#
    );
    let edge = |a: Option<(f64, f64)>, b: Option<(f64, f64)>, s: &mut String| {
        if let (Some((ax, ay)), Some((bx, by))) = (a, b) {
            let _ = write!(
                s,
                r##"<path d="M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#7a869a" stroke-width="1.5"/>"##,
                ax + NODE_W,
                ay + NODE_H / 2.0,
                ax + NODE_W + COL_GAP / 2.0,
                ay + NODE_H / 2.0,
                bx - COL_GAP / 2.0,
                by + NODE_H / 2.0,
                bx,
                by + NODE_H / 2.0
            );
        }
    };
    for d in &l.datasets {
        edge(
            find(0, &d.site),
            find(1, &format!("{}@v{}", d.dataset_id, d.version)),
            &mut s,
        );
    }
    for sl in &l.slices {
        edge(
            find(1, &format!("{}@v{}", sl.dataset_id, sl.dataset_version)),
            find(2, &sl.slice_id),
            &mut s,
        );
        edge(find(2, &sl.slice_id), find(3, &l.cohort.cohort_id), &mut s);
    }
    edge(
        find(3, &l.cohort.cohort_id),
        find(4, &l.model.model_id),
        &mut s,
    );
    for (c, (title, nodes)) in cols.iter().enumerate() {
        let (x, _) = pos(c, 0, 1);
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="18" font-family="sans-serif" font-size="13" font-weight="bold" fill="#333">{}</text>"##,
            x,
            esc(title)
        );
        for (i, (name, sub)) in nodes.iter().enumerate() {
            let (x, y) = pos(c, i, nodes.len());
            let warn = sub.contains("erased since");
            let fill = if warn { "#fdecea" } else { "#eef3fb" };
            let _ = write!(
                s,
                r##"<g><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" stroke="#4a6fa5"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12" fill="#111">{}</text><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="10" fill="#555">{}</text></g>"##,
                esc(name),
                x + 8.0,
                y + 18.0,
                esc(&clip(name, 28)),
                x + 8.0,
                y + 34.0,
                esc(&clip(sub, 36))
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => format!("{f:.3}"),
        _ => match v {
            Value::Null => "–".into(),
            Value::String(s) => esc(s),
            other => esc(&other.to_string()),
        },
    }
}

/// The datasheet: planned segments per label × sex × age band (rows) and site (columns).
fn datasheet(l: &ModelLineage) -> String {
    let sites: BTreeSet<&str> = l.cohort.cells.iter().map(|c| c.site.as_str()).collect();
    let mut rows: BTreeMap<(&str, &str, &str), BTreeMap<&str, u64>> = BTreeMap::new();
    for c in &l.cohort.cells {
        *rows
            .entry((c.label.as_str(), c.sex.as_str(), c.age_band.as_str()))
            .or_default()
            .entry(c.site.as_str())
            .or_default() += c.count;
    }
    let mut h = String::from("<table><thead><tr><th>label</th><th>sex</th><th>age band</th>");
    for s in &sites {
        let _ = write!(h, "<th>{}</th>", esc(s));
    }
    h.push_str("<th>total</th></tr></thead><tbody>");
    let mut col_tot: BTreeMap<&str, u64> = BTreeMap::new();
    for ((label, sex, age), per) in &rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            esc(label),
            esc(sex),
            esc(age)
        );
        let mut tot = 0;
        for s in &sites {
            let n = per.get(s).copied().unwrap_or(0);
            tot += n;
            *col_tot.entry(s).or_default() += n;
            let _ = write!(h, "<td class=n>{n}</td>");
        }
        let _ = write!(h, "<td class=n><b>{tot}</b></td></tr>");
    }
    h.push_str("<tr><th colspan=3>planned total</th>");
    for s in &sites {
        let _ = write!(
            h,
            "<th class=n>{}</th>",
            col_tot.get(s).copied().unwrap_or(0)
        );
    }
    let _ = write!(
        h,
        "<th class=n>{}</th></tr><tr><th colspan=3>committed in slices</th>",
        col_tot.values().sum::<u64>()
    );
    for s in &sites {
        let got: u64 = l
            .slices
            .iter()
            .filter(|x| x.site == *s)
            .map(|x| x.rows)
            .sum();
        let _ = write!(h, "<th class=n>{got}</th>");
    }
    let all: u64 = l.slices.iter().map(|x| x.rows).sum();
    let _ = write!(h, "<th class=n>{all}</th></tr></tbody></table>");
    h
}

/// Per-class table of one recorded score block (`{"n", "macro_f1", "classes": [...]}`).
fn class_table(title: &str, v: &Value) -> String {
    let mut h = format!(
        "<h4>{}</h4><p>n = {} · macro-F1 {} · accuracy {} · ECE {}</p><table><thead><tr><th>class</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th>AUROC</th></tr></thead><tbody>",
        esc(title),
        num(&v["n"]),
        num(&v["macro_f1"]),
        num(&v["accuracy"]),
        num(&v["ece"])
    );
    for c in v["classes"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            num(&c["class"]),
            num(&c["support"]),
            num(&c["precision"]),
            num(&c["recall"]),
            num(&c["f1"]),
            num(&c["auroc"])
        );
    }
    h.push_str("</tbody></table>");
    h
}

fn metrics(m: &Value) -> String {
    let mut h = String::new();
    if let Some(v) = m.get("validation").filter(|v| !v.is_null()) {
        h.push_str(&class_table("validation — per window", &v["windows"]));
        h.push_str(&class_table("validation — per record", &v["records"]));
    }
    // The test part, scored once with the kept weights (models trained before test parts
    // existed have none).
    let tested = m.get("test").is_some_and(|v| !v.is_null());
    if let Some(v) = m.get("test").filter(|v| !v.is_null()) {
        h.push_str(&class_table(
            "test (scored once) — per window",
            &v["windows"],
        ));
        h.push_str(&class_table(
            "test (scored once) — per record",
            &v["records"],
        ));
    }
    let rows = if tested { "test" } else { "validation" };
    if let Some(ho) = m.get("held_out").and_then(|v| v.as_object()) {
        for (site, v) in ho {
            h.push_str(&class_table(
                &format!("held-out site {site} — per record"),
                &v["records"],
            ));
        }
    }
    for (key, what) in [
        ("by_sex_macro_f1", "sex"),
        ("by_age_band_macro_f1", "age band"),
        ("by_site_macro_f1", "site"),
    ] {
        let title = &format!("macro-F1 per {what} ({rows} windows)");
        let bars: Vec<(String, f64)> = m
            .get(key)
            .and_then(|v| v.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        if bars.is_empty() {
            continue;
        }
        let _ = write!(h, "<h4>{}</h4><div class=row>", esc(title));
        match bar_chart(title, &bars) {
            Ok(svg) => h.push_str(&svg),
            Err(e) => {
                let _ = write!(h, "<p>(plot not drawn: {})</p>", esc(&e.to_string()));
            }
        }
        h.push_str("<table><tbody>");
        for (k, v) in &bars {
            let _ = write!(h, "<tr><td>{}</td><td class=n>{v:.3}</td></tr>", esc(k));
        }
        h.push_str("</tbody></table></div>");
    }
    if h.is_empty() {
        h.push_str("<p>The ModelTrained entry records no metric table.</p>");
    }
    h
}

/// The access timeline: every transfer of the model's slices, in ledger order, as a table and
/// as a strip of marks over time (one lane per site).
fn timeline(l: &ModelLineage) -> String {
    let mut served: Vec<(&str, &str, &crate::lineage::ServedNode)> = l
        .slices
        .iter()
        .flat_map(|s| {
            s.served
                .iter()
                .map(move |d| (s.site.as_str(), s.slice_id.as_str(), d))
        })
        .collect();
    served.sort_by_key(|x| x.2.entry.index);
    if served.is_empty() {
        return "<p>No DataServed entry: no slice of this cohort was transferred before the model was recorded.</p>".into();
    }
    let lanes: Vec<&str> = {
        let set: BTreeSet<&str> = served.iter().map(|x| x.0).collect();
        set.into_iter().collect()
    };
    let n = served.len();
    let (w, lane_h) = (760.0, 26.0);
    let hgt = 20.0 + lanes.len() as f64 * lane_h;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" role="img" aria-label="access timeline">"#
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = 20.0 + i as f64 * lane_h;
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}" font-family="sans-serif" font-size="11">{}</text><line x1="110" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ccc"/>"##,
            y + 4.0,
            esc(lane),
            y,
            w - 10.0,
            y
        );
    }
    for (k, (site, slice, d)) in served.iter().enumerate() {
        let lane = lanes.iter().position(|l| l == site).unwrap_or(0);
        let x = 120.0
            + (w - 140.0)
                * if n > 1 {
                    k as f64 / (n - 1) as f64
                } else {
                    0.5
                };
        let y = 20.0 + lane as f64 * lane_h;
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="#2e7d32"><title>{} → {}: {} rows at {} (entry {})</title></circle>"##,
            esc(slice),
            esc(&d.requester),
            d.rows,
            esc(&d.entry.time),
            d.entry.index
        );
    }
    svg.push_str("</svg>");
    let mut h = svg;
    h.push_str("<table><thead><tr><th>time (UTC)</th><th>entry</th><th>site</th><th>slice</th><th>requester</th><th>rows</th><th>bytes</th></tr></thead><tbody>");
    for (site, slice, d) in &served {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&d.entry.time),
            d.entry.index,
            esc(site),
            esc(slice),
            esc(&d.requester),
            d.rows,
            d.bytes
        );
    }
    h.push_str("</tbody></table>");
    h
}

/// The verification status: what the offline bundle check established, or why it failed.
fn status(v: &Result<Verified, String>, checkpoint: &str) -> String {
    match v {
        Ok(v) => format!(
            "<div class='status ok'><b>Verified.</b> {} entries proven in the ledger's signed tree of size {} (root <code>{}</code>){}; every entry's BLS signature checked under its signer's key from genesis or admission; the lineage below recomputed from the proven entries alone and equal to the one shown; each site's slice holds the rows the cohort allocated to it.{}</div><details><summary>signed checkpoint</summary><pre>{}</pre></details>",
            v.entries,
            v.tree_size,
            esc(&v.root),
            if v.witness_quorum > 0 {
                format!(
                    ", witnessed: cosigned by {} ({} of the {} cosignatures the genesis requires, one aggregate BLS signature checked)",
                    esc(&v.cosigners.join(", ")),
                    v.cosigners.len(),
                    v.witness_quorum
                )
            } else {
                " (a ledger without witnesses: its own signature only)".to_string()
            },
            if v.erasures {
                " <b>Records of this model's slices were erased after the slices were committed</b> (see Erasures)."
            } else {
                ""
            },
            esc(checkpoint)
        ),
        Err(e) => format!(
            "<div class='status bad'><b>NOT VERIFIED:</b> {}</div>",
            esc(e)
        ),
    }
}

/// Renders the report page for `lineage`, with the outcome of verifying its bundle.
pub fn render(
    lineage: &ModelLineage,
    verified: &Result<Verified, String>,
    checkpoint: &str,
    generated: &str,
) -> String {
    let l = lineage;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ecgfed audit report — {model}</title><style>
body{{font-family:sans-serif;margin:24px;color:#111;max-width:1300px}}h1{{font-size:22px}}h2{{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}}h4{{margin:14px 0 4px}}
table{{border-collapse:collapse;margin:6px 0 12px;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}td.n,th.n{{text-align:right}}thead th{{background:#f2f4f7}}
.status{{padding:10px 14px;border-radius:6px;margin:10px 0}}.ok{{background:#e8f5e9;border:1px solid #2e7d32}}.bad{{background:#fdecea;border:1px solid #c62828}}
code,pre{{font-size:12px}}.row{{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}}.graph{{overflow-x:auto}}dl{{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}}dt{{font-weight:bold}}
</style></head><body>
<h1>ecgfed audit report — model <code>{model}</code></h1>
<p>Generated {generated} from the ledger by <code>ecgfed audit report</code>. Self-contained: no scripts, no network fetches.</p>"#,
        model = esc(&l.model.model_id),
        generated = esc(generated)
    );
    h.push_str("<h2>Verification</h2>");
    h.push_str(&status(verified, checkpoint));
    let _ = write!(
        h,
        "<h2>Model</h2><dl><dt>model</dt><dd><code>{}</code> (ledger entry {}, {}, signed by {})</dd><dt>weights SHA-256</dt><dd><code>{}</code></dd><dt>code version</dt><dd><code>{}</code></dd><dt>cohort</dt><dd><code>{}</code> (entry {}, requester {}, seed {}, spec SHA-256 <code>{}</code>)</dd><dt>purpose</dt><dd>{}</dd></dl>",
        esc(&l.model.model_id),
        l.model.entry.index,
        esc(&l.model.entry.time),
        esc(&l.model.entry.signer),
        esc(&l.model.weights_sha256),
        esc(&l.model.code_version),
        esc(&l.cohort.cohort_id),
        l.cohort.entry.index,
        esc(&l.cohort.requester),
        l.cohort.seed,
        esc(&l.cohort.spec_sha256),
        esc(&l.cohort.purpose)
    );
    h.push_str("<h2>Lineage</h2><div class=graph>");
    h.push_str(&lineage_svg(l));
    h.push_str("</div><table><thead><tr><th>slice</th><th>site</th><th>dataset</th><th>entry</th><th>rows</th><th>slice root</th><th>transfers</th></tr></thead><tbody>");
    for s in &l.slices {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} v{}</td><td class=n>{}</td><td class=n>{}</td><td><code>{}</code></td><td class=n>{}</td></tr>",
            esc(&s.slice_id),
            esc(&s.site),
            esc(&s.dataset_id),
            s.dataset_version,
            s.entry.index,
            s.rows,
            esc(&s.slice_root),
            s.served.len()
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Cohort datasheet</h2><p>Segments allocated per class × sex × age band (rows) and site (columns); unknown demographics are their own value, never imputed.</p>");
    h.push_str(&datasheet(l));
    h.push_str("<h2>Metrics (as recorded in ModelTrained)</h2>");
    h.push_str(&metrics(&l.model.metrics));
    h.push_str(&rounds_section(l));
    h.push_str("<h2>Access timeline (DataServed)</h2>");
    h.push_str(&timeline(l));
    h.push_str("<h2>Erasures since the slices were committed</h2>");
    let erasures: Vec<_> = l
        .slices
        .iter()
        .flat_map(|s| s.erased_since.iter().map(move |e| (s, e)))
        .collect();
    if erasures.is_empty() {
        h.push_str("<p>None recorded up to the checkpoint.</p>");
    } else {
        h.push_str("<table><thead><tr><th>time (UTC)</th><th>entry</th><th>site</th><th>slice</th><th>records erased</th><th>of them in the slice</th><th>reason</th></tr></thead><tbody>");
        for (s, e) in erasures {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
                esc(&e.entry.time),
                e.entry.index,
                esc(&e.site),
                esc(&s.slice_id),
                e.erased,
                if e.undisclosed {
                    "not disclosed".to_string()
                } else {
                    e.in_slice.to_string()
                },
                esc(&e.reason)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>Datasets</h2><table><thead><tr><th>dataset</th><th>version</th><th>site</th><th>entry</th><th>records</th><th>segments</th><th>commitment root</th></tr></thead><tbody>");
    for d in &l.datasets {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td><code>{}</code></td></tr>",
            esc(&d.dataset_id),
            d.version,
            esc(&d.site),
            d.entry.index,
            d.records,
            d.segments,
            esc(&d.commitment_root)
        );
    }
    h.push_str("</tbody></table><p>Re-check offline: <code>ecgfed audit verify-bundle bundle.json</code> (the bundle beside this page).</p></body></html>\n");
    h
}
