//! Immutable tags on a real server: every rule shape (tag only, tag and
//! repository, a rule that does not cover a repository, a tag it does not
//! match), each refusal (a move by `PUT`, a `DELETE` by tag, a `DELETE` by
//! the digest of a protected manifest) with its `403 DENIED` naming the
//! rule, the re-push of the same manifest, the admin API refusing invalid
//! rules, and the operator lifting a rule while a tenant's own admin user
//! cannot.
//!
//! Each server shares one metadata store between its registry and its
//! tenant directory, as the binary does; the admin API runs on its own
//! listener over the same directory.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use wharf_core::ImmutableTagRule;
use wharf_meta::MetaStore;
use wharf_tenants::{Directory, NewTenant, Role, RoleSpec};

const ADMIN_TOKEN: &str = "admin-token-for-immutable-tests";

fn rule(tag: &str, repository: Option<&str>) -> ImmutableTagRule {
    ImmutableTagRule {
        tag: tag.into(),
        repository: repository.map(str::to_string),
    }
}

/// A registry server and the admin API over one tenant directory: tenant
/// `acme` with `rules`, tenant `globex` with none.
struct Setup {
    s: Server,
    directory: Directory,
    /// Base URL of the admin API.
    admin: String,
    /// Basic credentials sent with every registry request, if any.
    login: Option<(String, String)>,
}

impl Setup {
    async fn start(rules: Vec<ImmutableTagRule>) -> Setup {
        Setup::start_with(rules, false).await
    }

