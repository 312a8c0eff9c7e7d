//! Tenants on a real server: the directory's users and robot accounts
//! logging in (token and htpasswd modes), what their tokens reach, failed
//! logins and their rate limits, repository-name tricks between tenants,
//! quotas (nothing of a refused push is left behind), tenant hostnames,
//! the admin API, and tenant shares of admission.
//!
//! Every server here shares one metadata store between its registry and
//! its tenant directory, as the binary does ([`Stores`]).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use wharf_api::auth::{Auth, TokenService, Users};
use wharf_auth::{
    parse_grant, BasicChallenge, BearerChallenge, Issuer, KeySet, LimiterConfig, LoginLimiter,
    SigningKey, Verifier,
};
use wharf_core::now_unix;
use wharf_meta::MetaStore;
use wharf_tenants::{Directory, NewTenant, QuotaPatch, Role, RoleSpec, TenantPatch, TenantQuota};

const SERVICE: &str = "wharf-test";
const ISSUER: &str = "wharf-test-issuer";
const REALM: &str = "http://registry.test/auth/token";
const BASIC: &str = "Basic realm=\"wharf\"";

// ---- fixtures ----

/// A tenant named `name` with no limits.
fn tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.into(),
        ..NewTenant::default()
    }
}

/// A tenant named `name` with a quota.
fn tenant_with_quota(name: &str, bytes: Option<u64>, repositories: Option<u64>) -> NewTenant {
    NewTenant {
        quota: TenantQuota {
            bytes,
            repositories,
        },
        ..tenant(name)
    }
}

/// Every user's password.
fn pw(user: &str) -> String {
    format!("{user}-password")
}

/// A limiter that never refuses within a test.
fn lenient() -> LimiterConfig {
    LimiterConfig {
        client_failures: 1000,
        pair_failures: 1000,
        ..LimiterConfig::default()
    }
}

/// The stores and the directory over them, before a server starts.
struct Fixture {
    stores: Stores,
    directory: Directory,
}

impl Fixture {
    async fn new(tenants: Vec<NewTenant>) -> Fixture {
        let stores = Stores::open().await;
        let meta: Arc<dyn MetaStore> = stores.meta.clone();
        let directory = Directory::open(meta).await.unwrap();
        for t in tenants {
            directory.create_tenant(t).await.unwrap();
        }
        Fixture { stores, directory }
    }

    /// Adds user `name` (password [`pw`]) with `role` over all of `tenant`.
    async fn user(&self, tenant: &str, name: &str, role: Role) {
        self.directory
            .put_user(
                tenant,
                name,
                Some(&pw(name)),
                &[RoleSpec::tenant_wide(role)],
            )
            .await
            .unwrap();
    }

    /// A server whose registry enforces the directory's quotas and whose
    /// state `configure` sets up (given the directory).
    async fn server(
        self,
        configure: impl FnOnce(&mut wharf_api::AppState, &Directory),
    ) -> (Server, Directory) {
        let Fixture { stores, directory } = self;
        let registry = stores.registry().with_quotas(Arc::new(directory.clone()));
        let d = directory.clone();
        let server = Server::start_over(stores, registry, |s| configure(s, &d)).await;
        (server, directory)
    }

    /// Token mode, with the directory's users only, failed logins limited
    /// by `limits`.
    async fn token_server(self, limits: LimiterConfig) -> (Server, Directory) {
        let users =
            Users::directory_only(self.directory.clone()).with_limiter(LoginLimiter::new(limits));
        self.token_server_over(users, None).await
    }

    /// Token mode over `users`, with `admission` if given.
    async fn token_server_over(
        self,
        users: Users,
        admission: Option<wharf_admission::Admission>,
    ) -> (Server, Directory) {
        let users = Arc::new(users);
        let key = SigningKey::generate();
        let mut keys = KeySet::new();
        keys.insert(key.public_key());
        let tokens = TokenService::new(
            users.clone(),
            Issuer::new(key, ISSUER, SERVICE),
            SERVICE,
            BasicChallenge::new("wharf").unwrap(),
            Arc::from(Vec::new()),
            self.stores.meta.clone(),
        );
        self.server(|s, d| {
            s.auth = Auth::Token {
                verifier: Arc::new(Verifier::new(keys, ISSUER, SERVICE)),
                challenge: BearerChallenge::new(REALM, SERVICE).unwrap(),
                anonymous_pull: Arc::from(Vec::new()),
                identities: Some(users),
            };
            s.token_service = Some(Arc::new(tokens));
            s.directory = Some(d.clone());
            s.admission = admission;
        })
        .await
    }

    /// htpasswd mode (HTTP Basic), with the directory's users only.
    async fn basic_server(self, limits: LimiterConfig) -> (Server, Directory) {
        let users = Arc::new(
            Users::directory_only(self.directory.clone()).with_limiter(LoginLimiter::new(limits)),
        );
        self.server(|s, d| {
            s.auth = Auth::Htpasswd {
                users,
                challenge: BasicChallenge::new("wharf").unwrap(),
                anonymous_pull: Arc::from(Vec::new()),
            };
            s.directory = Some(d.clone());
        })
        .await
    }

    /// No authentication: for quotas, hostnames and admission.
    async fn open_server(self) -> (Server, Directory) {
        self.server(|s, d| s.directory = Some(d.clone())).await
    }
}

// ---- requests and what came back ----

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    Anonymous,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

impl Cred<'_> {
    fn apply(self, r: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::Anonymous => r,
            Cred::Bearer(t) => r.bearer_auth(t),
            Cred::Basic(u, p) => r.basic_auth(u, Some(p)),
        }
    }
}

/// The refusals only this file's servers give (their realm and Basic
/// challenge).
impl Outcome {
    /// Asserts a bearer refusal: 401 `UNAUTHORIZED` with `error` in the
    /// challenge.
    #[track_caller]
    fn expect_bearer_error(&self, error: &str, what: &str) {
        self.expect(401, "UNAUTHORIZED", what);
        assert!(
            self.challenge
                .starts_with(&format!("Bearer realm=\"{REALM}\"")),
            "{what}: {self:?}"
        );
        assert!(
            self.challenge.contains(&format!("error=\"{error}\"")),
            "{what}: {self:?}"
        );
    }

    /// Asserts 401 `UNAUTHORIZED` with the Basic challenge.
    #[track_caller]
    fn expect_basic_refusal(&self, what: &str) {
        self.expect(401, "UNAUTHORIZED", what);
        assert_eq!(self.challenge, BASIC, "{what}: {self:?}");
    }
}

async fn send(s: &Server, method: Method, path: &str, cred: Cred<'_>) -> Outcome {
    Outcome::of(cred.apply(s.req(method, path)).send().await.unwrap()).await
}

async fn send_body(s: &Server, method: Method, path: &str, cred: Cred<'_>, body: &[u8]) -> Outcome {
    let r = cred.apply(s.req(method, path)).body(body.to_vec());
    Outcome::of(r.send().await.unwrap()).await
}

/// Asks `/auth/token` for `scope` with Basic credentials.
async fn login(s: &Server, user: &str, password: &str, scope: &str) -> Outcome {
    let r = s
        .req(Method::GET, "/auth/token")
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    Outcome::of(r).await
}

