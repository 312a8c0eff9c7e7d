//! The connection budget: every node opens its own bounded pool to each
//! shared dependency (design invariant 2), so the sum over all nodes must fit
//! inside what the dependency accepts. This module checks that sum instead of
//! trusting it.
//!
//! Owns: [`check`], a pure function of the cluster's shape and the
//! dependencies' limits, used by `wharf check` and by `wharf serve` at start.
//! Must never: guess a dependency's limit. An unknown limit is reported as
//! unchecked, not assumed to be large.

/// Share of a dependency's connection limit that the cluster's pools may
/// take together: the rest is headroom for operators, migrations and
/// failover (a replacement node starting before the old one is gone).
pub const MAX_SHARE: f64 = 0.8;

/// One shared dependency's pool and limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// For messages, e.g. `PostgreSQL max_connections`.
    pub name: &'static str,
    /// Connections one node may open.
    pub per_node: usize,
    /// What the dependency accepts in all, if known.
    pub limit: Option<usize>,
}

/// The outcome for one dependency.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// `nodes × per_node` fits within [`MAX_SHARE`] of the limit.
    Fits { total: usize, allowed: usize },
    /// It does not.
    Exceeds { total: usize, allowed: usize },
    /// The dependency's limit is not known, so nothing was checked.
    Unchecked { total: usize },
}

/// Checks each dependency's pools, summed over `nodes` nodes.
pub fn check(nodes: usize, deps: &[Dependency]) -> Vec<(Dependency, Verdict)> {
    deps.iter()
        .map(|d| {
            let total = nodes.saturating_mul(d.per_node);
            let verdict = match d.limit {
                None => Verdict::Unchecked { total },
                Some(limit) => {
                    let allowed = (limit as f64 * MAX_SHARE).floor() as usize;
                    if total <= allowed {
                        Verdict::Fits { total, allowed }
                    } else {
                        Verdict::Exceeds { total, allowed }
                    }
                }
            };
            (d.clone(), verdict)
        })
        .collect()
}

/// One line per dependency, saying what was checked and how it came out.
pub fn describe(nodes: usize, results: &[(Dependency, Verdict)]) -> Vec<String> {
    results
        .iter()
        .map(|(d, v)| match v {
            Verdict::Fits { total, allowed } => format!(
                "ok: {nodes} node(s) x {} = {total} connections to {} <= {allowed} (80% of {})",
                d.per_node,
                d.name,
                d.limit.unwrap_or(0)
            ),
            Verdict::Exceeds { total, allowed } => format!(
                "too many: {nodes} node(s) x {} = {total} connections to {} > {allowed} (80% of {}); \
                 lower the pool per node or raise the limit",
                d.per_node,
                d.name,
                d.limit.unwrap_or(0)
            ),
            Verdict::Unchecked { total } => format!(
                "unchecked: {nodes} node(s) x {} = {total} connections to {}, whose limit is not known",
                d.per_node, d.name
            ),
        })
        .collect()
}

/// True when no dependency's limit is exceeded.
pub fn all_fit(results: &[(Dependency, Verdict)]) -> bool {
    !results
        .iter()
        .any(|(_, v)| matches!(v, Verdict::Exceeds { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(per_node: usize, limit: Option<usize>) -> Dependency {
        Dependency {
            name: "PostgreSQL max_connections",
            per_node,
            limit,
        }
    }

    #[test]
    fn the_sum_over_nodes_must_fit_in_80_percent() {
        // 3 x 26 = 78 <= 80 = 80% of 100.
        let r = check(3, &[pg(26, Some(100))]);
        assert_eq!(
            r[0].1,
            Verdict::Fits {
                total: 78,
                allowed: 80
            }
        );
        assert!(all_fit(&r));
        // 3 x 27 = 81 > 80.
        let r = check(3, &[pg(27, Some(100))]);
        assert_eq!(
            r[0].1,
            Verdict::Exceeds {
                total: 81,
                allowed: 80
            }
        );
        assert!(!all_fit(&r));
        assert!(
            describe(3, &r)[0].contains("81 connections"),
            "{:?}",
            describe(3, &r)
        );
    }

    #[test]
    fn an_unknown_limit_is_reported_not_assumed() {
        let r = check(50, &[pg(64, None)]);
        assert_eq!(r[0].1, Verdict::Unchecked { total: 3200 });
        assert!(all_fit(&r));
        assert!(describe(50, &r)[0].starts_with("unchecked"));
    }

    #[test]
    fn every_dependency_is_checked() {
        let s3 = Dependency {
            name: "object store connection limit",
            per_node: 100,
            limit: Some(200),
        };
        let r = check(2, &[pg(10, Some(100)), s3]);
        assert!(matches!(r[0].1, Verdict::Fits { .. }));
        assert!(matches!(r[1].1, Verdict::Exceeds { .. }));
    }
}
