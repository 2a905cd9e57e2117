//! The allocation solver: from the gateways' visible strata and a cohort spec to the cells of
//! a `CohortCreated` entry, as balanced as the counts allow, with every shortfall explained.
//!
//! Method (docs/cohorts.md "Allocation"): strata are (site, label, sex, age band) with their
//! visible segment and patient counts; those of unused sites, of labels outside the task and
//! with fewer than `k` patients are dropped. Per class the target is fixed (a number, the
//! smallest class supply for `balanced`, the whole supply for `all`); it is spread over the
//! balance groups (sex and/or age band, `unknown` being a value of its own) by integer
//! water-filling, so groups get equal shares except where a group has less, which then gives
//! all it has; each group's share is water-filled over its strata (sites × labels). A site
//! over its cap is cut back and the cell re-filled from the other sites. Held-out sites are
//! allocated apart, per class, for evaluation only.

use std::collections::{BTreeMap, BTreeSet};

use ecgfed_proto::v1::AllocationCell;
use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::spec::{CohortSpec, Targets};

/// One visible stratum of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stratum {
    /// Site.
    pub site: String,
    /// Store label.
    pub label: String,
    /// `M`, `F` or `unknown`.
    pub sex: String,
    /// Age band or `unknown`.
    pub age_band: String,
    /// Visible segments.
    pub segments: u64,
    /// Distinct patients.
    pub patients: u64,
}

/// One planned cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCell {
    /// Site.
    pub site: String,
    /// Class name.
    pub class: String,
    /// Store label.
    pub label: String,
    /// Sex.
    pub sex: String,
    /// Age band.
    pub age_band: String,
    /// Segments planned.
    pub count: u64,
    /// Segments selectable.
    pub supply: u64,
    /// True for a held-out (evaluation-only) site.
    pub held_out: bool,
}

/// The solved allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Cells with a count (training sites first, then held-out), in a fixed order.
    pub cells: Vec<PlanCell>,
    /// Per training class: (class, target, planned).
    pub targets: Vec<(String, u64, u64)>,
    /// Why a class, group or site got less than asked (one line each).
    pub shortfalls: Vec<String>,
}

impl Plan {
    /// The cells as `CohortCreated` allocation cells (count > 0 only).
    pub fn allocation(&self) -> Vec<AllocationCell> {
        self.cells
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| AllocationCell {
                site: c.site.clone(),
                label: c.label.clone(),
                sex: c.sex.clone(),
                age_band: c.age_band.clone(),
                count: c.count,
            })
            .collect()
    }

    /// Planned segments per site (training sites only).
    pub fn site_totals(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for c in self.cells.iter().filter(|c| !c.held_out) {
            *m.entry(c.site.clone()).or_insert(0) += c.count;
        }
        m
    }
}

/// Integer water-filling: shares of `target` over buckets with `supply`, as equal as the
/// supplies allow (a bucket with less than the level gives all it has; the rest differ by at
/// most one, the extra units going to the lower indexes). The total is min(target, Σ supply).
pub(crate) fn water_fill(supply: &[u64], target: u64) -> Vec<u64> {
    let n = supply.len();
    let mut out = vec![0u64; n];
    let mut remaining = target.min(supply.iter().sum());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (supply[i], i));
    for k in 0..n {
        let left = (n - k) as u64;
        let share = remaining / left;
        let i = order[k];
        if supply[i] <= share {
            out[i] = supply[i];
            remaining -= supply[i];
            continue;
        }
        let mut rest: Vec<usize> = order[k..].to_vec();
        rest.sort_unstable();
        let extra = remaining - share * left;
        for (j, &i) in rest.iter().enumerate() {
            out[i] = share + u64::from((j as u64) < extra);
        }
        break;
    }
    out
}

/// The balance group of a stratum under `by`.
fn group_of(s: &Stratum, by: &[String]) -> (String, String) {
    let sex = if by.iter().any(|d| d == "sex") {
        s.sex.clone()
    } else {
        "*".into()
    };
    let age = if by.iter().any(|d| d == "age_band") {
        s.age_band.clone()
    } else {
        "*".into()
    };
    (sex, age)
}