/// A token for `scope`, which must be issued.
async fn token(s: &Server, user: &str, password: &str, scope: &str) -> String {
    let o = login(s, user, password, scope).await;
    o.expect(200, "", &format!("token for {user}"));
    let v: Value = serde_json::from_str(&o.body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// The `access` claim of a token (not verified: the test reads what the
/// endpoint put in it).
fn access_of(token: &str) -> Vec<Value> {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["access"].as_array().cloned().unwrap_or_default()
}

/// The actions `token` carries on repository `repo`.
fn actions_on(token: &str, repo: &str) -> Vec<String> {
    access_of(token)
        .iter()
        .filter(|a| a["type"] == "repository" && a["name"] == repo)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The blobs and manifest of a small image, distinct per `seed`.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: String,
}

fn image(seed: &str) -> Image {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed}").into_bytes();
    let manifest = image_manifest(
        &sha256(&config),
        config.len(),
        &sha256(&layer),
        layer.len(),
        "",
    );
    Image {
        config,
        layer,
        manifest,
    }
}

/// Pushes blob `bytes` into `repo` monolithically (`POST ?digest=`).
async fn push_blob(s: &Server, repo: &str, cred: Cred<'_>, bytes: &[u8]) -> Outcome {
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
    send_body(s, Method::POST, &path, cred, bytes).await
}

async fn put_manifest(s: &Server, repo: &str, tag: &str, cred: Cred<'_>, body: &str) -> Outcome {
    let r = cred
        .apply(s.req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_string());
    Outcome::of(r.send().await.unwrap()).await
}

/// Pushes image `seed` to `repo` as tag `v1`: the first refusal, or the
/// manifest's `201`.
async fn push_image(s: &Server, repo: &str, cred: Cred<'_>, seed: &str) -> Outcome {
    let img = image(seed);
    for blob in [&img.config, &img.layer] {
        let o = push_blob(s, repo, cred, blob).await;
        if o.status != 201 {
            return o;
        }
    }
    put_manifest(s, repo, "v1", cred, &img.manifest).await
}

/// `GET` of `repo`'s manifest `v1`.
async fn pull(s: &Server, repo: &str, cred: Cred<'_>) -> Outcome {
    let r = cred
        .apply(s.req(Method::GET, &format!("/v2/{repo}/manifests/v1")))
        .header("accept", OCI_MANIFEST);
    Outcome::of(r.send().await.unwrap()).await
}

/// Starts an upload session in `repo`; its location.
async fn start_session(s: &Server, repo: &str) -> String {
    let r = s
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "start an upload in {repo}");
    header(&r, "location")
}

/// Bytes of `len` that no other call with another `seed` produces.
fn filler(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed ^ (i % 251) as u8).collect()
}

/// The path of blob `digest` in the filesystem store's layout.
fn blob_file(s: &Server, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    s.data.join("blobs").join(alg).join(&hex[..2]).join(hex)
}

/// Files left in the store's `uploads/` directory.
fn upload_files(s: &Server) -> Vec<String> {
    std::fs::read_dir(s.data.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---- 1. tenant users in token mode ----

#[tokio::test]
async fn tenant_users_reach_their_own_tenant_only() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "alice", Role::Push).await;
    f.user("acme", "bob", Role::Pull).await;
    f.user("globex", "carol", Role::Push).await;
    let (s, _) = f.token_server(lenient()).await;

    let alice = token(&s, "alice", &pw("alice"), "repository:acme/app:pull,push").await;
    push_image(&s, "acme/app", Cred::Bearer(&alice), "acme")
        .await
        .expect(201, "", "alice pushes acme/app");
    let o = pull(&s, "acme/app", Cred::Bearer(&alice)).await;
    o.expect(200, "", "alice pulls acme/app");
    assert_eq!(o.body, image("acme").manifest);

    let carol = token(&s, "carol", &pw("carol"), "repository:globex/app:pull,push").await;
    push_image(&s, "globex/app", Cred::Bearer(&carol), "globex")
        .await
        .expect(201, "", "carol pushes globex/app");

    // alice's token names acme/app only: globex/app is out of its scope.
    push_image(&s, "globex/app", Cred::Bearer(&alice), "x")
        .await
        .expect_bearer_error("insufficient_scope", "acme token pushing to globex");
    let o = pull(&s, "globex/app", Cred::Bearer(&alice)).await;
    o.expect_bearer_error("insufficient_scope", "acme token pulling globex");
    assert!(
        o.challenge.contains("scope=\"repository:globex/app:pull\""),
        "{o:?}"
    );

    // A pull-role user's token, though push was asked for, cannot push.
    let bob = token(&s, "bob", &pw("bob"), "repository:acme/app:pull,push").await;
    assert_eq!(actions_on(&bob, "acme/app"), ["pull"]);
    push_image(&s, "acme/app", Cred::Bearer(&bob), "bob")
        .await
        .expect_bearer_error("insufficient_scope", "pull token pushing");
    pull(&s, "acme/app", Cred::Bearer(&bob))
        .await
        .expect(200, "", "bob pulls acme/app");

    // Asking for another tenant's repository is not an error: the token
    // simply carries no access there.
    let sneaky = token(&s, "alice", &pw("alice"), "repository:globex/app:pull,push").await;
    assert!(actions_on(&sneaky, "globex/app").is_empty(), "{sneaky}");
    pull(&s, "globex/app", Cred::Bearer(&sneaky))
        .await
        .expect_bearer_error("insufficient_scope", "acme user's globex token");
    push_image(&s, "globex/app", Cred::Bearer(&sneaky), "y")
        .await
        .expect_bearer_error("insufficient_scope", "acme user's globex token pushing");
    // globex's data is intact.
    let o = pull(&s, "globex/app", Cred::Bearer(&carol)).await;
    o.expect(200, "", "carol pulls globex/app");
    assert_eq!(o.body, image("globex").manifest);
}

// ---- 2. robot accounts ----

#[tokio::test]
async fn robot_tokens_follow_grants_revocation_and_expiry() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    let grants = vec![parse_grant("acme/app:pull,push").unwrap()];
    let (_, secret) = f
        .directory
        .create_robot("acme", "ci", grants, None)
        .await
        .unwrap();
    let secret = secret.expose().to_string();
    let (s, directory) = f.token_server(lenient()).await;

    let t = token(&s, "acme+ci", &secret, "repository:acme/app:pull,push").await;
    push_image(&s, "acme/app", Cred::Bearer(&t), "ci")
        .await
        .expect(201, "", "robot pushes acme/app");

    // Its grant names acme/app, not the rest of the tenant.
    push_image(&s, "acme/other", Cred::Bearer(&t), "ci")
        .await
        .expect_bearer_error("insufficient_scope", "acme/app token on acme/other");
    let other = token(&s, "acme+ci", &secret, "repository:acme/other:pull,push").await;
    assert!(actions_on(&other, "acme/other").is_empty());
    push_image(&s, "acme/other", Cred::Bearer(&other), "ci")
        .await
        .expect_bearer_error("insufficient_scope", "robot on acme/other");

    // Revoked: the unexpired token is refused, and so is the secret.
    directory.revoke_robot("acme", "ci").await.unwrap();
    pull(&s, "acme/app", Cred::Bearer(&t))
        .await
        .expect_bearer_error("invalid_token", "token of a revoked robot");
    login(&s, "acme+ci", &secret, "repository:acme/app:pull")
        .await
        .expect_basic_refusal("login of a revoked robot");

    // Expired. Expiry is kept in whole seconds (a robot is live while
    // now < created + lifetime), so a 1 s robot may die at once; 2 s
    // leaves it at least one second to log in.
    let grants = vec![parse_grant("acme/app:pull").unwrap()];
    let (view, secret) = directory
        .create_robot("acme", "brief", grants, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let secret = secret.expose().to_string();
    let t = token(&s, "acme+brief", &secret, "repository:acme/app:pull").await;
    pull(&s, "acme/app", Cred::Bearer(&t))
        .await
        .expect(200, "", "live robot pulls");
    let expires = view.expires_unix.unwrap();
    while now_unix() < expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pull(&s, "acme/app", Cred::Bearer(&t))
        .await
        .expect_bearer_error("invalid_token", "token of an expired robot");
    login(&s, "acme+brief", &secret, "repository:acme/app:pull")
        .await
        .expect_basic_refusal("login of an expired robot");
}

/// A tenant deleted (with `force`, its repositories purged): its users'
/// records are removed, so the directory reports their names as unknown rather than inactive, and a
/// token issued before the deletion keeps working until it expires (5 min
/// by default), on the old repositories and on those of a new tenant of
/// the same name.
#[tokio::test]
async fn tokens_of_a_deleted_tenants_users_are_refused() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let t = token(&s, "alice", &pw("alice"), "repository:acme/app:pull,push").await;
    push_image(&s, "acme/app", Cred::Bearer(&t), "a")
        .await
        .expect(201, "", "push before the deletion");
    directory.delete_tenant("acme", true).await.unwrap();
    pull(&s, "acme/app", Cred::Bearer(&t))
        .await
        .expect_bearer_error("invalid_token", "token of a deleted tenant's user");
}

/// The same for a user deleted on its own (`SubjectStatus::NotInDirectory`
/// says: "with the directory as the only source, refuse it").
#[tokio::test]
async fn tokens_of_a_deleted_user_are_refused() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let t = token(&s, "alice", &pw("alice"), "repository:acme/app:pull").await;
    directory.delete_user("acme", "alice").await.unwrap();
    pull(&s, "acme/app", Cred::Bearer(&t))
        .await
        .expect_bearer_error("invalid_token", "token of a deleted user");
}

