//! Retention on a real server: every rule shape (`keep_last`, a tag
//! regular expression, `keep_pulled_within_days` with pulls recorded by the
//! registry as clients pull, `untagged_older_than_days`), AND within a rule
//! and OR across rules, repository scoping, immutable tags surviving, the
//! children of kept indexes and the referrers of kept manifests staying,
//! the dry run listing exactly what the real run deletes, and each refusal.
//!
//! Ages: content is pushed now, and the admin route is asked to plan "as
//! of" a later moment (`as_of_unix`, its documented what-if parameter), so
//! nothing in the tests waits for days. `keep_last` ranks by push time in
//! whole seconds, so tests that rank tags pause a second between pushes.
//!
//! Each server shares one metadata store between its registry and its
//! tenant directory, as the binary does; the admin API runs on its own
//! listener over the same directory and registry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use wharf_core::ImmutableTagRule;
use wharf_meta::MetaStore;
use wharf_tenants::{Directory, NewTenant, Role, RoleSpec};

const ADMIN_TOKEN: &str = "admin-token-for-retention-tests";
const DAY: u64 = 86_400;

/// A registry server, and the admin API over the same directory and
/// registry: tenant `acme` (with `immutable` rules), tenant `globex`.
struct Setup {
    s: Server,
    meta: Arc<dyn MetaStore>,
    admin: String,
    login: Option<(String, String)>,
}

impl Setup {
    async fn start(immutable: Vec<ImmutableTagRule>) -> Setup {
        Setup::start_with(immutable, false).await
    }

    /// With `basic`, the registry wants HTTP Basic and `alice`, an admin
    /// of tenant `acme`, is logged in.
    async fn start_with(immutable: Vec<ImmutableTagRule>, basic: bool) -> Setup {
        let stores = Stores::open().await;
        let meta: Arc<dyn MetaStore> = stores.meta.clone();
        let directory = Directory::open(meta.clone()).await.unwrap();
        for (name, rules) in [("acme", immutable), ("globex", vec![])] {
            directory
                .create_tenant(NewTenant {
                    name: name.into(),
                    immutable_tags: rules,
                    ..NewTenant::default()
                })
                .await
                .unwrap();
        }
        let login = if basic {
            directory
                .put_user(
                    "acme",
                    "alice",
                    Some("alice-password"),
                    &[RoleSpec::tenant_wide(Role::Admin)],
                )
                .await
                .unwrap();
            Some(("alice".to_string(), "alice-password".to_string()))
        } else {
            None
        };
        let registry = stores
            .registry()
            .with_quotas(Arc::new(directory.clone()))
            .with_immutable_tags(Arc::new(directory.clone()));
        let api = wharf_api::admin_api::AdminApi::new(
            directory.clone(),
            Some(wharf_auth::hash_secret(ADMIN_TOKEN)),
        )
        .with_registry(registry.clone());
        let app = wharf_api::admin_api::admin_api_router(Arc::new(api));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let d = directory.clone();
        let s = Server::start_over(stores, registry, |state| {
            if basic {
                state.auth = directory_basic_auth(d.clone());
            }
            state.directory = Some(d);
        })
        .await;
        Setup {
            s,
            meta,
            admin,
            login,
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.s.req(method, path);
        match &self.login {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    /// Pushes the config and layer of image `seed` and its manifest (with
    /// `extra` inside it) under `reference`; the manifest's digest.
    async fn push_with(&self, repo: &str, reference: &str, seed: &str, extra: &str) -> String {
        let config = format!("{{\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}");
        let mut digests = Vec::new();
        for bytes in [config.as_bytes(), layer.as_bytes()] {
            let d = sha256(bytes);
            let r = self
                .req(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                )
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "push blob of {seed}");
            digests.push(d);
        }
        let body = image_manifest(&digests[0], config.len(), &digests[1], layer.len(), extra);
        self.put(repo, reference, OCI_MANIFEST, &body).await
    }

    /// Pushes image `seed` as `repo:tag` (or by digest with `tag` empty).
    async fn push(&self, repo: &str, tag: &str, seed: &str) -> String {
        if tag.is_empty() {
            let config = format!("{{\"seed\":\"{seed}\"}}");
            let layer = format!("layer of {seed}");
            let body = image_manifest(
                &sha256(config.as_bytes()),
                config.len(),
                &sha256(layer.as_bytes()),
                layer.len(),
                "",
            );
            return self
                .push_with(repo, &sha256(body.as_bytes()), seed, "")
                .await;
        }
        self.push_with(repo, tag, seed, "").await
    }

    /// PUTs a manifest, expecting `201`; its digest.
    async fn put(&self, repo: &str, reference: &str, media_type: &str, body: &str) -> String {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "put {repo}:{reference}: {}",
            r.text().await.unwrap()
        );
        sha256(body.as_bytes())
    }

    /// The digest `repo:reference` resolves to (`""` when unknown).
    async fn resolve(&self, repo: &str, reference: &str) -> String {
        let r = self
            .req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return String::new();
        }
        header(&r, "docker-content-digest")
    }

