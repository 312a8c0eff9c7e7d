//! The scraper against tiny HTTP servers standing for a cell's nodes: no
//! reading until every node has answered twice, figures summed over nodes,
//! and a node that fails, answers garbage or too much makes the round a
//! failure that keeps the old figures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use wharf_fleet::Dimension;
use wharf_fleetd::scrape::{CellScraper, ScrapeConfig};

use common::{node_text, FakeNode};

fn config() -> ScrapeConfig {
    ScrapeConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        max_concurrent: 2,
        max_body: 4096,
        token: None,
    }
}

#[tokio::test]
async fn a_cell_is_read_from_all_its_nodes_and_failures_keep_the_old_figures() {
    let (a, b) = (FakeNode::start().await, FakeNode::start().await);
    a.set(&node_text(16, &[("acme", 10, 5_000)]));
    b.set(&node_text(8, &[("acme", 20, 5_000), ("beta", 0, 7)]));
    let s = Arc::new(CellScraper::new(1, vec![a.url.clone(), b.url.clone()], config()).unwrap());

    let r = s.scrape(100).await;
    assert_eq!(r.last_seen, None, "rates need a second reading");
    assert_eq!(r.failures_total, 0);

    a.set(&node_text(16, &[("acme", 30, 6_000)]));
    let r = s.scrape(115).await;
    assert_eq!(r.last_seen, Some(115));
    assert_eq!(r.total[Dimension::Connections], 24, "16 + 8");
    let acme = r.tenants["acme"];
    assert_eq!(
        acme[Dimension::Storage],
        6_000,
        "the largest report, not a sum"
    );
    assert!(acme[Dimension::PullRate] > 0, "20 more pulls on node a");
    assert_eq!(r.tenants["beta"][Dimension::Storage], 7);

    // Garbage from one node: the round fails, the figures stay.
    b.set("wharf_tenant_stored_bytes{tenant=\"acme\" 1\n");
    let r = s.scrape(130).await;
    assert_eq!((r.failures_total, r.last_seen), (1, Some(115)));
    assert!(
        r.last_error.as_deref().unwrap().contains("metrics line 1"),
        "{r:?}"
    );

    // Too much text is refused, not read to the end.
    b.set(&"# padding\n".repeat(1000));
    let r = s.scrape(145).await;
    assert_eq!(r.failures_total, 2);
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .contains("larger than 4096"),
        "{r:?}"
    );

    // A node down.
    b.set(&node_text(8, &[]));
    b.set_down(true);
    let r = s.scrape(160).await;
    assert_eq!(r.failures_total, 3);
    assert!(
        r.last_error.as_deref().unwrap().contains("HTTP 500"),
        "{r:?}"
    );
    assert_eq!(r.last_seen, Some(115));

    // Back: read again at once (node b's previous sample is still there).
    b.set_down(false);
    let r = s.scrape(175).await;
    assert_eq!((r.last_seen, r.last_error.as_deref()), (Some(175), None));
}

#[tokio::test]
async fn a_node_that_never_answers_costs_at_most_the_request_timeout() {
    // A socket that accepts and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut c = config();
    c.request_timeout = Duration::from_millis(300);
    let s = Arc::new(CellScraper::new(1, vec![url], c).unwrap());
    let started = std::time::Instant::now();
    let r = s.scrape(1).await;
    assert_eq!(r.failures_total, 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(silent);
}