// ---- 3. wrong passwords and secrets ----

#[tokio::test]
async fn wrong_passwords_and_other_robots_secrets_are_refused() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "alice", Role::Push).await;
    let grant = || vec![parse_grant("acme/app:pull").unwrap()];
    let (_, ci) = f
        .directory
        .create_robot("acme", "ci", grant(), None)
        .await
        .unwrap();
    let (_, deploy) = f
        .directory
        .create_robot("acme", "deploy", grant(), None)
        .await
        .unwrap();
    let (ci, deploy) = (ci.expose().to_string(), deploy.expose().to_string());
    let (s, _) = f.token_server(lenient()).await;
    let scope = "repository:acme/app:pull";

    login(&s, "alice", "wrong-password", scope)
        .await
        .expect_basic_refusal("wrong password");
    login(&s, "nobody", &pw("nobody"), scope)
        .await
        .expect_basic_refusal("unknown user");
    login(&s, "acme+ci", &deploy, scope)
        .await
        .expect_basic_refusal("another robot's secret");
    login(&s, "ci", &ci, scope)
        .await
        .expect_basic_refusal("robot secret without the tenant prefix");
    login(&s, "globex+ci", &ci, scope)
        .await
        .expect_basic_refusal("robot secret under another tenant");
    login(&s, "alice", &ci, scope)
        .await
        .expect_basic_refusal("robot secret as a user's password");
    token(&s, "acme+ci", &ci, scope).await;
    token(&s, "acme+deploy", &deploy, scope).await;
    token(&s, "alice", &pw("alice"), scope).await;
}

#[tokio::test]
async fn htpasswd_mode_checks_directory_users_and_their_tenants() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "alice", Role::Push).await;
    let grant = vec![parse_grant("acme/app:pull,push").unwrap()];
    let (_, ci) = f
        .directory
        .create_robot("acme", "ci", grant.clone(), None)
        .await
        .unwrap();
    let (_, other) = f
        .directory
        .create_robot("acme", "other", grant, None)
        .await
        .unwrap();
    let (ci, other) = (ci.expose().to_string(), other.expose().to_string());
    let (s, _) = f.basic_server(lenient()).await;

    send(&s, Method::GET, "/v2/", Cred::Anonymous)
        .await
        .expect_basic_refusal("no credentials");
    send(
        &s,
        Method::GET,
        "/v2/",
        Cred::Basic("alice", "wrong-password"),
    )
    .await
    .expect_basic_refusal("wrong password");
    send(&s, Method::GET, "/v2/", Cred::Basic("acme+ci", &other))
        .await
        .expect_basic_refusal("another robot's secret");
    send(&s, Method::GET, "/v2/", Cred::Basic("alice", &pw("alice")))
        .await
        .expect(200, "", "right password");

    let alice_pw = pw("alice");
    let alice = Cred::Basic("alice", &alice_pw);
    push_image(&s, "acme/app", alice, "a")
        .await
        .expect(201, "", "alice pushes acme/app");
    push_image(&s, "acme/app", Cred::Basic("acme+ci", &ci), "b")
        .await
        .expect(201, "", "robot pushes acme/app");
    // Known, but not allowed: asking again cannot help, so 403.
    pull(&s, "globex/app", alice)
        .await
        .expect(403, "DENIED", "alice on globex");
    push_image(&s, "acme/other", Cred::Basic("acme+ci", &ci), "c")
        .await
        .expect(403, "DENIED", "robot outside its grant");
}

/// A password changed through the directory: the node remembers a
/// successful check of `user:password` for 60 s, keyed without the stored
/// hash, so the old password keeps logging in (with the user's roles)
/// until that entry expires.
#[tokio::test]
async fn an_old_password_stops_working_when_it_is_changed() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let scope = "repository:acme/app:pull";
    token(&s, "alice", &pw("alice"), scope).await;
    let roles = [RoleSpec::tenant_wide(Role::Push)];
    directory
        .put_user("acme", "alice", Some("a-new-password"), &roles)
        .await
        .unwrap();
    login(&s, "alice", &pw("alice"), scope)
        .await
        .expect_basic_refusal("the old password after a change");
    token(&s, "alice", "a-new-password", scope).await;
}

// ---- 4. failed-login rate limits ----

#[tokio::test]
async fn a_client_failing_six_times_on_an_account_is_refused_even_with_its_password() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    f.user("acme", "bob", Role::Push).await;
    // The defaults: 5 free failures per account and client, 20 per client
    // per minute.
    let (s, _) = f.token_server(LimiterConfig::default()).await;
    let scope = "repository:acme/app:pull";
    // Five free failures, and the sixth starts a block.
    for i in 0..6 {
        login(&s, "alice", &format!("guess-{i}"), scope)
            .await
            .expect_basic_refusal("a guess");
    }
    login(&s, "alice", &pw("alice"), scope)
        .await
        .expect_too_many("alice's own password after six failures from here");
    // The client has 6 failures of its 20: another account still logs in.
    token(&s, "bob", &pw("bob"), scope).await;
}

#[tokio::test]
async fn a_client_failing_across_accounts_is_refused_for_all_of_them() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    for u in ["alice", "bob", "carol"] {
        f.user("acme", u, Role::Pull).await;
    }
    let limits = LimiterConfig {
        client_failures: 5,
        pair_failures: 2,
        ..LimiterConfig::default()
    };
    let (s, _) = f.token_server(limits).await;
    let scope = "repository:acme/app:pull";
    for _ in 0..3 {
        login(&s, "alice", "wrong-password", scope)
            .await
            .expect_basic_refusal("alice guessed");
    }
    login(&s, "alice", &pw("alice"), scope)
        .await
        .expect_too_many("alice is blocked from this client");
    // 3 of the client's 5: bob still gets in, and his success does not
    // reset the client's count.
    token(&s, "bob", &pw("bob"), scope).await;
    for _ in 0..2 {
        login(&s, "bob", "wrong-password", scope)
            .await
            .expect_basic_refusal("bob guessed");
    }
    // Bob's password was found right moments ago: a remembered check is
    // never refused by the limiter, so a logged-in user keeps working.
    token(&s, "bob", &pw("bob"), scope).await;
    login(&s, "carol", &pw("carol"), scope)
        .await
        .expect_too_many("the client is blocked, carol included");
}

#[tokio::test]
async fn htpasswd_mode_rate_limits_failed_logins_too() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Pull).await;
    let limits = LimiterConfig {
        pair_failures: 1,
        ..LimiterConfig::default()
    };
    let (s, _) = f.basic_server(limits).await;
    for _ in 0..2 {
        send(
            &s,
            Method::GET,
            "/v2/",
            Cred::Basic("alice", "wrong-password"),
        )
        .await
        .expect_basic_refusal("a guess");
    }
    send(&s, Method::GET, "/v2/", Cred::Basic("alice", &pw("alice")))
        .await
        .expect_too_many("blocked pair, right password never checked before");
}

// ---- 5. names that try to cross tenants ----

