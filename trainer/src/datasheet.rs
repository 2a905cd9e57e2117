//! The cohort datasheet: planned (and, after the pull, achieved) counts per class × sex × age
//! band × site, with unknown sex and age as values of their own (never imputed), and the
//! planner's shortfall explanations.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::data::RowMeta;
use crate::plan::Plan;

/// One datasheet cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SheetCell {
    /// Class.
    pub class: String,
    /// `M`, `F` or `unknown`.
    pub sex: String,
    /// Age band or `unknown`.
    pub age_band: String,
    /// Site.
    pub site: String,
    /// True for a held-out site.
    pub held_out: bool,
    /// Segments planned.
    pub planned: u64,
    /// Segments received and verified (null before the pull).
    pub achieved: Option<u64>,
}

/// The datasheet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datasheet {
    /// Cohort id.
    pub cohort_id: String,
    /// Cells in (held-out, class, sex, age band, site) order.
    pub cells: Vec<SheetCell>,
    /// Shortfall explanations.
    pub shortfalls: Vec<String>,
}

type Key = (bool, String, String, String, String);
/// One datasheet row's cells by (held out, site).
type SiteCells<'a> = BTreeMap<(bool, &'a str), &'a SheetCell>;

impl Datasheet {
    /// The planned datasheet of `plan`.
    pub fn planned(cohort_id: &str, plan: &Plan) -> Datasheet {
        let mut m: BTreeMap<Key, u64> = BTreeMap::new();
        for c in &plan.cells {
            *m.entry((
                c.held_out,
                c.class.clone(),
                c.sex.clone(),
                c.age_band.clone(),
                c.site.clone(),
            ))
            .or_insert(0) += c.count;
        }
        Datasheet {
            cohort_id: cohort_id.to_string(),
            cells: m
                .into_iter()
                .map(
                    |((held_out, class, sex, age_band, site), planned)| SheetCell {
                        class,
                        sex,
                        age_band,
                        site,
                        held_out,
                        planned,
                        achieved: None,
                    },
                )
                .collect(),
            shortfalls: plan.shortfalls.clone(),
        }
    }

    /// Fills the achieved counts from the assembled rows (`classes` names the class indexes).
    pub fn with_achieved(mut self, meta: &[RowMeta], classes: &[String]) -> Datasheet {
        let mut got: BTreeMap<Key, u64> = BTreeMap::new();
        for r in meta {
            *got.entry((
                r.held_out,
                classes[r.class].clone(),
                r.sex.clone(),
                r.age_band.clone(),
                r.site.clone(),
            ))
            .or_insert(0) += 1;
        }
        for c in &mut self.cells {
            let k = (
                c.held_out,
                c.class.clone(),
                c.sex.clone(),
                c.age_band.clone(),
                c.site.clone(),
            );
            c.achieved = Some(got.remove(&k).unwrap_or(0));
        }
        for ((held_out, class, sex, age_band, site), n) in got {
            self.cells.push(SheetCell {
                class,
                sex,
                age_band,
                site,
                held_out,
                planned: 0,
                achieved: Some(n),
            });
        }
        self
    }

    /// The largest |achieved − planned| over the cells (0 before the pull).
    pub fn max_deviation(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.achieved.map_or(0, |a| a.abs_diff(c.planned)))
            .max()
            .unwrap_or(0)
    }

    /// Markdown rendering: the cells (one column per site) and the margins per class (sex and
    /// age band, unknown in columns of their own).
    pub fn render(&self) -> String {
        let sites: BTreeSet<(bool, &str)> = self
            .cells
            .iter()
            .map(|c| (c.held_out, c.site.as_str()))
            .collect();
        let bands: BTreeSet<&str> = self.cells.iter().map(|c| c.age_band.as_str()).collect();
        let show = |c: &SheetCell| match c.achieved {
            Some(a) => format!("{a}/{}", c.planned),
            None => c.planned.to_string(),
        };
        let mut s = format!("# Cohort {} datasheet\n\n", self.cohort_id);
        s.push_str(if self.cells.iter().any(|c| c.achieved.is_some()) {
            "Counts are segments, achieved/planned.\n\n"
        } else {
            "Counts are planned segments.\n\n"
        });
        s.push_str("| class | sex | age band |");
        for (h, site) in &sites {
            s.push_str(&format!(" {site}{} |", if *h { " (held out)" } else { "" }));
        }
        s.push_str(" total |\n|---|---|---|");
        s.push_str(&"---|".repeat(sites.len() + 1));
        s.push('\n');
        let mut rows: BTreeMap<(&str, &str, &str), SiteCells> = BTreeMap::new();
        for c in &self.cells {
            rows.entry((&c.class, &c.sex, &c.age_band))
                .or_default()
                .insert((c.held_out, &c.site), c);
        }
        for ((class, sex, band), by_site) in &rows {
            s.push_str(&format!("| {class} | {sex} | {band} |"));
            let (mut p, mut a) = (0, 0);
            for key in &sites {
                match by_site.get(key) {
                    Some(c) => {
                        s.push_str(&format!(" {} |", show(c)));
                        p += c.planned;
                        a += c.achieved.unwrap_or(0);
                    }
                    None => s.push_str(" |"),
                }
            }
            let any_achieved = by_site.values().any(|c| c.achieved.is_some());
            s.push_str(&if any_achieved {
                format!(" {a}/{p} |\n")
            } else {
                format!(" {p} |\n")
            });
        }
        s.push_str("\nMargins (planned, training and held-out sites together):\n\n| class | M | F | sex unknown |");
        for b in bands.iter().filter(|b| **b != "unknown") {
            s.push_str(&format!(" {b} |"));
        }
        s.push_str(" age unknown | total |\n|---|---|---|---|");
        s.push_str(&"---|".repeat(bands.iter().filter(|b| **b != "unknown").count() + 2));
        s.push('\n');
        let classes: BTreeSet<&str> = self.cells.iter().map(|c| c.class.as_str()).collect();
        for class in classes {
            let sum = |f: &dyn Fn(&SheetCell) -> bool| -> u64 {
                self.cells
                    .iter()
                    .filter(|c| c.class == class && f(c))
                    .map(|c| c.planned)
                    .sum()
            };
            s.push_str(&format!(
                "| {class} | {} | {} | {} |",
                sum(&|c| c.sex == "M"),
                sum(&|c| c.sex == "F"),
                sum(&|c| c.sex != "M" && c.sex != "F")
            ));
            for b in bands.iter().filter(|b| **b != "unknown") {
                s.push_str(&format!(" {} |", sum(&|c| c.age_band == *b)));
            }
            s.push_str(&format!(
                " {} | {} |\n",
                sum(&|c| c.age_band == "unknown"),
                sum(&|_| true)
            ));
        }
        if !self.shortfalls.is_empty() {
            s.push_str("\nShortfalls:\n\n");
            for l in &self.shortfalls {
                s.push_str(&format!("- {l}\n"));
            }
        }
        s
    }
}
