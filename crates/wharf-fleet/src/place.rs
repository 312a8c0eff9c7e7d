//! Placement of one placeable: hard rules are filters, the preference is a
//! score, and the two never mix (the Kubernetes scheduler's split).
//!
//! Owns: [`filter`] (every hard rule, in a fixed order, first failure wins),
//! the score (lowest resulting maximum utilisation over all dimensions, ties
//! to the lower cell id), [`place`], and the [`Refusal`] that says, per
//! cell, which rule ruled it out and what capacity would make it fit.
//! Must never: relax a rule, or change the fleet (the caller assigns).

use std::collections::BTreeMap;
use std::fmt;

use crate::alert::{Alert, Severity};
use crate::model::{utilisation, CellId, CellState, Dimension, Fleet, PlaceableId, Policy, Scope};

/// One dimension that would end above the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Overage {
    /// Which dimension.
    pub dimension: Dimension,
    /// Utilisation after the placement (0.83 = 83%).
    pub would_be: f64,
    /// The threshold it would exceed.
    pub threshold: f64,
    /// Capacity the cell would need in addition, in the dimension's unit,
    /// for the placement to fit within the threshold.
    pub needs_more: u64,
}

/// The hard rule that ruled a cell out.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The cell was removed from the fleet.
    Retired,
    /// The placeable excludes this cell.
    Excluded,
    /// The placeable is pinned to other cells.
    NotPinned,
    /// The cell is being drained.
    Draining,
    /// The cell's use could not be read.
    UsageUnknown,
    /// The cell's last reading is older than its staleness bound.
    Stale {
        /// Seconds since its last reading.
        age: u64,
        /// Its staleness bound in seconds.
        bound: u64,
    },
    /// A member of one of the placeable's anti-affinity groups occupies this
    /// cell (or this zone, for zone scope).
    AntiAffinity {
        /// The group.
        group: String,
        /// The scope that applies.
        scope: Scope,
        /// The member in the way.
        with: PlaceableId,
    },
    /// At least one dimension would end above the threshold (worst first).
    OverThreshold(Vec<Overage>),
}