#[tokio::test]
async fn repository_name_tricks_never_reach_another_tenant() {
    let f = Fixture::new(vec![tenant("acme"), tenant("acme-evil"), tenant("globex")]).await;
    f.user("acme", "alice", Role::Push).await;
    f.user("globex", "carol", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let carol = token(&s, "carol", &pw("carol"), "repository:globex/app:pull,push").await;
    push_image(&s, "globex/app", Cred::Bearer(&carol), "globex")
        .await
        .expect(201, "", "carol pushes globex/app");
    let globex_layer = sha256(&image("globex").layer);
    let alice = token(&s, "alice", &pw("alice"), "repository:acme/app:pull,push").await;
    push_image(&s, "acme/app", Cred::Bearer(&alice), "acme")
        .await
        .expect(201, "", "alice pushes acme/app");
    let auth = format!("Authorization: Bearer {alice}\r\n");

    // Sent byte for byte (an HTTP client would normalise the dots away).
    for path in [
        "/v2/acme/../globex/app/manifests/v1",
        "/v2/acme/app/../../globex/app/manifests/v1",
        "/v2/acme/%2e%2e/globex/app/manifests/v1",
        "/v2/acme/%2E%2E/globex/app/manifests/v1",
        "/v2/acme%2Fapp/manifests/v1",
        "/v2/acme%2f..%2fglobex%2fapp/manifests/v1",
        "/v2/ACME/app/manifests/v1",
        "/v2/Acme/app/manifests/v1",
        "/v2/acme//globex/app/manifests/v1",
        &format!("/v2/acme/../globex/app/blobs/{globex_layer}"),
    ] {
        let (status, head, body) = s.raw_get_full(path, &auth).await;
        let o = Outcome::raw(status, &head, body);
        o.expect(400, "NAME_INVALID", path);
        assert!(!o.body.contains("schemaVersion"), "{path} leaked: {o:?}");
    }
    // A valid name of another namespace that merely starts with "acme".
    for path in [
        "/v2/acme-evil/x/manifests/v1",
        "/v2/globex/app/manifests/v1",
    ] {
        let (status, head, body) = s.raw_get_full(path, &auth).await;
        Outcome::raw(status, &head, body).expect_bearer_error("insufficient_scope", path);
    }
    push_image(&s, "acme-evil/x", Cred::Bearer(&alice), "evil")
        .await
        .expect_bearer_error("insufficient_scope", "push to acme-evil/x");
    let evil = token(
        &s,
        "alice",
        &pw("alice"),
        "repository:acme-evil/x:pull,push",
    )
    .await;
    assert!(actions_on(&evil, "acme-evil/x").is_empty());
    // Scopes naming a repository by a trick are refused, not normalised.
    for scope in [
        "repository:ACME/app:pull",
        "repository:acme/../globex/app:pull",
        "repository:acme%2fapp:pull",
    ] {
        login(&s, "alice", &pw("alice"), scope)
            .await
            .expect(400, "UNSUPPORTED", scope);
    }
    // Mounting globex's layer into acme needs pull on globex.
    let mount =
        |from: &str| format!("/v2/acme/app/blobs/uploads/?mount={globex_layer}&from={from}");
    send(&s, Method::POST, &mount("globex/app"), Cred::Bearer(&alice))
        .await
        .expect_bearer_error("insufficient_scope", "mount from globex");
    send(
        &s,
        Method::POST,
        &mount("globex%2Fapp"),
        Cred::Bearer(&alice),
    )
    .await
    .expect_bearer_error("insufficient_scope", "mount from an encoded globex");
    // A `from` that does not parse is no mount: a plain session starts.
    send(
        &s,
        Method::POST,
        &mount("acme/../globex/app"),
        Cred::Bearer(&alice),
    )
    .await
    .expect(202, "", "mount from a dotted name");
    send(
        &s,
        Method::GET,
        &format!("/v2/acme/app/blobs/{globex_layer}"),
        Cred::Bearer(&alice),
    )
    .await
    .expect(404, "BLOB_UNKNOWN", "globex's layer is not in acme/app");
    // A grant outside the tenant cannot even be created.
    let err = directory
        .create_robot(
            "acme",
            "x",
            vec![parse_grant("acme-evil/x:pull").unwrap()],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, wharf_tenants::DirectoryError::Invalid(_)),
        "{err:?}"
    );
}

// ---- 6. oversized credentials ----

#[tokio::test]
async fn oversized_authorization_is_refused_before_any_password_check() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Pull).await;
    // One failure would block the account: the oversized headers must not
    // count as failures.
    let limits = LimiterConfig {
        client_failures: 1,
        pair_failures: 1,
        ..LimiterConfig::default()
    };
    let (s, _) = f.token_server(limits).await;
    let huge_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("alice:{}", "x".repeat(9 * 1024)))
    );
    let huge_bearer = format!("Bearer {}", "a".repeat(9 * 1024));
    for (path, value) in [
        ("/auth/token?service=wharf-test", &huge_basic),
        ("/v2/", &huge_bearer),
        ("/v2/acme/app/manifests/v1", &huge_bearer),
        ("/v2/acme/app/manifests/v1", &huge_basic),
    ] {
        let started = std::time::Instant::now();
        let r = s
            .req(Method::GET, path)
            .header("authorization", value.as_str())
            .send()
            .await
            .unwrap();
        Outcome::of(r).await.expect(400, "UNSUPPORTED", path);
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
    token(&s, "alice", &pw("alice"), "repository:acme/app:pull").await;
}

// ---- 7. quotas ----

#[tokio::test]
async fn a_push_past_the_byte_quota_leaves_nothing_behind() {
    let f = Fixture::new(vec![tenant_with_quota("acme", Some(1000), None)]).await;
    let (s, directory) = f.open_server().await;
    let none = Cred::Anonymous;
    let kept = filler(1, 300);
    push_blob(&s, "acme/app", none, &kept)
        .await
        .expect(201, "", "300 of 1000 bytes");
    let usage = directory.usage("acme").await.unwrap();
    assert_eq!((usage.bytes, usage.repositories), (300, 1));

    let big = filler(2, 800);
    let big_digest = sha256(&big);
    let gone = |what: &'static str| {
        let (s, directory, digest) = (&s, &directory, big_digest.clone());
        async move {
            let blob = format!("/v2/acme/app/blobs/{digest}");
            send(s, Method::HEAD, &blob, none)
                .await
                .expect(404, "", what);
            send(s, Method::GET, &blob, none)
                .await
                .expect(404, "BLOB_UNKNOWN", what);
            assert_eq!(directory.usage("acme").await.unwrap().bytes, 300, "{what}");
            assert!(!blob_file(s, &digest).exists(), "{what}: blob file left");
            assert_eq!(upload_files(s), Vec::<String>::new(), "{what}: upload left");
        }
    };

    // Refused at the PUT that completes a session.
    let session = start_session(&s, "acme/app").await;
    send_body(
        &s,
        Method::PUT,
        &format!("{session}?digest={big_digest}"),
        none,
        &big,
    )
    .await
    .expect_quota_refusal("PUT completing 800 more bytes");
    send(&s, Method::GET, &session, none).await.expect(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "the refused session",
    );
    gone("after a refused PUT").await;

    // A monolithic upload.
    push_blob(&s, "acme/app", none, &big)
        .await
        .expect_quota_refusal("monolithic 800 more bytes");
    gone("after a refused monolithic upload").await;

    // Chunks: refused at the PATCH that passes the quota.
    let session = start_session(&s, "acme/app").await;
    send_body(&s, Method::PATCH, &session, none, &big[..400])
        .await
        .expect(202, "", "first 400 bytes (700 of 1000)");
    send_body(&s, Method::PATCH, &session, none, &big[400..])
        .await
        .expect_quota_refusal("PATCH passing the quota");
    send(&s, Method::GET, &session, none).await.expect(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "the refused chunked session",
    );
    send_body(&s, Method::PATCH, &session, none, b"more")
        .await
        .expect(404, "BLOB_UPLOAD_UNKNOWN", "a chunk after the refusal");
    gone("after a refused PATCH").await;

    // A manifest is content too: its bytes count.
    let config = filler(3, 600);
    push_blob(&s, "acme/app", none, &config)
        .await
        .expect(201, "", "900 of 1000 bytes");
    let manifest = image_manifest(&sha256(&config), 600, &sha256(&kept), 300, "");
    assert!(manifest.len() > 100);
    put_manifest(&s, "acme/app", "v1", none, &manifest)
        .await
        .expect_quota_refusal("manifest passing the quota");
    send(&s, Method::GET, "/v2/acme/app/manifests/v1", none)
        .await
        .expect(404, "MANIFEST_UNKNOWN", "refused manifest");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 900);
}

#[tokio::test]
async fn content_the_tenant_already_holds_passes_a_full_quota() {
    let f = Fixture::new(vec![tenant_with_quota("acme", Some(300), None)]).await;
    let (s, directory) = f.open_server().await;
    let none = Cred::Anonymous;
    let held = filler(4, 300);
    let d = sha256(&held);
    push_blob(&s, "acme/app", none, &held)
        .await
        .expect(201, "", "exactly the quota");
    push_blob(&s, "acme/app", none, &held)
        .await
        .expect(201, "", "the same blob again");
    push_blob(&s, "acme/second", none, &held).await.expect(
        201,
        "",
        "the same blob in another repository",
    );
    send(
        &s,
        Method::POST,
        &format!("/v2/acme/third/blobs/uploads/?mount={d}&from=acme/app"),
        none,
    )
    .await
    .expect(201, "", "mount of a held blob");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 300);
    push_blob(&s, "acme/app", none, b"x")
        .await
        .expect_quota_refusal("one new byte");
    assert_eq!(upload_files(&s), Vec::<String>::new());
}

