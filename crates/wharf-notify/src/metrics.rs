//! The `wharf_notify_*` metrics (docs/notifications.md, "Metrics"), one
//! series per endpoint id (a node's endpoints, and the tenant endpoints
//! that have had an event lately): a bounded set, never URLs.

use wharf_telemetry::Exposition;

use crate::notifier::{EndpointStats, GaveUp};

pub(crate) fn render(endpoints: &[EndpointStats], out: &mut Exposition) {
    type Field = fn(&EndpointStats) -> u64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "wharf_notify_events_queued_total",
            "Events put in the endpoint's delivery queue.",
            |s| s.queued,
        ),
        (
            "wharf_notify_events_delivered_total",
            "Events the endpoint took (answered 2xx).",
            |s| s.delivered,
        ),
        (
            "wharf_notify_events_dropped_total",
            "Events not queued for the endpoint because its queue was full.",
            |s| s.dropped,
        ),
        (
            "wharf_notify_delivery_attempts_failed_total",
            "Delivery attempts to the endpoint that failed (each retry counts).",
            |s| s.attempts_failed,
        ),
    ];
    for (name, help, f) in counters {
        for s in endpoints {
            out.counter(name, help, &[("endpoint", &s.id)], f(s) as f64);
        }
    }
    for s in endpoints {
        for reason in GaveUp::ALL {
            let n = match reason {
                GaveUp::Attempts => s.failed_attempts,
                GaveUp::Expired => s.failed_expired,
                GaveUp::Rejected => s.failed_rejected,
            };
            out.counter(
                "wharf_notify_events_failed_total",
                "Events given up for the endpoint: every attempt failed (attempts), too old to send (expired), or refused with 4xx (rejected).",
                &[("endpoint", &s.id), ("reason", reason.as_str())],
                n as f64,
            );
        }
    }
    let gauges: [(&str, &str, Field); 3] = [
        (
            "wharf_notify_queue_depth",
            "Events waiting in the endpoint's queue (the one being delivered is not counted).",
            |s| s.depth,
        ),
        (
            "wharf_notify_queue_capacity",
            "Events the endpoint's queue holds; one more is dropped.",
            |s| s.capacity,
        ),
        (
            "wharf_notify_endpoint_failing",
            "1 from a failed delivery attempt to the endpoint until one succeeds.",
            |s| u64::from(s.failing),
        ),
    ];
    for (name, help, f) in gauges {
        for s in endpoints {
            out.gauge(name, help, &[("endpoint", &s.id)], f(s) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_series_per_endpoint() {
        let stats = |id: &str| EndpointStats {
            id: id.into(),
            queued: 5,
            delivered: 3,
            dropped: 2,
            failed_attempts: 1,
            failed_rejected: 1,
            depth: 0,
            capacity: 8,
            failing: true,
            ..EndpointStats::default()
        };
        let mut out = Exposition::new();
        render(&[stats("node-1"), stats("acme/ci")], &mut out);
        let text = out.finish();
        for line in [
            r#"wharf_notify_events_queued_total{endpoint="node-1"} 5"#,
            r#"wharf_notify_events_delivered_total{endpoint="acme/ci"} 3"#,
            r#"wharf_notify_events_dropped_total{endpoint="node-1"} 2"#,
            r#"wharf_notify_events_failed_total{endpoint="node-1",reason="attempts"} 1"#,
            r#"wharf_notify_events_failed_total{endpoint="node-1",reason="expired"} 0"#,
            r#"wharf_notify_events_failed_total{endpoint="node-1",reason="rejected"} 1"#,
            r#"wharf_notify_queue_depth{endpoint="acme/ci"} 0"#,
            r#"wharf_notify_queue_capacity{endpoint="acme/ci"} 8"#,
            r#"wharf_notify_endpoint_failing{endpoint="node-1"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE wharf_notify_queue_depth gauge")
                .count(),
            1
        );
    }
}