fn class_target(t: &Targets, class: &str, supply: u64, balanced: u64) -> u64 {
    match t {
        Targets::Each(n) => *n,
        Targets::PerClass(m) => m.get(class).copied().unwrap_or(0),
        Targets::Mode(m) if m == "all" => supply,
        Targets::Mode(_) => balanced,
    }
}

/// What one class's allocation draws from: the strata, their caps (site caps may limit a
/// stratum below its supply), the balance dimensions and the groups to balance over.
struct Pool<'a> {
    strata: &'a [Stratum],
    caps: &'a [u64],
    by: &'a [String],
    groups: &'a BTreeSet<(String, String)>,
}

/// Allocates one class's target over its strata (`members`, indexes into the pool's strata),
/// balanced over the pool's groups. Returns counts per stratum.
fn allocate_class(
    pool: &Pool,
    members: &[usize],
    target: u64,
    class: &str,
    shortfalls: &mut Vec<String>,
) -> BTreeMap<usize, u64> {
    let (strata, caps, by, all_groups) = (pool.strata, pool.caps, pool.by, pool.groups);
    let mut groups: BTreeMap<(String, String), Vec<usize>> =
        all_groups.iter().map(|g| (g.clone(), Vec::new())).collect();
    for &i in members {
        groups.entry(group_of(&strata[i], by)).or_default().push(i);
    }
    let supply: Vec<u64> = groups
        .values()
        .map(|v| v.iter().map(|&i| caps[i]).sum())
        .collect();
    let shares = water_fill(&supply, target);
    let level = shares.iter().max().copied().unwrap_or(0);
    let total: u64 = supply.iter().sum();
    if total < target {
        shortfalls.push(format!(
            "class {class}: target {target}, only {total} selectable segments"
        ));
    }
    let mut out = BTreeMap::new();
    for ((key, idx), (&share, &sup)) in groups.iter().zip(shares.iter().zip(&supply)) {
        if share < level && share == sup {
            shortfalls.push(format!(
                "class {class} sex={} age_band={}: balanced share {level}, only {sup} selectable",
                key.0, key.1
            ));
        }
        let s: Vec<u64> = idx.iter().map(|&i| caps[i]).collect();
        for (&i, n) in idx.iter().zip(water_fill(&s, share)) {
            out.insert(i, n);
        }
    }
    out
}

/// Solves the allocation of `spec` over `strata` (every gateway's visible cells).
pub(crate) fn solve(spec: &CohortSpec, strata: &[Stratum]) -> Result<Plan, PlanError> {
    let all_sites: BTreeSet<&str> = strata.iter().map(|s| s.site.as_str()).collect();
    for s in spec.sites.iter().chain(&spec.held_out) {
        if !all_sites.contains(s.as_str()) {
            return Err(PlanError::SiteWithoutStrata { site: s.clone() });
        }
    }
    let train_site = |s: &str| {
        !spec.held_out.iter().any(|h| h == s)
            && (spec.sites.is_empty() || spec.sites.iter().any(|x| x == s))
    };
    let mut shortfalls = Vec::new();
    let usable = usable_strata(spec, strata, &mut shortfalls);
    let names = spec.class_names();
    let class_idx = |s: &Stratum| spec.class_of(&s.label).unwrap_or(0);
    let train: Vec<usize> = (0..usable.len())
        .filter(|&i| train_site(&usable[i].site))
        .collect();
    if train.is_empty() {
        return Err(PlanError::NoTrainingStrata);
    }
    let mut supply_c = vec![0u64; names.len()];
    for &i in &train {
        supply_c[class_idx(&usable[i])] += usable[i].segments;
    }
    for (c, &s) in names.iter().zip(&supply_c) {
        if s == 0 {
            shortfalls.push(format!(
                "class {c}: no selectable segments at the training sites"
            ));
        }
    }
    let balanced = supply_c
        .iter()
        .copied()
        .filter(|&s| s > 0)
        .min()
        .unwrap_or(0);
    let targets: Vec<u64> = names
        .iter()
        .zip(&supply_c)
        .map(|(c, &s)| class_target(&spec.targets, c, s, balanced))
        .collect();
    let counts = allocate_training(spec, &usable, &train, &targets, &mut shortfalls);
    let mut cells: Vec<PlanCell> = counts
        .iter()
        .map(|(&i, &n)| plan_cell(&usable[i], &names[class_idx(&usable[i])], n, false))
        .collect();
    let planned = |c: &str, cells: &[PlanCell]| -> u64 {
        cells.iter().filter(|x| x.class == c).map(|x| x.count).sum()
    };
    let target_rows = names
        .iter()
        .zip(&targets)
        .map(|(c, &t)| (c.clone(), t, planned(c, &cells)))
        .collect();
    cells.extend(allocate_held_out(spec, &usable, &mut shortfalls));
    cells.retain(|c| c.count > 0);
    cells.sort_by(|a, b| {
        (a.held_out, &a.site, &a.label, &a.sex, &a.age_band).cmp(&(
            b.held_out,
            &b.site,
            &b.label,
            &b.sex,
            &b.age_band,
        ))
    });
    Ok(Plan {
        cells,
        targets: target_rows,
        shortfalls,
    })
}