/// A chunked upload of a blob the tenant already holds, with the tenant at
/// its byte quota. The PATCH check cannot know the digest yet, so it counts
/// the chunk as new bytes and ends the session, although the finished blob
/// would add nothing (the quota module's own rule: content already held is
/// never counted twice). Docker pushes layers as POST, one PATCH, PUT, so
/// a layer held in `acme/app` pushed to `acme/second` (when no mount is
/// tried) fails at the limit.
#[tokio::test]
async fn a_chunked_upload_of_held_content_passes_a_full_quota() {
    let f = Fixture::new(vec![tenant_with_quota("acme", Some(300), None)]).await;
    let (s, directory) = f.open_server().await;
    let none = Cred::Anonymous;
    let held = filler(4, 300);
    let d = sha256(&held);
    push_blob(&s, "acme/app", none, &held)
        .await
        .expect(201, "", "exactly the quota");
    let session = start_session(&s, "acme/second").await;
    send_body(&s, Method::PATCH, &session, none, &held)
        .await
        .expect(202, "", "held blob in a chunk");
    send(&s, Method::PUT, &format!("{session}?digest={d}"), none)
        .await
        .expect(201, "", "held blob completed");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 300);
}

#[tokio::test]
async fn the_repository_quota_refuses_a_new_repository() {
    let f = Fixture::new(vec![tenant_with_quota("acme", None, Some(1))]).await;
    let (s, directory) = f.open_server().await;
    let none = Cred::Anonymous;
    push_image(&s, "acme/app", none, "one")
        .await
        .expect(201, "", "first repository");
    let o = push_blob(&s, "acme/two", none, b"second repository").await;
    o.expect_quota_refusal("second repository");
    assert!(o.message.contains("repositories"), "{o:?}");
    let session = start_session(&s, "acme/two").await;
    send_body(&s, Method::PATCH, &session, none, b"chunk")
        .await
        .expect_quota_refusal("chunk into a second repository");
    let layer = sha256(&image("one").layer);
    send(
        &s,
        Method::POST,
        &format!("/v2/acme/two/blobs/uploads/?mount={layer}&from=acme/app"),
        none,
    )
    .await
    .expect_quota_refusal("mount into a second repository");
    push_image(&s, "acme/app", none, "more")
        .await
        .expect(201, "", "more in the first repository");
    assert_eq!(directory.usage("acme").await.unwrap().repositories, 1);
    assert_eq!(upload_files(&s), Vec::<String>::new());
}

#[tokio::test]
async fn a_mount_from_another_tenant_counts_against_the_target() {
    let f = Fixture::new(vec![
        tenant_with_quota("acme", Some(600), None),
        tenant("globex"),
    ])
    .await;
    let (s, directory) = f.open_server().await;
    let none = Cred::Anonymous;
    push_blob(&s, "acme/app", none, &filler(5, 300))
        .await
        .expect(201, "", "acme's own 300 bytes");
    let base = filler(6, 500);
    let d = sha256(&base);
    push_blob(&s, "globex/base", none, &base)
        .await
        .expect(201, "", "globex's 500 bytes");
    let mount = format!("/v2/acme/app/blobs/uploads/?mount={d}&from=globex/base");
    send(&s, Method::POST, &mount, none)
        .await
        .expect_quota_refusal("mount of 500 bytes into 300 of 600");
    send(&s, Method::GET, &format!("/v2/acme/app/blobs/{d}"), none)
        .await
        .expect(404, "BLOB_UNKNOWN", "refused mount");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 300);

    let raise = TenantPatch {
        quota: Some(Some(QuotaPatch {
            bytes: Some(Some(1000)),
            repositories: None,
        })),
        ..TenantPatch::default()
    };
    directory.update_tenant("acme", &raise).await.unwrap();
    send(&s, Method::POST, &mount, none)
        .await
        .expect(201, "", "mount within the raised quota");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 800);
    assert_eq!(directory.usage("globex").await.unwrap().bytes, 500);
}

// ---- 8. tenant hostnames ----

#[tokio::test]
async fn a_tenant_hostname_serves_that_tenant_only() {
    let acme = NewTenant {
        hostname: Some("acme.registry.test".into()),
        ..tenant("acme")
    };
    let f = Fixture::new(vec![acme, tenant("globex")]).await;
    let (s, _) = f.open_server().await;
    let none = Cred::Anonymous;
    push_image(&s, "globex/app", none, "globex").await.expect(
        201,
        "",
        "globex/app on the shared host",
    );
    let on =
        |host: &'static str, method: Method, path: &str| s.req(method, path).header("host", host);
    for host in [
        "acme.registry.test",
        "ACME.Registry.Test:5000",
        "acme.registry.test.",
    ] {
        let o = Outcome::of(
            on(host, Method::GET, "/v2/globex/app/manifests/v1")
                .send()
                .await
                .unwrap(),
        )
        .await;
        o.expect(403, "DENIED", host);
        assert!(!o.body.contains("schemaVersion"), "{o:?}");
        let o = Outcome::of(
            on(host, Method::POST, "/v2/globex/app/blobs/uploads/")
                .send()
                .await
                .unwrap(),
        )
        .await;
        o.expect(403, "DENIED", host);
        let o = Outcome::of(on(host, Method::GET, "/v2/_catalog").send().await.unwrap()).await;
        o.expect(403, "DENIED", host);
    }
    // acme's own repositories work normally there.
    let img = image("acme");
    let r = on(
        "acme.registry.test",
        Method::POST,
        &format!("/v2/acme/app/blobs/uploads/?digest={}", sha256(&img.config)),
    )
    .body(img.config.clone())
    .send()
    .await
    .unwrap();
    Outcome::of(r)
        .await
        .expect(201, "", "acme blob on acme's host");
    let r = on(
        "acme.registry.test",
        Method::GET,
        "/v2/acme/app/manifests/v1",
    )
    .send()
    .await
    .unwrap();
    Outcome::of(r)
        .await
        .expect(404, "MANIFEST_UNKNOWN", "acme on acme's host");
    let r = on("acme.registry.test", Method::GET, "/v2/")
        .send()
        .await
        .unwrap();
    Outcome::of(r).await.expect(200, "", "base on acme's host");
}

/// A mount reads its `from`, but the hostname rule looks only at the
/// repository in the path: through acme's hostname, globex's blobs can be
/// linked into acme (given pull on them, in an auth mode).
#[tokio::test]
async fn a_mount_through_a_tenant_hostname_cannot_read_another_tenant() {
    let acme = NewTenant {
        hostname: Some("acme.registry.test".into()),
        ..tenant("acme")
    };
    let f = Fixture::new(vec![acme, tenant("globex")]).await;
    let (s, directory) = f.open_server().await;
    push_image(&s, "globex/app", Cred::Anonymous, "globex")
        .await
        .expect(201, "", "globex/app on the shared host");
    let globex_layer = sha256(&image("globex").layer);
    let path = format!("/v2/acme/app/blobs/uploads/?mount={globex_layer}&from=globex/app");
    let r = s
        .req(Method::POST, &path)
        .header("host", "acme.registry.test")
        .send()
        .await
        .unwrap();
    Outcome::of(r)
        .await
        .expect(403, "DENIED", "mount from globex on acme's host");
    assert_eq!(directory.usage("acme").await.unwrap().bytes, 0);
}

// ---- 9. the admin API ----