    async fn admin_call(&self, method: Method, path: &str, body: Option<Value>) -> Outcome {
        let mut r = reqwest::Client::new()
            .request(method, format!("{}/admin/v1{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        Outcome::of(r.send().await.unwrap()).await
    }

    /// Sets acme's retention policy, expecting `200`.
    async fn policy(&self, policy: Value) {
        self.admin_call(
            Method::PATCH,
            "/tenants/acme",
            Some(json!({ "retention": policy })),
        )
        .await
        .expect(200, "", "set the policy");
    }

    /// A retention pass over acme as of `days` from now: its answer.
    async fn retention(&self, dry_run: bool, days: u64) -> Value {
        self.retention_at(dry_run, wharf_core::now_unix() + days * DAY)
            .await
    }

    /// Runs retention as of `as_of` (unix seconds).
    async fn retention_at(&self, dry_run: bool, as_of: u64) -> Value {
        let o = self
            .admin_call(
                Method::POST,
                &format!("/gc/retention?dry_run={dry_run}&tenant=acme&as_of_unix={as_of}"),
                None,
            )
            .await;
        o.expect(200, "", "retention");
        let v: Value = serde_json::from_str(&o.body).unwrap();
        assert_eq!(v["tenants"][0]["tenant"], "acme");
        v["tenants"][0].clone()
    }

    /// The lines of a dry run `days` from now.
    async fn planned(&self, days: u64) -> Vec<String> {
        let report = self.retention(true, days).await;
        assert!(
            report["deleted"].as_array().unwrap().is_empty(),
            "dry run deleted"
        );
        lines(&report["planned"])
    }

    /// Runs retention `days` from now; the lines deleted (nothing skipped).
    async fn apply(&self, days: u64) -> Vec<String> {
        let report = self.retention(false, days).await;
        assert_eq!(report["skipped"], json!([]), "skipped");
        assert_eq!(report["planned"], report["deleted"]);
        lines(&report["deleted"])
    }
}

fn lines(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["line"].as_str().unwrap().to_string())
        .collect()
}

/// The deletion lines' targets: `tag REPO:TAG` or `manifest REPO@DIGEST`.
fn targets(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.strip_prefix("delete ")
                .and_then(|l| l.split(" — ").next())
                .unwrap()
                .to_string()
        })
        .collect()
}

fn tag(repo: &str, tag: &str) -> String {
    format!("tag {repo}:{tag}")
}

fn manifest(repo: &str, digest: &str) -> String {
    format!("manifest {repo}@{digest}")
}

