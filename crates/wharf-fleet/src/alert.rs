//! Alert records: what a fleet service turns into metrics and log lines.
//!
//! Owns: [`Alert`] and [`utilisation_alerts`], which warn at the policy's
//! warning level and go critical at its threshold, so that an operator hears
//! of a filling cell well before it is full.
//! Must never: emit anything itself (no logging, no I/O).

use std::fmt;

use crate::model::{CellState, Dimension, Fleet, Policy};

/// How urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Act soon.
    Warning,
    /// Act now.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// One alert: a name (a metric-style identifier), a severity, labels and a
/// sentence for people.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// E.g. `wharf_fleet_cell_utilisation_high`.
    pub name: &'static str,
    /// How urgent.
    pub severity: Severity,
    /// Label pairs, e.g. `("cell", "c7")`.
    pub labels: Vec<(&'static str, String)>,
    /// What happened, for people.
    pub message: String,
}

impl Alert {
    /// The value of a label, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}{{", self.severity, self.name)?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"{v}\"")?;
        }
        write!(f, "}} {}", self.message)
    }
}

/// One alert per (cell, dimension) at or above the warning level: a warning
/// below the threshold, critical above it. Also a warning for every cell
/// whose reading is stale or unknown, since its use cannot be trusted.
pub fn utilisation_alerts(fleet: &Fleet, policy: &Policy, now: u64) -> Vec<Alert> {
    let mut out = Vec::new();
    for (ci, cell) in fleet.cells().iter().enumerate() {
        if cell.state == CellState::Retired {
            continue;
        }
        if cell.state == CellState::Unknown || cell.is_stale(now) {
            out.push(Alert {
                name: "wharf_fleet_cell_usage_unknown",
                severity: Severity::Warning,
                labels: vec![
                    ("cell", cell.id.to_string()),
                    ("zone", cell.zone.to_string()),
                ],
                message: format!(
                    "cell {}: usage last read {} s ago; nothing is placed there until it reports",
                    cell.id,
                    now.saturating_sub(cell.last_seen)
                ),
            });
        }
        for d in Dimension::ALL {
            let u = fleet.utilisation(ci, d);
            let warn = policy.warn[d.index()];
            let crit = policy.threshold[d.index()];
            if u < warn {
                continue;
            }
            let severity = if u > crit {
                Severity::Critical
            } else {
                Severity::Warning
            };
            out.push(Alert {
                name: "wharf_fleet_cell_utilisation_high",
                severity,
                labels: vec![
                    ("cell", cell.id.to_string()),
                    ("zone", cell.zone.to_string()),
                    ("dimension", d.label().to_string()),
                ],
                message: format!(
                    "cell {}: {} at {:.1}% (warn {:.0}%, threshold {:.0}%)",
                    cell.id,
                    d,
                    u * 100.0,
                    warn * 100.0,
                    crit * 100.0
                ),
            });
        }
    }
    out
}