/// The admin API on its own listener; its base URL.
async fn admin_server(directory: Directory, token: &str) -> String {
    let api = wharf_api::admin_api::AdminApi::new(directory, Some(wharf_auth::hash_secret(token)));
    let app = wharf_api::admin_api::admin_api_router(Arc::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn admin_api_checks_its_token_and_never_shows_secrets() {
    const ADMIN: &str = "admin-token-for-tests";
    let f = Fixture::new(vec![]).await;
    let directory = f.directory.clone();
    let base = admin_server(directory.clone(), ADMIN).await;
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>, bearer: Option<&str>| {
        let mut r = client.request(method, format!("{base}/admin/v1{path}"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        async move { Outcome::of(r.send().await.unwrap()).await }
    };
    let admin = Some(ADMIN);

    for bearer in [None, Some("wrong-token"), Some("")] {
        let o = call(Method::GET, "/tenants", None, bearer).await;
        o.expect(401, "UNAUTHORIZED", "admin without the token");
        assert!(o.challenge.starts_with("Bearer"), "{o:?}");
        call(Method::POST, "/tenants", Some(json!({"name": "x"})), bearer)
            .await
            .expect(401, "UNAUTHORIZED", "create without the token");
    }
    let r = client
        .get(format!("{base}/admin/v1/tenants"))
        .basic_auth("admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    Outcome::of(r)
        .await
        .expect(401, "UNAUTHORIZED", "the token as Basic");
    assert!(
        directory.tenants().is_empty(),
        "nothing created without the token"
    );
    call(Method::GET, "/tenants", None, admin)
        .await
        .expect(200, "", "list with the token");

    let acme = json!({"name": "acme", "quota": {"bytes": 1000}});
    call(Method::POST, "/tenants", Some(acme.clone()), admin)
        .await
        .expect(201, "", "create acme");
    call(Method::POST, "/tenants", Some(acme), admin)
        .await
        .expect(409, "CONFLICT", "acme again");
    for bad in [
        json!({"name": "ACME"}),
        json!({"name": "a/b"}),
        json!({"name": "ok", "bogus": 1}),
        json!({"name": "ok", "hostname": "Not A Host"}),
        json!({"name": "ok", "concurrency_share": 2.0}),
        json!(["not", "an", "object"]),
    ] {
        call(Method::POST, "/tenants", Some(bad.clone()), admin)
            .await
            .expect(400, "INVALID", &bad.to_string());
    }
    let r = client
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    Outcome::of(r).await.expect(400, "INVALID", "not JSON");
    call(Method::GET, "/tenants/nope", None, admin)
        .await
        .expect(404, "NOT_FOUND", "unknown tenant");
    call(Method::GET, "/tenants/nope/users", None, admin)
        .await
        .expect(404, "NOT_FOUND", "users of an unknown tenant");
    call(
        Method::POST,
        "/tenants",
        Some(json!({"name": "globex"})),
        admin,
    )
    .await
    .expect(201, "", "create globex");

    // Users: the password goes in, never comes out.
    let password = "correct-horse-battery";
    let user = json!({"password": password, "roles": [{"role": "push"}]});
    let mut shown = Vec::new();
    let o = call(
        Method::PUT,
        "/tenants/acme/users/alice",
        Some(user.clone()),
        admin,
    )
    .await;
    o.expect(201, "", "create alice");
    shown.push(o.body);
    let o = call(
        Method::PUT,
        "/tenants/acme/users/alice",
        Some(user.clone()),
        admin,
    )
    .await;
    o.expect(200, "", "update alice");
    shown.push(o.body);
    let taken = call(
        Method::PUT,
        "/tenants/globex/users/alice",
        Some(user.clone()),
        admin,
    )
    .await;
    taken.expect(409, "CONFLICT", "alice's name in another tenant");
    // The operator learns whose it is and what to do.
    assert!(
        taken.message.contains("taken by tenant acme")
            && taken.message.contains("wharf admin user delete acme alice"),
        "{taken:?}"
    );
    call(Method::PUT, "/tenants/nope/users/bob", Some(user), admin)
        .await
        .expect(404, "NOT_FOUND", "user of an unknown tenant");
    for bad in [
        json!({"password": "short", "roles": []}),
        json!({"password": password, "roles": [{"role": "root"}]}),
        json!({"password": password, "roles": [{"role": "pull", "repositories": "globex/*"}]}),
        json!({"roles": []}),
    ] {
        call(
            Method::PUT,
            "/tenants/acme/users/bob",
            Some(bad.clone()),
            admin,
        )
        .await
        .expect(400, "INVALID", &bad.to_string());
    }
    let o = call(Method::GET, "/tenants/acme/users", None, admin).await;
    o.expect(200, "", "list users");
    assert!(o.body.contains("alice"), "{o:?}");
    shown.push(o.body);

    // Robots: the secret is shown once, in the answer that created it.
    let robot = json!({"name": "ci", "grants": ["acme/app:pull,push"], "expires_in_secs": 3600});
    let o = call(
        Method::POST,
        "/tenants/acme/robots",
        Some(robot.clone()),
        admin,
    )
    .await;
    o.expect(201, "", "create robot");
    let created: Value = serde_json::from_str(&o.body).unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with(wharf_tenants::ROBOT_SECRET_PREFIX),
        "{o:?}"
    );
    assert_eq!(created["name"], "acme+ci");
    assert!(created.get("secret_hash").is_none(), "{o:?}");
    call(Method::POST, "/tenants/acme/robots", Some(robot), admin)
        .await
        .expect(409, "CONFLICT", "robot again");
    for bad in [
        json!({"name": "x", "grants": ["globex/app:pull"]}),
        json!({"name": "x", "grants": []}),
        json!({"name": "x", "grants": ["acme/app:fly"]}),
        json!({"name": "x", "grants": ["acme/app:pull"], "expires_in_secs": 0}),
        json!({"name": "X!", "grants": ["acme/app:pull"]}),
    ] {
        call(
            Method::POST,
            "/tenants/acme/robots",
            Some(bad.clone()),
            admin,
        )
        .await
        .expect(400, "INVALID", &bad.to_string());
    }
    call(
        Method::POST,
        "/tenants/nope/robots",
        Some(json!({"name": "x", "grants": ["nope/app:pull"]})),
        admin,
    )
    .await
    .expect(404, "NOT_FOUND", "robot of an unknown tenant");
    let o = call(Method::GET, "/tenants/acme/robots", None, admin).await;
    o.expect(200, "", "list robots");
    assert!(o.body.contains("acme+ci"), "{o:?}");
    assert!(
        !o.body.contains(&secret),
        "the listing shows the secret: {o:?}"
    );
    assert!(!o.body.contains("\"secret\""), "{o:?}");
    shown.push(o.body);
    call(Method::DELETE, "/tenants/acme/robots/ci", None, admin)
        .await
        .expect(204, "", "revoke");
    call(Method::DELETE, "/tenants/acme/robots/nobody", None, admin)
        .await
        .expect(404, "NOT_FOUND", "revoke an unknown robot");
    let o = call(Method::GET, "/tenants/acme/robots", None, admin).await;
    assert!(o.body.contains("\"revoked\": true"), "{o:?}");
    shown.push(o.body);

    for path in ["/tenants", "/tenants/acme", "/tenants/acme/usage"] {
        let o = call(Method::GET, path, None, admin).await;
        o.expect(200, "", path);
        shown.push(o.body);
    }
    call(Method::GET, "/nothing-here", None, admin)
        .await
        .expect(404, "NOT_FOUND", "unknown route");
    for body in &shown {
        for needle in [
            "password_hash",
            "secret_hash",
            "$2",
            password,
            secret.as_str(),
        ] {
            assert!(!body.contains(needle), "{needle:?} shown in {body}");
        }
    }
    // What the API wrote is what the registry's directory holds.
    assert!(directory.credential("alice").is_some());
    assert!(directory.credential("acme+ci").is_some());
}

// ---- 10. tenant shares of admission ----

#[tokio::test]
async fn a_tenant_share_from_the_directory_limits_its_requests() {
    use wharf_admission::{Admission, Class, ClassLimits};
    let acme = NewTenant {
        concurrency_share: Some(0.25),
        ..tenant("acme")
    };
    let f = Fixture::new(vec![acme, tenant("globex")]).await;
    let limits = ClassLimits {
        max_in_flight: 4,
        tenant_share: 1.0,
        max_wait: Duration::from_millis(10),
        max_waiters: 4,
        adaptive: None,
    };
    let dir = f.directory.clone();
    let admission = Admission::new(limits.clone(), limits.clone(), limits)
        .with_tenant_shares(Arc::new(move |t: &str| dir.concurrency_share(t)));
    let held = admission.clone();
    let (s, _) = f
        .server(|s, d| {
            s.admission = Some(admission);
            s.directory = Some(d.clone());
        })
        .await;
    let none = Cred::Anonymous;

    // acme holds one slot of four: under half full, its second gets in.
    let _acme = held.acquire(Class::Pull, "acme").await.unwrap();
    pull(&s, "acme/app", none).await.expect(
        404,
        "MANIFEST_UNKNOWN",
        "acme's second, class a quarter full",
    );
    // Half full: acme, at its share (a quarter of 4 = 1), is refused...
    let _globex = held.acquire(Class::Pull, "globex").await.unwrap();
    pull(&s, "acme/app", none)
        .await
        .expect_too_many("acme's second, class half full");
    // ...while globex (the class default, all of it) still gets in.
    pull(&s, "globex/app", none)
        .await
        .expect(404, "MANIFEST_UNKNOWN", "globex, class half full");
}

// ---- 8. identity lifecycle: attacks from outside (issue 10) ----

/// Asks `/auth/token` by the OAuth2 form (`POST`), as a client that wants
/// a refresh token (`access_type=offline`) does.
async fn post_token(s: &Server, form: &[(&str, &str)]) -> Outcome {
    let mut all = vec![("service", SERVICE), ("client_id", "test")];
    all.extend_from_slice(form);
    let r = s
        .req(Method::POST, "/auth/token")
        .form(&all)
        .send()
        .await
        .unwrap();
    Outcome::of(r).await
}

/// Logs `user` in with its password by the form; returns (access token,
/// refresh token).
async fn offline_login(s: &Server, user: &str, password: &str, scope: &str) -> (String, String) {
    let o = post_token(
        s,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("access_type", "offline"),
            ("scope", scope),
        ],
    )
    .await;
    o.expect(200, "", &format!("offline login of {user}"));
    let v: Value = serde_json::from_str(&o.body).unwrap();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Uses refresh token `rt` for `scope`.
async fn refresh(s: &Server, rt: &str, scope: &str) -> Outcome {
    post_token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", scope),
        ],
    )
    .await
}

/// An htpasswd file with one operator account, `ops` (password `ops-pw`).
fn operators() -> wharf_auth::Htpasswd {
    let hash = bcrypt::hash("ops-pw", 4).unwrap();
    wharf_auth::Htpasswd::parse(&format!("ops:{hash}\n")).unwrap()
}

#[tokio::test]
async fn a_forgotten_deleted_users_refresh_token_gets_nothing() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "bob", Role::Push).await;
    let meta = f.stores.meta.clone();
    // Token mode with an htpasswd file and no grants file: its users may do
    // everything, which once let any unknown name do everything too.
    let users = Users::new(operators(), None)
        .with_directory(f.directory.clone())
        .with_limiter(LoginLimiter::new(lenient()));
    let (s, directory) = f.token_server_over(users, None).await;
    let (_, rt) = offline_login(&s, "bob", &pw("bob"), "repository:acme/app:pull").await;
    directory.delete_user("acme", "bob").await.unwrap();
    // Long after: the deleted name is no longer remembered.
    meta.directory_delete("retired-user", "bob").await.unwrap();
    directory.load().await.unwrap();
    refresh(&s, &rt, "repository:globex/app:pull,push,delete")
        .await
        .expect(401, "UNAUTHORIZED", "a refresh by a subject nobody is");
    // The operator's own account still gets what it asks for.
    let ops = token(&s, "ops", "ops-pw", "repository:globex/app:pull").await;
    assert_eq!(actions_on(&ops, "globex/app"), vec!["pull"]);
}