/// Tags are ranked by push time in whole seconds.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn keep_last_keeps_the_newest_tags_by_push_time() {
    let t = Setup::start(vec![]).await;
    // Pushed in this order; names in another, so ranking by name would
    // differ.
    let c = t.push("acme/app", "c", "c").await;
    next_second().await;
    t.push("acme/app", "a", "a").await;
    next_second().await;
    t.push("acme/app", "b", "b").await;
    t.policy(json!({"rules": [{"keep_last": 2}, {"untagged_older_than_days": 1}]}))
        .await;

    let now = t.planned(0).await;
    assert_eq!(targets(&now), [tag("acme/app", "c")], "{now:?}");
    assert!(
        now[0].contains("rule 0: 3rd newest of 3, keep_last 2"),
        "{now:?}"
    );
    // Two days on, the manifest untagged by the plan is old enough too.
    let later = t.planned(2).await;
    assert_eq!(
        targets(&later),
        [tag("acme/app", "c"), manifest("acme/app", &c)]
    );
    assert!(
        later[1].contains("its last tag removed by this plan"),
        "{later:?}"
    );

    assert_eq!(t.apply(2).await, later);
    assert_eq!(t.resolve("acme/app", "c").await, "");
    assert_eq!(t.resolve("acme/app", &c).await, "", "manifest deleted");
    assert_ne!(t.resolve("acme/app", "a").await, "");
    assert_ne!(t.resolve("acme/app", "b").await, "");
    assert!(t.planned(2).await.is_empty(), "nothing left to do");
}

#[tokio::test]
async fn a_tag_rule_keeps_tags_its_regular_expression_matches_whole() {
    let t = Setup::start(vec![]).await;
    for name in ["v1", "v22", "v2-rc", "latest", "xv1"] {
        t.push("acme/app", name, name).await;
    }
    t.policy(json!({"rules": [{"tag": "v[0-9]+"}]})).await;
    let planned = t.planned(0).await;
    assert_eq!(
        targets(&planned),
        [
            tag("acme/app", "latest"),
            tag("acme/app", "v2-rc"),
            tag("acme/app", "xv1")
        ]
    );
    assert!(
        planned[0].contains("rule 0: name does not match tag v[0-9]+"),
        "{planned:?}"
    );
    assert_eq!(t.apply(0).await, planned);
    for (name, kept) in [
        ("v1", true),
        ("v22", true),
        ("latest", false),
        ("xv1", false),
    ] {
        assert_eq!(
            t.resolve("acme/app", name).await.is_empty(),
            !kept,
            "{name}"
        );
    }
}