/// The strata of the task's labels with at least k patients; the others are explained in
/// `shortfalls`.
fn usable_strata(
    spec: &CohortSpec,
    strata: &[Stratum],
    shortfalls: &mut Vec<String>,
) -> Vec<Stratum> {
    strata
        .iter()
        .filter(|s| spec.class_of(&s.label).is_some())
        .filter(|s| {
            if s.patients < spec.k {
                shortfalls.push(format!(
                    "site {} label {} sex={} age_band={}: {} patients, under k = {}; not used",
                    s.site, s.label, s.sex, s.age_band, s.patients, spec.k
                ));
                false
            } else {
                true
            }
        })
        .cloned()
        .collect()
}

/// A plan cell of `count` segments from stratum `s` for `class`.
fn plan_cell(s: &Stratum, class: &str, count: u64, held_out: bool) -> PlanCell {
    PlanCell {
        site: s.site.clone(),
        class: class.to_string(),
        label: s.label.clone(),
        sex: s.sex.clone(),
        age_band: s.age_band.clone(),
        count,
        supply: s.segments,
        held_out,
    }
}

/// Allocates each class's target over the training strata (`train`, indexes into `usable`),
/// balanced over the groups seen at the training sites, then scales down any site above the
/// site cap and allocates again (at most 16 rounds). Counts per stratum.
fn allocate_training(
    spec: &CohortSpec,
    usable: &[Stratum],
    train: &[usize],
    targets: &[u64],
    shortfalls: &mut Vec<String>,
) -> BTreeMap<usize, u64> {
    let names = spec.class_names();
    let class_idx = |s: &Stratum| spec.class_of(&s.label).unwrap_or(0);
    // The balance groups seen at the training sites (in any class): a class lacking one of
    // them has a shortfall there, explained like any other.
    let train_groups: BTreeSet<(String, String)> = train
        .iter()
        .map(|&i| group_of(&usable[i], &spec.balance.by))
        .collect();
    let mut caps: Vec<u64> = usable.iter().map(|s| s.segments).collect();
    let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
    let mut cap_notes = Vec::new();
    for round in 0..16 {
        let mut notes = Vec::new();
        counts.clear();
        for (c, name) in names.iter().enumerate() {
            let members: Vec<usize> = train
                .iter()
                .copied()
                .filter(|&i| class_idx(&usable[i]) == c)
                .collect();
            counts.extend(allocate_class(
                &Pool {
                    strata: usable,
                    caps: &caps,
                    by: &spec.balance.by,
                    groups: &train_groups,
                },
                &members,
                targets[c],
                name,
                &mut notes,
            ));
        }
        let total: u64 = counts.values().sum();
        let mut per_site: BTreeMap<&str, u64> = BTreeMap::new();
        for (&i, &n) in &counts {
            *per_site.entry(usable[i].site.as_str()).or_insert(0) += n;
        }
        let cap = spec.balance.site_cap;
        let over: Vec<(&str, u64)> = per_site
            .iter()
            .filter(|(_, n)| **n as f64 > cap * total as f64 + 1e-9)
            .map(|(s, n)| (*s, *n))
            .collect();
        if over.is_empty() || round == 15 {
            if !over.is_empty() {
                notes.push(format!(
                    "site cap {cap}: could not be met after {round} rounds"
                ));
            }
            shortfalls.extend(notes);
            break;
        }
        for (site, n) in over {
            let others = total - n;
            let allowed = if cap >= 1.0 {
                n
            } else {
                ((cap * others as f64) / (1.0 - cap)).floor() as u64
            };
            cap_notes.push(format!(
                "site {site}: {n} of {total} segments is over the cap {cap}; limited to {allowed}"
            ));
            // Scale the site's strata down to `allowed` (water-filled over its strata).
            let idx: Vec<usize> = counts
                .keys()
                .copied()
                .filter(|&i| usable[i].site == site)
                .collect();
            let cur: Vec<u64> = idx.iter().map(|i| counts[i]).collect();
            for (&i, m) in idx.iter().zip(water_fill(&cur, allowed)) {
                caps[i] = m;
            }
        }
    }
    shortfalls.extend(cap_notes);
    counts
}