impl Reason {
    /// The key the count summary groups by, e.g. `storage over threshold`.
    pub fn summary_key(&self) -> String {
        match self {
            Reason::Retired => "retired".into(),
            Reason::Excluded => "excluded".into(),
            Reason::NotPinned => "not pinned".into(),
            Reason::Draining => "draining".into(),
            Reason::UsageUnknown => "usage unknown".into(),
            Reason::Stale { .. } => "usage stale".into(),
            Reason::AntiAffinity { group, scope, .. } => {
                format!("anti-affinity group {group} ({scope})")
            }
            Reason::OverThreshold(o) => format!("{} over threshold", o[0].dimension),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Retired => f.write_str("retired"),
            Reason::Excluded => f.write_str("excluded by the placeable"),
            Reason::NotPinned => f.write_str("the placeable is pinned to other cells"),
            Reason::Draining => f.write_str("draining"),
            Reason::UsageUnknown => f.write_str("usage unknown"),
            Reason::Stale { age, bound } => {
                write!(f, "usage stale: last read {age} s ago > bound {bound} s")
            }
            Reason::AntiAffinity { group, scope, with } => write!(
                f,
                "anti-affinity group {group}: {with} is already in this {scope}"
            ),
            Reason::OverThreshold(over) => {
                for (i, o) in over.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(
                        f,
                        "{} would be {:.1}% > {:.0}%; needs {} more {} capacity",
                        o.dimension,
                        o.would_be * 100.0,
                        o.threshold * 100.0,
                        o.dimension.format(o.needs_more as f64),
                        o.dimension
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// One cell that did not pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The cell.
    pub cell: CellId,
    /// Why.
    pub reason: Reason,
}

/// No cell passed every filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// What could not be placed.
    pub placeable: PlaceableId,
    /// Every cell considered and why it was ruled out, in cell order.
    pub rejections: Vec<Rejection>,
}

impl Refusal {
    /// Reasons counted across cells, most frequent first, then by name.
    pub fn summary(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.rejections {
            *counts.entry(r.reason.summary_key()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// The one-line summary: `0/200 cells fit p7: 150 storage over
    /// threshold, 40 anti-affinity group X (cell), 10 draining`.
    pub fn headline(&self) -> String {
        let parts: Vec<String> = self
            .summary()
            .into_iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        format!(
            "0/{} cells fit {}: {}",
            self.rejections.len(),
            self.placeable,
            parts.join(", ")
        )
    }

    /// The alert a service raises for this refusal.
    pub fn alert(&self) -> Alert {
        let top = self.summary().into_iter().next().map(|(k, _)| k);
        Alert {
            name: "wharf_fleet_placement_refused",
            severity: Severity::Critical,
            labels: vec![
                ("placeable", self.placeable.to_string()),
                ("reason", top.unwrap_or_else(|| "no cells".into())),
            ],
            message: self.headline(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        for r in &self.rejections {
            writeln!(f, "  cell {}: {}", r.cell, r.reason)?;
        }
        Ok(())
    }
}

/// Where a placeable goes, and why there.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// What was placed.
    pub placeable: PlaceableId,
    /// The chosen cell's id.
    pub cell: CellId,
    /// The chosen cell's index in the fleet.
    pub cell_index: usize,
    /// The score: the cell's highest utilisation after the placement.
    pub score: f64,
    /// The dimension of that highest utilisation.
    pub score_dimension: Dimension,
    /// How many cells passed every filter.
    pub fitting: usize,
    /// How many cells were considered.
    pub total: usize,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> cell {}: {}/{} cells fit; lowest resulting max utilisation {:.1}% ({})",
            self.placeable,
            self.cell,
            self.fitting,
            self.total,
            self.score * 100.0,
            self.score_dimension
        )
    }
}

/// Every hard rule for placeable `pi` on cell `ci`, in order; the first
/// that fails is the reason. On success returns the score (highest
/// utilisation after placement) and its dimension. A placeable already
/// occupying `ci` is counted once (its demand is not added again).
pub fn filter(
    fleet: &Fleet,
    pi: usize,
    ci: usize,
    policy: &Policy,
    now: u64,
) -> Result<(f64, Dimension), Reason> {
    let cell = &fleet.cells()[ci];
    let p = &fleet.placeables()[pi];
    if cell.state == CellState::Retired {
        return Err(Reason::Retired);
    }
    if p.excluded.contains(&cell.id) {
        return Err(Reason::Excluded);
    }
    if !p.pinned_to.is_empty() && !p.pinned_to.contains(&cell.id) {
        return Err(Reason::NotPinned);
    }
    match cell.state {
        CellState::Draining => return Err(Reason::Draining),
        CellState::Unknown => return Err(Reason::UsageUnknown),
        CellState::Active | CellState::Retired => {}
    }
    if cell.is_stale(now) {
        return Err(Reason::Stale {
            age: now.saturating_sub(cell.last_seen),
            bound: cell.staleness_bound,
        });
    }
    if let Some((group, scope, other)) = fleet.anti_affinity_conflict(pi, ci) {
        return Err(Reason::AntiAffinity {
            group: group.to_string(),
            scope,
            with: fleet.placeables()[other].id,
        });
    }
    let (occ, n) = fleet.occupied(pi);
    let already_here = occ[..n].contains(&ci);
    let reserved = policy.reserved(p);
    let used = fleet.used(ci);
    let mut over = Vec::new();
    let mut best = (f64::NEG_INFINITY, Dimension::Connections);
    for d in Dimension::ALL {
        let after = if already_here {
            used[d] - p.demand[d] + reserved[d]
        } else {
            used[d].saturating_add(reserved[d])
        };
        let cap = cell.capacity[d];
        let u = utilisation(after, cap);
        if !policy.within(d, after, cap) {
            let t = policy.threshold[d.index()];
            let need_total = (after as f64 / t).ceil() as u64;
            let mut needs_more = need_total.saturating_sub(cap);
            while !policy.within(d, after, cap + needs_more) {
                needs_more += 1;
            }
            over.push(Overage {
                dimension: d,
                would_be: u,
                threshold: t,
                needs_more,
            });
        }
        if u > best.0 {
            best = (u, d);
        }
    }
    if !over.is_empty() {
        over.sort_by(|a, b| b.would_be.total_cmp(&a.would_be));
        return Err(Reason::OverThreshold(over));
    }
    Ok(best)
}

/// Chooses a cell for placeable `pi`: among the cells passing every filter,
/// the lowest resulting maximum utilisation, ties to the lower cell id. When
/// none passes, a [`Refusal`] with every cell's reason.
pub fn place(fleet: &Fleet, pi: usize, policy: &Policy, now: u64) -> Result<Placement, Refusal> {
    let mut best: Option<(f64, CellId, usize, Dimension)> = None;
    let mut fitting = 0;
    let mut rejections = Vec::new();
    for (ci, cell) in fleet.cells().iter().enumerate() {
        match filter(fleet, pi, ci, policy, now) {
            Ok((score, dim)) => {
                fitting += 1;
                let better = match best {
                    None => true,
                    Some((s, id, _, _)) => score < s || (score == s && cell.id < id),
                };
                if better {
                    best = Some((score, cell.id, ci, dim));
                }
            }
            Err(reason) => rejections.push(Rejection {
                cell: cell.id,
                reason,
            }),
        }
    }
    let placeable = fleet.placeables()[pi].id;
    match best {
        Some((score, cell, cell_index, score_dimension)) => Ok(Placement {
            placeable,
            cell,
            cell_index,
            score,
            score_dimension,
            fitting,
            total: fleet.cells().len(),
        }),
        None => {
            rejections.sort_by_key(|r| r.cell);
            Err(Refusal {
                placeable,
                rejections,
            })
        }
    }
}