#[tokio::test]
async fn keep_pulled_within_days_reads_the_pulls_the_registry_records() {
    let t = Setup::start(vec![]).await;
    let pulled = t.push("acme/app", "pulled", "one").await;
    t.push("acme/app", "idle", "two").await;
    t.policy(json!({"rules": [{"keep_pulled_within_days": 3}]}))
        .await;
    // A pull through the registry, by tag.
    let r = t
        .req(Method::GET, "/v2/acme/app/manifests/pulled")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Recorded in the background: wait for it to land.
    let mut recorded = None;
    for _ in 0..50 {
        let snap = t.meta.retention_snapshot("acme").await.unwrap();
        recorded = snap[0]
            .manifests
            .iter()
            .find(|m| m.digest.to_string() == pulled)
            .and_then(|m| m.last_pulled_unix);
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = recorded.expect("the pull was recorded");
    assert!(recorded.abs_diff(wharf_core::now_unix()) < 5);
    // More pulls within the hour write nothing more (this node does not
    // even ask).
    for _ in 0..3 {
        t.req(Method::GET, &format!("/v2/acme/app/manifests/{pulled}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
    }

    // Two days on, the pulled tag is within 3 days; the other never was.
    let in_two_days = t.planned(2).await;
    assert_eq!(targets(&in_two_days), [tag("acme/app", "idle")]);
    assert!(
        in_two_days[0].contains("never pulled, keep_pulled_within_days 3"),
        "{in_two_days:?}"
    );
    // Four days on, neither.
    let planned = t.planned(4).await;
    assert_eq!(
        targets(&planned),
        [tag("acme/app", "idle"), tag("acme/app", "pulled")]
    );
    assert!(planned[1].contains("last pulled 4 days ago"), "{planned:?}");
    assert_eq!(t.apply(2).await, in_two_days);
    assert_eq!(t.resolve("acme/app", "pulled").await, pulled);
}

#[tokio::test]
async fn untagged_older_than_days_deletes_only_old_untagged_manifests() {
    let t = Setup::start(vec![]).await;
    let tagged = t.push("acme/app", "v1", "tagged").await;
    let untagged = t.push("acme/app", "", "untagged").await;
    t.policy(json!({"rules": [{"untagged_older_than_days": 30}]}))
        .await;
    assert!(t.planned(0).await.is_empty(), "too young");
    // A minute short of 30 days (exactly 30 would race the clock: the
    // push's second may already be behind).
    let almost = t
        .retention_at(true, wharf_core::now_unix() + 30 * DAY - 60)
        .await;
    assert_eq!(
        almost["planned"],
        json!([]),
        "30 days less a minute is not more than 30"
    );
    let planned = t.planned(31).await;
    assert_eq!(targets(&planned), [manifest("acme/app", &untagged)]);
    assert!(
        planned[0].contains("untagged, pushed 31 days ago: rule 0: untagged_older_than_days 30"),
        "{planned:?}"
    );
    assert_eq!(t.apply(31).await, planned);
    assert_eq!(t.resolve("acme/app", &untagged).await, "");
    assert_eq!(
        t.resolve("acme/app", "v1").await,
        tagged,
        "tags are not its business"
    );
}

#[tokio::test]
async fn conditions_in_a_rule_combine_with_and_rules_with_or() {
    let t = Setup::start(vec![]).await;
    t.push("acme/app", "v1", "v1").await;
    next_second().await;
    t.push("acme/app", "v2", "v2").await;
    t.push("acme/app", "stable", "stable").await;
    t.push("acme/app", "dev", "dev").await;
    t.policy(json!({"rules": [
        {"tag": "v.*", "keep_last": 1},
        {"tag": "stable"}
    ]}))
    .await;
    let planned = t.planned(0).await;
    // v1 matches rule 0's pattern but not its keep_last (AND); stable is
    // kept by rule 1 alone (OR); dev by neither.
    assert_eq!(
        targets(&planned),
        [tag("acme/app", "dev"), tag("acme/app", "v1")]
    );
    assert!(
        planned[1].contains(
            "rule 0: 2nd newest of 2, keep_last 1; rule 1: name does not match tag stable"
        ),
        "{planned:?}"
    );
    assert_eq!(t.apply(0).await, planned);
    for (name, kept) in [
        ("v1", false),
        ("v2", true),
        ("stable", true),
        ("dev", false),
    ] {
        assert_eq!(
            t.resolve("acme/app", name).await.is_empty(),
            !kept,
            "{name}"
        );
    }
}

#[tokio::test]
async fn rules_cover_the_repositories_their_pattern_matches_whole() {
    let t = Setup::start(vec![]).await;
    for repo in ["acme/app/web", "acme/app", "acme/other", "globex/app/web"] {
        t.push(repo, "a", "a").await;
        t.push(repo, "b", "b").await;
    }
    t.policy(json!({"rules": [{"repository": "app/.*", "tag": "b"}]}))
        .await;
    // Only acme/app/web: `app/.*` does not match `app`, nor `other`, and
    // globex has no policy.
    let planned = t.planned(0).await;
    assert_eq!(targets(&planned), [tag("acme/app/web", "a")]);
    assert_eq!(t.apply(0).await, planned);
    for repo in ["acme/app", "acme/other", "globex/app/web"] {
        assert_ne!(t.resolve(repo, "a").await, "", "{repo}");
    }
}

#[tokio::test]
async fn immutable_tags_survive_retention() {
    let t = Setup::start(vec![ImmutableTagRule {
        tag: "release-.*".into(),
        repository: None,
    }])
    .await;
    let kept = t.push("acme/app", "release-1", "r1").await;
    t.push("acme/app", "scratch", "s").await;
    t.policy(json!({"rules": [{"tag": "keep-me"}, {"untagged_older_than_days": 1}]}))
        .await;
    let planned = t.planned(5).await;
    let scratch = t.resolve("acme/app", "scratch").await;
    assert_eq!(
        targets(&planned),
        [tag("acme/app", "scratch"), manifest("acme/app", &scratch)]
    );
    assert_eq!(t.apply(5).await, planned);
    assert_eq!(t.resolve("acme/app", "release-1").await, kept);
}

#[tokio::test]
async fn children_of_kept_indexes_and_referrers_of_kept_manifests_stay() {
    let t = Setup::start(vec![]).await;
    let repo = "acme/app";
    // An index (tagged `multi`) over two untagged images.
    let amd = t.push(repo, "", "amd").await;
    let arm = t.push(repo, "", "arm").await;
    let index = |a: &str, b: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":1}},{{"mediaType":"{OCI_MANIFEST}","digest":"{b}","size":1}}]}}"#
        )
    };
    let multi = t.put(repo, "multi", OCI_INDEX, &index(&amd, &arm)).await;
    // An image (tagged `img`) with an untagged signature.
    let img = t.push(repo, "img", "img").await;
    let subject =
        format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{img}","size":1}}"#);
    let sig_config = "{\"seed\":\"sig\"}";
    let sig_layer = "layer of sig";
    let sig_body = image_manifest(
        &sha256(sig_config.as_bytes()),
        sig_config.len(),
        &sha256(sig_layer.as_bytes()),
        sig_layer.len(),
        &subject,
    );
    let sig = t
        .push_with(repo, &sha256(sig_body.as_bytes()), "sig", &subject)
        .await;

    t.policy(json!({"rules": [{"untagged_older_than_days": 1}]}))
        .await;
    assert!(
        t.planned(10).await.is_empty(),
        "children and referrers stay"
    );

    // Keep only `img`: the index goes with its tag, then its children; the
    // signature stays with its kept subject.
    t.policy(json!({"rules": [{"tag": "img"}, {"untagged_older_than_days": 1}]}))
        .await;
    let planned = t.planned(10).await;
    let mut children = vec![manifest(repo, &amd), manifest(repo, &arm)];
    children.sort();
    let expected: Vec<String> = [tag(repo, "multi"), manifest(repo, &multi)]
        .into_iter()
        .chain(children)
        .collect();
    assert_eq!(targets(&planned), expected, "index before its children");
    assert_eq!(t.apply(10).await, planned);
    assert_eq!(t.resolve(repo, &sig).await, sig, "the referrer stays");
    assert_eq!(t.resolve(repo, "img").await, img);
    assert_eq!(t.resolve(repo, &amd).await, "");

    // Its subject's tag gone, the signature goes with the subject.
    t.policy(json!({"rules": [{"tag": "nothing"}, {"untagged_older_than_days": 1}]}))
        .await;
    let planned = t.planned(10).await;
    assert_eq!(
        targets(&planned),
        [tag(repo, "img"), manifest(repo, &sig), manifest(repo, &img)],
        "a referrer before its subject"
    );
    assert_eq!(t.apply(10).await, planned);
}

#[tokio::test]
async fn the_dry_run_lists_exactly_what_the_real_run_deletes_and_changes_nothing() {
    let t = Setup::start(vec![]).await;
    for (repo, tags) in [("acme/a", ["x", "y"]), ("acme/b", ["v1", "v2"])] {
        for name in tags {
            t.push(repo, name, &format!("{repo}-{name}")).await;
        }
    }
    let loose = t.push("acme/b", "", "loose").await;
    t.policy(json!({"rules": [
        {"repository": "b", "tag": "v2"},
        {"repository": "a", "keep_last": 1},
        {"untagged_older_than_days": 7}
    ]}))
    .await;
    let dry = t.retention(true, 8).await;
    assert_eq!(dry["deleted"], json!([]));
    let planned = lines(&dry["planned"]);
    assert!(dry["rendered"].as_str().unwrap().contains(&planned[0]));
    assert_eq!(planned.len(), 5, "{planned:?}");
    // Nothing changed.
    assert_ne!(t.resolve("acme/b", "v1").await, "");
    assert_eq!(t.resolve("acme/b", &loose).await, loose);
    assert_eq!(t.planned(8).await, planned, "the same plan again");

    let done = t.apply(8).await;
    assert_eq!(done, planned);
    assert_eq!(t.resolve("acme/b", "v1").await, "");
    assert_eq!(t.resolve("acme/b", &loose).await, "");
}

#[tokio::test]
async fn a_pass_over_every_tenant_runs_the_tenants_with_a_policy() {
    let t = Setup::start(vec![]).await;
    t.push("acme/app", "a", "a").await;
    t.push("globex/app", "a", "a").await;
    t.policy(json!({"rules": [{"tag": "b"}]})).await;
    let o = t
        .admin_call(Method::POST, "/gc/retention?dry_run=true", None)
        .await;
    o.expect(200, "", "every tenant");
    let v: Value = serde_json::from_str(&o.body).unwrap();
    let tenants = v["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "globex has no policy: {v}");
    assert_eq!(tenants[0]["tenant"], "acme");
}

#[tokio::test]
async fn bad_policies_and_callers_are_refused() {
    let t = Setup::start_with(vec![], true).await;
    // A bad regular expression: 400, naming the rule and the field.
    let o = t
        .admin_call(
            Method::PATCH,
            "/tenants/acme",
            Some(json!({"retention": {"rules": [{"keep_last": 1}, {"tag": "v("}]}})),
        )
        .await;
    o.expect(400, "INVALID", "bad regex");
    assert!(
        o.message
            .contains("retention: rule 1: tag: not a usable regular expression"),
        "{o:?}"
    );
    for (bad, says) in [
        (json!({"rules": [{"keep_lst": 1}]}), "keep_lst"),
        (json!({"rules": [{"repository": "app"}]}), "no condition"),
        (
            json!({"rules": [{"tag": "v.*", "untagged_older_than_days": 3}]}),
            "cannot share a rule",
        ),
        (json!({"rules": [{"keep_last": 0}]}), "keep_last is 0"),
    ] {
        let o = t
            .admin_call(
                Method::PATCH,
                "/tenants/acme",
                Some(json!({ "retention": bad })),
            )
            .await;
        o.expect(400, "INVALID", says);
        assert!(o.message.contains(says), "{says}: {o:?}");
    }
    // A tenant user (an admin of acme) presents its own password, not the
    // admin token: known, but a tenant account may not set policies.
    let r = reqwest::Client::new()
        .patch(format!("{}/admin/v1/tenants/acme", t.admin))
        .basic_auth("alice", Some("alice-password"))
        .json(&json!({"retention": {"rules": [{"keep_last": 1}]}}))
        .send()
        .await
        .unwrap();
    Outcome::of(r)
        .await
        .expect(403, "DENIED", "tenant user sets retention");
    let r = t
        .req(Method::POST, "/admin/v1/gc/retention?tenant=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no admin API on the registry port");

    // No policy set: nothing to run for acme; a bad parameter.
    t.admin_call(Method::POST, "/gc/retention?tenant=acme", None)
        .await
        .expect(404, "NOT_FOUND", "no policy");
    t.admin_call(Method::POST, "/gc/retention?tenant=nobody", None)
        .await
        .expect(404, "NOT_FOUND", "no tenant");
    t.admin_call(Method::POST, "/gc/retention?dry_run=yes", None)
        .await
        .expect(400, "INVALID", "bad dry_run");
    t.admin_call(Method::POST, "/gc/retention?now=1", None)
        .await
        .expect(400, "INVALID", "unknown parameter");

    // A good policy shows on the tenant, and `null` removes it.
    t.policy(json!({"rules": [{"keep_last": 3}]})).await;
    let o = t.admin_call(Method::GET, "/tenants/acme", None).await;
    let v: Value = serde_json::from_str(&o.body).unwrap();
    assert_eq!(v["retention"], json!({"rules": [{"keep_last": 3}]}));
    t.admin_call(
        Method::PATCH,
        "/tenants/acme",
        Some(json!({"retention": null})),
    )
    .await
    .expect(200, "", "remove the policy");
    t.admin_call(Method::POST, "/gc/retention?tenant=acme", None)
        .await
        .expect(404, "NOT_FOUND", "removed");
}