/// The held-out sites' cells: per site and class, balanced over the site's groups like
/// training.
fn allocate_held_out(
    spec: &CohortSpec,
    usable: &[Stratum],
    shortfalls: &mut Vec<String>,
) -> Vec<PlanCell> {
    let names = spec.class_names();
    let class_idx = |s: &Stratum| spec.class_of(&s.label).unwrap_or(0);
    let mut cells = Vec::new();
    for site in &spec.held_out {
        for (c, name) in names.iter().enumerate() {
            let members: Vec<usize> = (0..usable.len())
                .filter(|&i| usable[i].site == *site && class_idx(&usable[i]) == c)
                .collect();
            let site_groups: BTreeSet<(String, String)> = usable
                .iter()
                .filter(|s| s.site == *site)
                .map(|s| group_of(s, &spec.balance.by))
                .collect();
            let supply: u64 = members.iter().map(|&i| usable[i].segments).sum();
            if supply == 0 {
                continue;
            }
            let t = class_target(&spec.held_out_targets, name, supply, supply);
            let caps: Vec<u64> = usable.iter().map(|s| s.segments).collect();
            let mut notes = Vec::new();
            let got = allocate_class(
                &Pool {
                    strata: usable,
                    caps: &caps,
                    by: &spec.balance.by,
                    groups: &site_groups,
                },
                &members,
                t,
                &format!("{name} (held-out {site})"),
                &mut notes,
            );
            shortfalls.extend(notes);
            cells.extend(
                got.into_iter()
                    .map(|(i, n)| plan_cell(&usable[i], name, n, true)),
            );
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{LoadedSpec, Targets};

    fn st(site: &str, label: &str, sex: &str, age: &str, n: u64) -> Stratum {
        Stratum {
            site: site.into(),
            label: label.into(),
            sex: sex.into(),
            age_band: age.into(),
            segments: n,
            patients: n,
        }
    }

    fn spec(extra: &str) -> CohortSpec {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, format!("purpose = \"t\"\n{extra}")).unwrap();
        LoadedSpec::read(&p).unwrap().spec
    }

    #[test]
    fn water_fill_is_max_min_fair_and_exact() {
        assert_eq!(water_fill(&[10, 10, 10], 7), vec![3, 2, 2]);
        assert_eq!(water_fill(&[1, 10, 10], 9), vec![1, 4, 4]);
        assert_eq!(water_fill(&[1, 10, 10], 10), vec![1, 5, 4]);
        assert_eq!(water_fill(&[2, 3], 100), vec![2, 3]);
        assert_eq!(water_fill(&[], 5), Vec::<u64>::new());
        // Property: total is min(target, sum); no bucket over its supply; buckets under the
        // level are full; the others differ by at most one.
        let mut x = 12345u64;
        for _ in 0..500 {
            let n = (x % 7) as usize + 1;
            let supply: Vec<u64> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 40) % 50
                })
                .collect();
            let target = (x >> 20) % 200;
            let a = water_fill(&supply, target);
            assert_eq!(a.iter().sum::<u64>(), target.min(supply.iter().sum()));
            let max = *a.iter().max().unwrap();
            for (&ai, &si) in a.iter().zip(&supply) {
                assert!(ai <= si);
                assert!(ai == si || ai + 1 >= max, "{supply:?} {target} {a:?}");
            }
        }
    }

    #[test]
    fn sex_balance_is_exact_where_counts_allow_and_shortfalls_are_explained() {
        let s = spec("targets = 40\n[balance]\nby = [\"sex\"]\n");
        let strata = vec![
            st("a", "426783006", "M", "40-59", 30),
            st("a", "426783006", "F", "40-59", 8),
            st("b", "426783006", "F", "60-79", 9),
            st("b", "164889003", "M", "60-79", 5),
            st("b", "164889003", "F", "60-79", 3),
            st("b", "unknown", "F", "60-79", 99),
        ];
        let p = solve(&s, &strata).unwrap();
        let sum = |class: &str, sex: &str| sum_of(&p, class, sex);
        assert_eq!((sum("N", "M"), sum("N", "F")), (23, 17));
        assert_eq!((sum("A", "M"), sum("A", "F")), (5, 3));
        assert!(p.cells.iter().all(|c| c.label != "unknown"));
        assert!(
            p.shortfalls.iter().any(|l| l.contains("class N sex=F")),
            "{:?}",
            p.shortfalls
        );
        assert!(
            p.shortfalls
                .iter()
                .any(|l| l.contains("class A: target 40, only 8"))
        );
        assert!(
            p.shortfalls
                .iter()
                .any(|l| l.contains("class ~: no selectable"))
        );
        assert_eq!(p.targets[0], ("N".into(), 40, 40));
        // "balanced": every class gets the smallest class supply (8 here).
        let s = spec("[balance]\nby = [\"sex\"]\n");
        let p = solve(&s, &strata).unwrap();
        assert_eq!(p.targets[0], ("N".into(), 8, 8));
        assert_eq!((sum_of(&p, "N", "M"), sum_of(&p, "N", "F")), (4, 4));
        assert_eq!(s.targets, Targets::Mode("balanced".into()));
    }

    #[test]
    fn a_group_missing_from_one_class_is_a_shortfall() {
        let s = spec("targets = 6\n[balance]\nby = [\"sex\"]\n");
        let strata = vec![
            st("a", "426783006", "M", "x", 9),
            st("b", "426783006", "F", "x", 9),
            st("a", "other", "M", "x", 9),
        ];
        let p = solve(&s, &strata).unwrap();
        assert_eq!((sum_of(&p, "N", "M"), sum_of(&p, "N", "F")), (3, 3));
        assert_eq!((sum_of(&p, "O", "M"), sum_of(&p, "O", "F")), (6, 0));
        assert!(
            p.shortfalls
                .iter()
                .any(|l| l == "class O sex=F age_band=*: balanced share 6, only 0 selectable"),
            "{:?}",
            p.shortfalls
        );
    }

    fn sum_of(p: &Plan, class: &str, sex: &str) -> u64 {
        p.cells
            .iter()
            .filter(|c| c.class == class && c.sex == sex)
            .map(|c| c.count)
            .sum()
    }

    #[test]
    fn site_cap_and_held_out_sites() {
        let s = spec("targets = \"all\"\nheld_out = [\"c\"]\n[balance]\nby = []\nsite_cap = 0.5\n");
        let strata = vec![
            st("a", "426783006", "M", "x", 90),
            st("b", "426783006", "M", "x", 30),
            st("c", "426783006", "M", "x", 7),
            st("c", "164889003", "F", "x", 2),
        ];
        let p = solve(&s, &strata).unwrap();
        let t = p.site_totals();
        assert_eq!((t["a"], t["b"]), (30, 30));
        assert!(p.shortfalls.iter().any(|l| l.contains("site a: 90 of 120")));
        let held: Vec<(&str, u64)> = p
            .cells
            .iter()
            .filter(|c| c.held_out)
            .map(|c| (c.class.as_str(), c.count))
            .collect();
        assert_eq!(held, vec![("A", 2), ("N", 7)]);
        assert_eq!(
            solve(&spec("sites = [\"zz\"]\n"), &strata).unwrap_err(),
            PlanError::SiteWithoutStrata { site: "zz".into() }
        );
    }
}