#[tokio::test]
async fn a_name_taken_again_in_another_tenant_inherits_no_token() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "bob", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let scope = "repository:acme/app:pull,push";
    let (access, rt) = offline_login(&s, "bob", &pw("bob"), scope).await;
    push_image(&s, "acme/app", Cred::Bearer(&access), "acme")
        .await
        .expect(201, "", "acme's bob pushes");
    directory.delete_user("acme", "bob").await.unwrap();
    directory
        .put_user(
            "globex",
            "bob",
            Some(&pw("bob")),
            &[RoleSpec::tenant_wide(Role::Push)],
        )
        .await
        .unwrap();
    pull(&s, "acme/app", Cred::Bearer(&access))
        .await
        .expect_bearer_error("invalid_token", "the old bob's access token");
    refresh(&s, &rt, "repository:globex/app:pull,push")
        .await
        .expect(401, "UNAUTHORIZED", "the old bob's refresh token");
    // The new bob logs in as himself, and reaches globex only.
    let t = token(&s, "bob", &pw("bob"), "repository:globex/app:pull,push").await;
    push_image(&s, "globex/app", Cred::Bearer(&t), "globex")
        .await
        .expect(201, "", "globex's bob pushes");
}

#[tokio::test]
async fn a_password_or_role_change_ends_access_and_refresh_tokens_at_once() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let scope = "repository:acme/app:pull,push";
    let (access, rt) = offline_login(&s, "alice", &pw("alice"), scope).await;
    let roles = [RoleSpec::tenant_wide(Role::Push)];
    directory
        .put_user("acme", "alice", Some("a-new-password"), &roles)
        .await
        .unwrap();
    pull(&s, "acme/app", Cred::Bearer(&access))
        .await
        .expect_bearer_error("invalid_token", "an access token from before the change");
    refresh(&s, &rt, scope).await.expect(
        401,
        "UNAUTHORIZED",
        "a refresh token from before the change",
    );
    // A downgrade ends the tokens of the wider role too.
    let (access, _) = offline_login(&s, "alice", "a-new-password", scope).await;
    directory
        .put_user("acme", "alice", None, &[RoleSpec::tenant_wide(Role::Pull)])
        .await
        .unwrap();
    push_image(&s, "acme/app", Cred::Bearer(&access), "a")
        .await
        .expect_bearer_error("invalid_token", "a push token after a downgrade");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_are_revoked_per_user_tenant_and_all() {
    let f = Fixture::new(vec![tenant("acme"), tenant("globex")]).await;
    f.user("acme", "alice", Role::Push).await;
    f.user("acme", "bob", Role::Push).await;
    f.user("globex", "carol", Role::Push).await;
    let (s, directory) = f.token_server(lenient()).await;
    let scope = "repository:acme/app:pull";
    let (_, rt) = offline_login(&s, "alice", &pw("alice"), scope).await;
    let o = refresh(&s, &rt, scope).await;
    o.expect(200, "", "a first refresh");
    let next: Value = serde_json::from_str(&o.body).unwrap();
    let next = next["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(next, rt, "a refresh answers with a new refresh token");
    refresh(&s, &rt, scope)
        .await
        .expect(401, "UNAUTHORIZED", "a refresh token used twice");

    // Per user: alice's sessions end, bob's do not.
    let (alice_access, _) = offline_login(&s, "alice", &pw("alice"), scope).await;
    let (_, bob_rt) = offline_login(&s, "bob", &pw("bob"), scope).await;
    let revoked = directory
        .revoke_user_sessions("acme", "alice")
        .await
        .unwrap();
    assert!(revoked.refresh_tokens >= 2, "{revoked:?}");
    refresh(&s, &next, scope).await.expect(
        401,
        "UNAUTHORIZED",
        "alice's refresh token after revocation",
    );
    pull(&s, "acme/app", Cred::Bearer(&alice_access))
        .await
        .expect_bearer_error("invalid_token", "alice's access token after revocation");
    let o = refresh(&s, &bob_rt, scope).await;
    o.expect(200, "", "bob's refresh token is untouched");
    let bob_rt: Value = serde_json::from_str(&o.body).unwrap();
    let bob_rt = bob_rt["refresh_token"].as_str().unwrap().to_string();
    // She logs in again with her password.
    token(&s, "alice", &pw("alice"), scope).await;

    // Per tenant: acme's bob ends, globex's carol does not.
    let carol_scope = "repository:globex/app:pull";
    let (carol_access, carol_rt) = offline_login(&s, "carol", &pw("carol"), carol_scope).await;
    directory.revoke_tenant_sessions("acme").await.unwrap();
    refresh(&s, &bob_rt, scope).await.expect(
        401,
        "UNAUTHORIZED",
        "bob's refresh token after acme's revocation",
    );
    pull(&s, "globex/app", Cred::Bearer(&carol_access))
        .await
        .expect(404, "MANIFEST_UNKNOWN", "carol's token still works");

    // Everyone.
    directory.revoke_all_sessions().await.unwrap();
    refresh(&s, &carol_rt, carol_scope).await.expect(
        401,
        "UNAUTHORIZED",
        "carol's refresh token after a global revocation",
    );
    pull(&s, "globex/app", Cred::Bearer(&carol_access))
        .await
        .expect_bearer_error(
            "invalid_token",
            "carol's access token after a global revocation",
        );
}

#[tokio::test]
async fn refresh_tokens_are_kept_in_metadata_and_honoured_after_a_restart() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Pull).await;
    let scope = "repository:acme/app:pull";
    let meta: Arc<dyn MetaStore> = f.stores.meta.clone();
    let (s, _) = f.token_server(lenient()).await;
    let (_, rt) = offline_login(&s, "alice", &pw("alice"), scope).await;
    // Another token service over the same metadata (another node, or this
    // one restarted) finds the token there, by its hash only.
    let hash = wharf_auth::hash_secret(&rt);
    let record = meta
        .refresh_take(&hash)
        .await
        .unwrap()
        .expect("kept in metadata");
    assert_eq!(record.subject, "alice");
    assert_eq!(record.tenant, "acme");
    assert!(
        !format!("{record:?}").contains(&rt),
        "the secret itself is never stored"
    );
    meta.refresh_put(&record, 20, now_unix()).await.unwrap();
    refresh(&s, &rt, scope)
        .await
        .expect(200, "", "the token put back");
}

