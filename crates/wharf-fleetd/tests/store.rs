//! The fleet's PostgreSQL store against a real server: migrations, and the
//! rules the schema itself keeps (one move in flight per tenant, retiring
//! only an empty cell, no cancel after the route flip).

mod common;

use wharf_fleet::{Load, DIMS};
use wharf_fleetd::store::{
    CellLifecycle, CellRecord, GroupRule, GroupScope, MoveState, MoveUpdate, NewMove, NewTenant,
    TenantRules, SCHEMA_VERSION,
};
use wharf_fleetd::StoreError;

fn cell(id: u32, nodes: &[&str]) -> CellRecord {
    CellRecord {
        id,
        zone: 1,
        state: CellLifecycle::Active,
        capacity: [100, 1 << 40, 1000, 100, 1 << 30],
        threshold: [0.7; DIMS],
        warn: [0.6; DIMS],
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        created_unix: 0,
        updated_unix: 0,
    }
}

fn tenant(name: &str, cell: u32) -> NewTenant {
    NewTenant {
        name: name.into(),
        cell,
        hostname: Some(format!("{name}.example")),
        demand: Load([0, 1000, 0, 0, 0]),
        rules: TenantRules {
            anti_affinity: vec![GroupRule {
                group: "g".into(),
                scope: GroupScope::Zone,
            }],
            pinned_to: vec![],
            excluded: vec![2],
        },
        quota: Default::default(),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let store = db.store().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(store.migrate().await.unwrap(), 0, "nothing left to apply");
    // Two at once take turns on the advisory lock.
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    assert_eq!(a.unwrap() + b.unwrap(), 0);
}

#[tokio::test]
async fn cells_tenants_moves_and_decisions_round_trip() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let s = db.store().await;
    let c1 = s
        .add_cell(&cell(1, &["http://a:1", "http://b:1"]), 100)
        .await
        .unwrap();
    assert_eq!(c1.nodes, vec!["http://a:1", "http://b:1"]);
    assert_eq!(c1.state, CellLifecycle::Active);
    assert!(matches!(
        s.add_cell(&cell(1, &[]), 100).await,
        Err(StoreError::Conflict(_))
    ));
    s.add_cell(&cell(2, &["http://c:1"]), 100).await.unwrap();
    assert_eq!(s.cells().await.unwrap().len(), 2);

    let t = s.add_tenant(&tenant("acme", 1), 200).await.unwrap();
    assert_eq!(t.cell, 1);
    assert_eq!(t.rules.excluded, vec![2]);
    assert_eq!(t.demand[1], 1000);
    assert!(matches!(
        s.add_tenant(&tenant("acme", 2), 200).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_tenant(&tenant("ghost", 9), 200).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.tenant("acme").await.unwrap(), t);

    let mv = |to| NewMove {
        tenant: "acme".into(),
        from: 1,
        to,
        reason: "test".into(),
    };
    let ids = s.add_moves(&[mv(2)], 300).await.unwrap();
    assert!(
        matches!(
            s.add_moves(&[mv(2)], 300).await,
            Err(StoreError::Conflict(_))
        ),
        "one move in flight per tenant"
    );
    let m = s
        .update_move(
            ids[0],
            &MoveUpdate {
                state: Some(MoveState::Running),
                step: Some("copy".into()),
                counters: Some(serde_json::json!({"bytes": 10})),
                fence_start: true,
                ..MoveUpdate::default()
            },
            310,
        )
        .await
        .unwrap();
    assert_eq!(
        (m.state, m.step.as_str(), m.step_since_unix),
        (MoveState::Running, "copy", 310)
    );
    assert_eq!(m.counters["bytes"], 10);
    assert_eq!(m.fence_start_unix, Some(310));
    let m = s
        .update_move(
            ids[0],
            &MoveUpdate {
                step: Some("copy".into()),
                ..MoveUpdate::default()
            },
            320,
        )
        .await
        .unwrap();
    assert_eq!(m.step_since_unix, 310, "the same step keeps its clock");
    // The fence down, then up anew (a resumed move): the new fence has no
    // end yet.
    let down = MoveUpdate {
        fence_end: true,
        ..MoveUpdate::default()
    };
    let m = s.update_move(ids[0], &down, 322).await.unwrap();
    assert_eq!(
        (m.fence_start_unix, m.fence_end_unix),
        (Some(310), Some(322))
    );
    let up = MoveUpdate {
        fence_start: true,
        ..MoveUpdate::default()
    };
    let m = s.update_move(ids[0], &up, 325).await.unwrap();
    assert_eq!((m.fence_start_unix, m.fence_end_unix), (Some(325), None));

    // Retiring needs the cell empty.
    assert!(matches!(
        s.set_cell_state(2, &[CellLifecycle::Active], CellLifecycle::Retired, 330)
            .await,
        Err(StoreError::Conflict(_))
    ));

    let m = s.flip_move(ids[0], 340).await.unwrap();
    assert_eq!(m.step, "flipped");
    assert_eq!(s.tenant("acme").await.unwrap().cell, 2);
    assert!(
        matches!(
            s.cancel_move(ids[0], 350).await,
            Err(StoreError::Conflict(_))
        ),
        "no cancel after the flip"
    );
    let m = s
        .update_move(
            ids[0],
            &MoveUpdate {
                state: Some(MoveState::Done),
                ..MoveUpdate::default()
            },
            360,
        )
        .await
        .unwrap();
    assert_eq!(m.state, MoveState::Done);
    assert!(matches!(
        s.update_move(ids[0], &MoveUpdate::default(), 370).await,
        Err(StoreError::Conflict(_))
    ));

    // Cell 1 is empty now: drain then retire.
    s.set_cell_state(1, &[CellLifecycle::Active], CellLifecycle::Draining, 380)
        .await
        .unwrap();
    let c = s
        .set_cell_state(1, &[CellLifecycle::Draining], CellLifecycle::Retired, 390)
        .await
        .unwrap();
    assert_eq!((c.state, c.updated_unix), (CellLifecycle::Retired, 390));
    assert!(matches!(
        s.set_cell_state(1, &[CellLifecycle::Active], CellLifecycle::Draining, 400)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // A planned move can be cancelled, and then another may be planned.
    let ids = s
        .add_moves(
            &[NewMove {
                tenant: "acme".into(),
                from: 2,
                to: 1,
                reason: "back".into(),
            }],
            410,
        )
        .await
        .unwrap();
    assert_eq!(
        s.cancel_move(ids[0], 420).await.unwrap().state,
        MoveState::Cancelled
    );
    let counts = s.move_counts().await.unwrap();
    assert!(counts.contains(&(MoveState::Done, 1)));
    assert!(counts.contains(&(MoveState::Cancelled, 1)));
    assert_eq!(
        s.moves(Some(&[MoveState::Done]), 10).await.unwrap().len(),
        1
    );

    s.record_decision("place", "acme", "why", &serde_json::json!({"cell": 1}), 500)
        .await
        .unwrap();
    s.record_decision("drain", "c1", "later", &serde_json::json!({}), 600)
        .await
        .unwrap();
    let ds = s.decisions(10).await.unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0].kind, "drain", "newest first");
    assert_eq!(ds[1].detail["cell"], 1);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_bound() {
    // No PostgreSQL needed: a socket that accepts connections (the
    // kernel completes the handshake) but never answers a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let r = wharf_fleetd::FleetStore::connect(wharf_fleetd::StoreConfig {
        url: format!("postgres://nobody@127.0.0.1:{port}/fleet"),
        pool_size: 1,
        connect_timeout: std::time::Duration::from_millis(500),
        statement_timeout: std::time::Duration::from_secs(1),
    })
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(listener);
}
