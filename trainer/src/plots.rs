//! Plots of a training run (SVG, plotters): learning curves, the validation confusion matrix
//! and macro-F1 per subgroup.

use plotters::prelude::*;

use crate::evaluation::Evaluation;
use crate::train::EpochStats;

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn learning(history: &[EpochStats], svg: &mut String) -> Drawn {
    let root = SVGBackend::with_string(svg, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let n = history.len().max(1) as f64;
    let max_loss = history
        .iter()
        .flat_map(|h| [Some(h.train_loss), h.val_loss])
        .flatten()
        .fold(0.1f64, f64::max);
    let mut c = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(1f64..n.max(2.0), 0f64..max_loss * 1.05)?;
    c.configure_mesh().x_desc("epoch").draw()?;
    c.draw_series(LineSeries::new(
        history.iter().map(|h| (h.epoch as f64, h.train_loss)),
        &BLUE,
    ))?
    .label("train")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    c.draw_series(LineSeries::new(
        history
            .iter()
            .filter_map(|h| h.val_loss.map(|v| (h.epoch as f64, v))),
        &RED,
    ))?
    .label("validation")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    c.configure_series_labels().border_style(BLACK).draw()?;
    let mut c = ChartBuilder::on(&right)
        .caption("validation macro-F1", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(1f64..n.max(2.0), 0f64..1f64)?;
    c.configure_mesh().x_desc("epoch").draw()?;
    c.draw_series(LineSeries::new(
        history
            .iter()
            .filter_map(|h| h.val_macro_f1.map(|v| (h.epoch as f64, v))),
        &GREEN,
    ))?;
    root.present()?;
    Ok(())
}

fn confusion(m: &[Vec<u64>], classes: &[String], title: &str, svg: &mut String) -> Drawn {
    let k = classes.len();
    let root = SVGBackend::with_string(svg, (120 + 70 * k as u32, 120 + 70 * k as u32))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let max = m.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let cell = 70;
    let (ox, oy) = (90, 20);
    for (t, row) in m.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            let x = ox + p as i32 * cell;
            let y = oy + t as i32 * cell;
            let shade = 1.0 - 0.8 * (v as f64 / max);
            let g = (255.0 * shade) as u8;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                RGBColor(g, g, 255).filled(),
            ))?;
            root.draw(&Text::new(
                v.to_string(),
                (x + cell / 3, y + cell / 2 - 8),
                ("sans-serif", 16),
            ))?;
        }
        root.draw(&Text::new(
            format!("true {}", classes[t]),
            (5, oy + t as i32 * cell + cell / 2 - 8),
            ("sans-serif", 14),
        ))?;
    }
    for (p, c) in classes.iter().enumerate() {
        root.draw(&Text::new(
            format!("pred {c}"),
            (ox + p as i32 * cell + 10, oy + k as i32 * cell + 8),
            ("sans-serif", 14),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn subgroups(bars: &[(String, f64)], svg: &mut String) -> Drawn {
    *svg = ecgfed_audit::report::bar_chart("macro-F1 per subgroup (windows)", bars)?;
    Ok(())
}

/// Every plot as (file name, SVG text). A plot that cannot be drawn is left out with a
/// warning; plots never fail a run.
pub(crate) fn all(
    history: &[EpochStats],
    e: &Evaluation,
    classes: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&mut String) -> Drawn| {
        let mut svg = String::new();
        match f(&mut svg) {
            Ok(()) => out.push((name.to_string(), svg)),
            Err(err) => tracing::warn!("plot {name}: {err}"),
        }
    };
    add("learning-curves.svg", &|s| learning(history, s));
    if let Some(v) = &e.validation {
        add("confusion-validation.svg", &|s| {
            confusion(&v.windows.confusion, classes, "validation (windows)", s)
        });
    }
    for (site, sc) in &e.held_out {
        add(&format!("confusion-held-out-{site}.svg"), &|s| {
            confusion(
                &sc.windows.confusion,
                classes,
                &format!("held-out {site}"),
                s,
            )
        });
    }
    let mut bars = Vec::new();
    for (prefix, m) in [
        ("sex", &e.by_sex),
        ("age", &e.by_age_band),
        ("site", &e.by_site),
    ] {
        for (k, v) in m {
            bars.push((format!("{prefix} {k}"), v.windows.macro_f1.unwrap_or(0.0)));
        }
    }
    for (k, v) in &e.held_out {
        bars.push((format!("held-out {k}"), v.windows.macro_f1.unwrap_or(0.0)));
    }
    add("subgroups.svg", &|s| subgroups(&bars, s));
    out
}