#[tokio::test]
async fn slow_token_forms_from_a_stranger_do_not_stop_logins() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Pull).await;
    let limits = wharf_admission::ClassLimits {
        max_in_flight: 4,
        tenant_share: 0.5,
        max_wait: Duration::from_millis(1),
        max_waiters: 4,
        adaptive: None,
    };
    let admission = wharf_admission::Admission::new(limits.clone(), limits.clone(), limits);
    let users =
        Users::directory_only(f.directory.clone()).with_limiter(LoginLimiter::new(lenient()));
    let (s, _) = f.token_server_over(users, Some(admission)).await;
    // Sixteen connections start a form and trickle it.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut tricklers = Vec::new();
    for _ in 0..16 {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /auth/token HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ng"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        tricklers.push(sock);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scope = "repository:acme/app:pull";
    for i in 0..8 {
        let (access, _) = offline_login(&s, "alice", &pw("alice"), scope).await;
        assert!(!access.is_empty(), "login {i} while forms trickle");
        token(&s, "alice", &pw("alice"), scope).await;
    }
    drop(tricklers);
}

#[tokio::test]
async fn a_stranger_guessing_passwords_elsewhere_never_locks_the_user_or_robot_out() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (robot, secret) = f
        .directory
        .create_robot(
            "acme",
            "ci",
            vec![parse_grant("acme/*:pull,push").unwrap()],
            None,
        )
        .await
        .unwrap();
    let (s, _) = f.token_server(LimiterConfig::default()).await;
    let scope = "repository:acme/app:pull";
    let stranger = s.client_from("127.0.0.2");
    for (name, i) in ["alice", robot.name.as_str()]
        .iter()
        .flat_map(|n| (0..30).map(move |i| (*n, i)))
    {
        let r = stranger
            .get(s.url("/auth/token"))
            .query(&[("service", SERVICE), ("scope", scope)])
            .basic_auth(name, Some(format!("guess-{i}")))
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 429), "{name} guess {i}");
    }
    // The stranger is slowed on its own address...
    let r = stranger
        .get(s.url("/auth/token"))
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic_auth("alice", Some(pw("alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the guesser's own address is blocked");
    // ...while the user and the robot, from theirs, log in at once.
    token(&s, "alice", &pw("alice"), scope).await;
    token(&s, &robot.name, secret.expose(), scope).await;
}

#[tokio::test]
async fn htpasswd_mode_never_refuses_a_logged_in_users_requests_while_a_stranger_guesses() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    f.user("acme", "alice", Role::Push).await;
    let (s, _) = f.basic_server(LimiterConfig::default()).await;
    let pass = pw("alice");
    push_image(&s, "acme/app", Cred::Basic("alice", &pass), "a")
        .await
        .expect(201, "", "alice pushes");
    let stranger = s.client_from("127.0.0.2");
    for i in 0..40 {
        let _ = stranger
            .get(s.url("/v2/"))
            .basic_auth("alice", Some(format!("guess-{i}")))
            .send()
            .await
            .unwrap();
    }
    // Her requests go on, from her address and even from the stranger's
    // (her password was found right a moment ago).
    pull(&s, "acme/app", Cred::Basic("alice", &pass))
        .await
        .expect(200, "", "alice pulls while the stranger guesses");
    let r = stranger
        .get(s.url("/v2/acme/app/manifests/v1"))
        .basic_auth("alice", Some(&pass))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "her remembered credentials from the stranger's address"
    );
}

#[tokio::test]
async fn login_answers_take_as_long_for_unknown_deleted_and_existing_names() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    for u in ["alice", "gone"] {
        f.user("acme", u, Role::Pull).await;
    }
    let (s, directory) = f.token_server(lenient()).await;
    directory.delete_user("acme", "gone").await.unwrap();
    let scope = "repository:acme/app:pull";
    let median = |name: &'static str| {
        let s = &s;
        async move {
            let mut times = Vec::new();
            for i in 0..7 {
                let t = std::time::Instant::now();
                login(s, name, &format!("wrong-{i}"), scope).await;
                times.push(t.elapsed());
            }
            times.sort();
            times[3]
        }
    };
    let existing = median("alice").await;
    let deleted = median("gone").await;
    let unknown = median("nobody").await;
    // Not a speed target: an oracle check. Before, a deleted name answered
    // about a hundred times faster than any other.
    for (what, t) in [("deleted", deleted), ("unknown", unknown)] {
        assert!(
            t * 4 >= existing && t <= existing * 4,
            "{what} name: {t:?} against {existing:?} for an existing one"
        );
    }
}

#[tokio::test]
async fn tenant_hostnames_fail_closed_on_odd_hosts_and_targets() {
    let acme = NewTenant {
        hostname: Some("acme.registry.test".into()),
        ..tenant("acme")
    };
    let f = Fixture::new(vec![acme, tenant("globex")]).await;
    let (s, _) = f.open_server().await;
    push_image(&s, "globex/app", Cred::Anonymous, "globex")
        .await
        .expect(201, "", "globex/app");
    let target = "/v2/globex/app/manifests/v1";
    let bad_requests = [
        (
            "an empty port",
            format!("GET {target} HTTP/1.1\r\nHost: acme.registry.test:\r\n"),
        ),
        (
            "an odd port",
            format!("GET {target} HTTP/1.1\r\nHost: acme.registry.test:5x\r\n"),
        ),
        (
            "a port too large",
            format!("GET {target} HTTP/1.1\r\nHost: acme.registry.test:70000\r\n"),
        ),
        (
            "two Host headers",
            format!("GET {target} HTTP/1.1\r\nHost: acme.registry.test\r\nHost: other.test\r\n"),
        ),
        ("no Host", format!("GET {target} HTTP/1.1\r\n")),
        (
            "an absolute target naming another host",
            format!("GET http://other.test{target} HTTP/1.1\r\nHost: acme.registry.test\r\n"),
        ),
    ];
    for (what, head) in bad_requests {
        let (status, text) = s
            .raw_request(&format!("{head}Connection: close\r\n\r\n"))
            .await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(!text.contains("schemaVersion"), "{what}");
    }
    // The absolute form naming the tenant's host is held to its rule.
    let (status, text) = s
        .raw_request(&format!(
            "GET http://acme.registry.test{target} HTTP/1.1\r\nHost: acme.registry.test\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(
        !text.contains("acme"),
        "an unauthenticated refusal names no tenant: {text}"
    );
    // HTTP/2: `:authority` is the host.
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(
            "acme.registry.test",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .build()
        .unwrap();
    let url = format!("http://acme.registry.test:{port}{target}");
    let r = h2.get(url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 403, "HTTP/2 :authority of the tenant's host");
    // The shared host still serves globex.
    pull(&s, "globex/app", Cred::Anonymous)
        .await
        .expect(200, "", "globex on the shared host");
}

#[tokio::test]
async fn a_content_range_ending_at_the_largest_offset_does_not_wrap() {
    let f = Fixture::new(vec![tenant("acme")]).await;
    let (s, _) = f.open_server().await;
    let location = start_session(&s, "acme/app").await;
    let r = s
        .req(Method::PATCH, &location)
        .header("content-range", "0-18446744073709551615")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    let o = Outcome::of(r).await;
    assert!(
        o.status == 400 || o.status == 416,
        "a 2^64-byte range is refused, not taken as empty: {o:?}"
    );
}