    /// With `basic`, the registry wants HTTP Basic and user `alice`, an
    /// admin of tenant `acme` (pull, push, delete), is the one logged in.
    async fn start_with(rules: Vec<ImmutableTagRule>, basic: bool) -> Setup {
        let stores = Stores::open().await;
        let meta: Arc<dyn MetaStore> = stores.meta.clone();
        let directory = Directory::open(meta).await.unwrap();
        directory
            .create_tenant(NewTenant {
                name: "acme".into(),
                immutable_tags: rules,
                ..NewTenant::default()
            })
            .await
            .unwrap();
        directory
            .create_tenant(NewTenant {
                name: "globex".into(),
                ..NewTenant::default()
            })
            .await
            .unwrap();
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
        let d = directory.clone();
        let s = Server::start_over(stores, registry, |state| {
            if basic {
                state.auth = directory_basic_auth(d.clone());
            }
            state.directory = Some(d);
        })
        .await;
        let admin = admin_api(directory.clone()).await;
        Setup {
            s,
            directory,
            admin,
            login,
        }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.s.req(method, path);
        match &self.login {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    /// Pushes the config and layer of image `seed` to `repo`; returns the
    /// manifest (not pushed) and its digest.
    async fn image(&self, repo: &str, seed: &str) -> (String, String) {
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
        let body = image_manifest(&digests[0], config.len(), &digests[1], layer.len(), "");
        let digest = sha256(body.as_bytes());
        (body, digest)
    }

    async fn put(&self, repo: &str, reference: &str, body: &str) -> Outcome {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Outcome::of(r).await
    }

    /// Pushes image `seed` to `repo:tag`, expecting `201`; its digest.
    async fn push(&self, repo: &str, tag: &str, seed: &str) -> String {
        let (body, digest) = self.image(repo, seed).await;
        self.put(repo, tag, &body)
            .await
            .expect(201, "", &format!("push {repo}:{tag}"));
        digest
    }

    async fn delete(&self, repo: &str, reference: &str) -> Outcome {
        let r = self
            .req(Method::DELETE, &format!("/v2/{repo}/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        Outcome::of(r).await
    }

    /// The digest `repo:reference` resolves to (`""` when unknown).
    async fn resolve(&self, repo: &str, reference: &str) -> String {
        let r = self
            .req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return String::new();
        }
        header(&r, "docker-content-digest")
    }

    /// Moves `repo:tag` to a new image `seed`: the outcome of the `PUT`.
    async fn try_move(&self, repo: &str, tag: &str, seed: &str) -> Outcome {
        let (body, _) = self.image(repo, seed).await;
        self.put(repo, tag, &body).await
    }

    /// A call to the admin API with the admin token (or `bearer`).
    async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        bearer: &str,
    ) -> Outcome {
        let mut r = reqwest::Client::new()
            .request(method, format!("{}/admin/v1{path}", self.admin))
            .bearer_auth(bearer);
        if let Some(b) = body {
            r = r.json(&b);
        }
        Outcome::of(r.send().await.unwrap()).await
    }

    /// `PATCH /admin/v1/tenants/acme` with `body`, as the operator.
    async fn patch_acme(&self, body: Value) -> Outcome {
        self.admin_call(Method::PATCH, "/tenants/acme", Some(body), ADMIN_TOKEN)
            .await
    }
}

/// The admin API on its own listener; its base URL.
async fn admin_api(directory: Directory) -> String {
    let api =
        wharf_api::admin_api::AdminApi::new(directory, Some(wharf_auth::hash_secret(ADMIN_TOKEN)));
    let app = wharf_api::admin_api::admin_api_router(Arc::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

impl Outcome {
    /// Asserts `403 DENIED` for an immutable tag: the message names `tag`
    /// and the rule's patterns, and the detail carries them.
    #[track_caller]
    fn expect_immutable(&self, action: &str, tag: &str, rule: &ImmutableTagRule, what: &str) {
        self.expect(403, "DENIED", what);
        let detail: Value =
            serde_json::from_str::<Value>(&self.body).unwrap()["errors"][0]["detail"].clone();
        assert_eq!(detail["action"], action, "{what}: {self:?}");
        assert_eq!(detail["tag"], tag, "{what}: {self:?}");
        assert_eq!(detail["rule"]["tag"], rule.tag.as_str(), "{what}");
        assert_eq!(
            detail["rule"]["repository"],
            json!(rule.repository),
            "{what}"
        );
        assert!(
            self.message.contains(&format!("tag {tag} "))
                && self.message.contains(&format!("`{}`", rule.tag))
                && self.message.contains("only the registry operator can lift"),
            "{what}: {}",
            self.message
        );
        if let Some(repository) = &rule.repository {
            assert!(
                self.message.contains(&format!("`{repository}`")),
                "{what}: {}",
                self.message
            );
        }
    }
}

// ---- rule shapes ----

#[tokio::test]
async fn a_tag_only_rule_protects_matching_tags_in_every_repository_of_the_tenant() {
    let release = rule(r"v[0-9]+(\.[0-9]+)*", None);
    let t = Setup::start(vec![release.clone()]).await;

    for repo in ["acme/app", "acme/team/svc", "acme"] {
        let first = t.push(repo, "v1.2", "one").await;
        let o = t.try_move(repo, "v1.2", "two").await;
        o.expect_immutable("move", "v1.2", &release, repo);
        let detail: Value = serde_json::from_str(&o.body).unwrap();
        assert_eq!(detail["errors"][0]["detail"]["digest"], first.as_str());
        assert_eq!(detail["errors"][0]["detail"]["repository"], repo);
        assert_eq!(t.resolve(repo, "v1.2").await, first, "{repo}: not moved");
    }

    // A tag the rule does not match moves freely, even to a protected
    // tag's manifest and back.
    let a = t.push("acme/app", "latest", "one").await;
    let b = t.push("acme/app", "latest", "three").await;
    assert_ne!(a, b);
    assert_eq!(t.resolve("acme/app", "latest").await, b);
    // Anchored: a tag that only starts like a release is not one.
    t.push("acme/app", "v1.2-rc1", "one").await;
    t.push("acme/app", "v1.2-rc1", "four").await;

    // Another tenant's rules are its own.
    t.push("globex/app", "v1.2", "one").await;
    t.push("globex/app", "v1.2", "two").await;
}

#[tokio::test]
async fn a_rule_scoped_to_repositories_covers_only_those() {
    let prod = rule("v.*|stable", Some("prod/.*"));
    let t = Setup::start(vec![prod.clone()]).await;

    t.push("acme/prod/api", "stable", "one").await;
    t.try_move("acme/prod/api", "stable", "two")
        .await
        .expect_immutable("move", "stable", &prod, "covered repository");
    t.push("acme/prod/team/api", "v3", "one").await;
    t.try_move("acme/prod/team/api", "v3", "two")
        .await
        .expect_immutable("move", "v3", &prod, "deeper covered repository");

    // Not covered: the path inside the tenant must match whole.
    for repo in [
        "acme/dev/api",
        "acme/prod",
        "acme/preprod/api",
        "acme/x/prod/api",
    ] {
        t.push(repo, "stable", "one").await;
        let moved = t.push(repo, "stable", "two").await;
        assert_eq!(t.resolve(repo, "stable").await, moved, "{repo}");
        t.delete(repo, "stable")
            .await
            .expect(202, "", &format!("delete in {repo}"));
    }
    // Covered, but a tag the rule does not match.
    t.push("acme/prod/api", "latest", "one").await;
    t.push("acme/prod/api", "latest", "two").await;
    t.delete("acme/prod/api", "latest").await.expect(
        202,
        "",
        "unprotected tag in a covered repository",
    );
}

#[tokio::test]
async fn the_same_manifest_may_be_pushed_again_and_first_pushes_land() {
    let all = rule(".*", None);
    let t = Setup::start(vec![all.clone()]).await;
    let (body, digest) = t.image("acme/app", "one").await;
    t.put("acme/app", "v1", &body)
        .await
        .expect(201, "", "first push of a protected tag");
    for _ in 0..2 {
        let o = t.put("acme/app", "v1", &body).await;
        o.expect(201, "", "the same manifest again");
    }
    // By digest, and under a second protected tag: nothing moves.
    t.put("acme/app", &digest, &body)
        .await
        .expect(201, "", "by digest");
    t.put("acme/app", "v1-copy", &body).await.expect(
        201,
        "",
        "first push of another tag to the same manifest",
    );
    assert_eq!(t.resolve("acme/app", "v1").await, digest);
    assert_eq!(t.resolve("acme/app", "v1-copy").await, digest);
    t.try_move("acme/app", "v1-copy", "two")
        .await
        .expect_immutable("move", "v1-copy", &all, "second tag");
}

// ---- refusals of deletes ----

#[tokio::test]
async fn deletes_of_a_protected_tag_or_of_its_manifest_are_refused() {
    let release = rule("v[0-9]+", Some(".*"));
    let t = Setup::start(vec![release.clone()]).await;
    let v1 = t.push("acme/app", "v1", "one").await;

    t.delete("acme/app", "v1").await.expect_immutable(
        "delete-tag",
        "v1",
        &release,
        "delete by tag",
    );
    let o = t.delete("acme/app", &v1).await;
    o.expect_immutable("delete-manifest", "v1", &release, "delete by digest");
    assert!(o.message.contains(&v1), "{}", o.message);
    assert_eq!(t.resolve("acme/app", "v1").await, v1, "the tag stays");
    assert_eq!(t.resolve("acme/app", &v1).await, v1, "the manifest stays");

    // A manifest only unprotected tags point at goes, tags and all.
    let other = t.push("acme/app", "latest", "two").await;
    t.delete("acme/app", &other)
        .await
        .expect(202, "", "delete of an unprotected manifest");
    assert_eq!(t.resolve("acme/app", "latest").await, "");
    // Even among many tags, the protected one pointing at the manifest is
    // found.
    for i in 0..30 {
        t.push("acme/app", &format!("build-{i}"), "one").await;
    }
    t.delete("acme/app", &v1).await.expect_immutable(
        "delete-manifest",
        "v1",
        &release,
        "among many tags",
    );
    t.delete("acme/app", "build-7").await.expect(
        202,
        "",
        "an unprotected tag of a protected manifest",
    );

    // A protected tag that was never pushed is simply unknown.
    t.delete("acme/app", "v9")
        .await
        .expect(404, "MANIFEST_UNKNOWN", "absent protected tag");
}

// ---- the admin API and who may lift a rule ----

#[tokio::test]
async fn the_admin_api_refuses_invalid_rules_and_shows_valid_ones() {
    let t = Setup::start(vec![]).await;
    for (bad, says) in [
        (json!([{"tag": "v[0-9"}]), "not a valid regular expression"),
        (
            json!([{"tag": "v.*", "repository": "team/("}]),
            "repository pattern",
        ),
        (json!([{"tag": ""}]), "empty"),
        (json!([{"tag": "a".repeat(257)}]), "the limit is 256"),
        (
            json!([{"tag": r"\w{1000}\w{1000}"}]),
            "compiles larger than",
        ),
        (json!(vec![json!({"tag": "v.*"}); 33]), "at most 32"),
    ] {
        let o = t.patch_acme(json!({ "immutable_tags": bad })).await;
        o.expect(400, "INVALID", &bad.to_string());
        assert!(o.message.contains(says), "{says}: {}", o.message);
    }
    for malformed in [
        json!({"immutable_tags": [{"tag": "v.*", "repo": "x"}]}),
        json!({"immutable_tags": [{"repository": "x"}]}),
        json!({"immutable_tags": "v.*"}),
    ] {
        t.patch_acme(malformed.clone())
            .await
            .expect(400, "INVALID", &malformed.to_string());
    }
    let o = t
        .admin_call(
            Method::POST,
            "/tenants",
            Some(json!({"name": "initech", "immutable_tags": [{"tag": "(?P<x"}]})),
            ADMIN_TOKEN,
        )
        .await;
    o.expect(400, "INVALID", "create with a bad rule");
    assert!(t.directory.tenant("initech").is_none());
    assert!(t
        .directory
        .tenant("acme")
        .unwrap()
        .immutable_tags
        .is_empty());

    let rules = json!([{"tag": "v.*", "repository": "team/.*"}, {"tag": "stable"}]);
    let o = t.patch_acme(json!({ "immutable_tags": rules })).await;
    o.expect(200, "", "valid rules");
    let shown: Value = serde_json::from_str(&o.body).unwrap();
    assert_eq!(
        shown["immutable_tags"],
        json!([{"tag": "v.*", "repository": "team/.*"}, {"tag": "stable", "repository": null}])
    );
    let o = t
        .admin_call(Method::GET, "/tenants/acme", None, ADMIN_TOKEN)
        .await;
    let shown: Value = serde_json::from_str(&o.body).unwrap();
    assert_eq!(shown["immutable_tags"][1]["tag"], "stable");
    // Rules apply at once on this node.
    t.push("acme/app", "stable", "one").await;
    t.try_move("acme/app", "stable", "two")
        .await
        .expect_immutable("move", "stable", &rule("stable", None), "new rule");
}

#[tokio::test]
async fn only_the_operator_lifts_a_rule_and_then_the_move_goes_through() {
    let release = rule("v.*", None);
    // Alice is an admin of acme: she may push and delete, not lift rules.
    let t = Setup::start_with(vec![release.clone()], true).await;
    let v1 = t.push("acme/app", "v1", "one").await;
    t.try_move("acme/app", "v1", "two").await.expect_immutable(
        "move",
        "v1",
        &release,
        "tenant admin moves",
    );
    t.delete("acme/app", "v1").await.expect_immutable(
        "delete-tag",
        "v1",
        &release,
        "tenant admin deletes",
    );
    // Her password is no admin token, and the registry port serves no
    // admin API.
    t.admin_call(
        Method::PATCH,
        "/tenants/acme",
        Some(json!({"immutable_tags": null})),
        "alice-password",
    )
    .await
    .expect(401, "UNAUTHORIZED", "a tenant user lifting the rule");
    let r = t
        .req(Method::PATCH, "/admin/v1/tenants/acme")
        .json(&json!({"immutable_tags": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no admin API on the registry port");
    assert_eq!(t.directory.tenant("acme").unwrap().immutable_tags.len(), 1);
    assert_eq!(t.resolve("acme/app", "v1").await, v1);

    // The operator lifts it: the move goes through, then the delete.
    let o = t.patch_acme(json!({ "immutable_tags": null })).await;
    o.expect(200, "", "operator lifts the rule");
    let moved = t.push("acme/app", "v1", "two").await;
    assert_ne!(moved, v1);
    assert_eq!(t.resolve("acme/app", "v1").await, moved);

    // Put back (as an empty list lifts it too), it protects tags already
    // pushed.
    t.patch_acme(json!({ "immutable_tags": [{"tag": "v.*"}] }))
        .await
        .expect(200, "", "rule back");
    t.delete("acme/app", &moved).await.expect_immutable(
        "delete-manifest",
        "v1",
        &release,
        "rule back",
    );
    t.patch_acme(json!({ "immutable_tags": [] }))
        .await
        .expect(200, "", "lift with an empty list");
    t.delete("acme/app", "v1")
        .await
        .expect(202, "", "delete once lifted");
    assert_eq!(t.resolve("acme/app", "v1").await, "");
}
