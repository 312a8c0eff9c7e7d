//! How a command reaches the admin API, shared by every `wharf admin`
//! command and by `wharf gc`.
//!
//! Owns: the connection flags (`--url`, `--token-file`, and `--as-user`
//! with `--password-file` for a tenant's own account) and checking them
//! ([`Connection::resolve`]), the token read from a file or
//! WHARF_ADMIN_TOKEN, the account's password from a file or
//! WHARF_ADMIN_PASSWORD, the [`Call`] a command makes and its path segments,
//! sending it with timeouts, and turning the answer into what is printed
//! ([`render`]) or into an error message an operator can act on.
//!
//! Must never: print, log or put in an error message the token or the
//! password (the `Authorization` header is marked sensitive, and a URL
//! holding credentials is refused); follow a redirect (it would carry the token
//! elsewhere); or know what any one command means: what to ask is the
//! command's file's, this only carries it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::token::ADMIN_TOKEN_PREFIX;

/// The admin port's address when neither `--url` nor `WHARF_ADMIN_URL` is
/// given (the server's default `--admin-listen`).
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:5001";
/// Every path of the admin API starts with this.
pub(crate) const API_PREFIX: &str = "/admin/v1";
/// Longest wait for a TCP connection to the admin port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a whole request, from connecting to the last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a garbage-collection request: a pass, or a retention
/// run deleting one item at a time, goes on until done (the server carries
/// on if the client gives up; what it deleted stays deleted).
const GC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The environment variable holding the admin token itself.
pub(crate) const TOKEN_ENV: &str = "WHARF_ADMIN_TOKEN";

/// How a command reaches the admin API: the connection flags `wharf admin`
/// and `wharf gc` share.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// Base URL of the server's admin port.
    #[arg(
        long,
        env = "WHARF_ADMIN_URL",
        default_value = DEFAULT_URL,
        global = true,
        value_name = "URL",
        help_heading = "Connection"
    )]
    url: String,

    /// File whose first line is the admin token (the plain token, not the
    /// `sha256:` line given to the server). Without it the token is taken
    /// from WHARF_ADMIN_TOKEN; without either, requests carry none (enough
    /// for a server started without --admin-token-file).
    #[arg(
        long,
        env = "WHARF_ADMIN_TOKEN_FILE",
        global = true,
        value_name = "FILE",
        help_heading = "Connection"
    )]
    token_file: Option<PathBuf>,

    /// Act as this tenant account (a user, or a robot as `tenant+name`)
    /// with its own password instead of the admin token: enough for
    /// `usage`, `repo delete` and `content delete` on its own tenant. The
    /// password is the first line of --password-file, or
    /// WHARF_ADMIN_PASSWORD.
    #[arg(
        long = "as-user",
        env = "WHARF_ADMIN_USER",
        global = true,
        value_name = "NAME",
        help_heading = "Connection"
    )]
    as_user: Option<String>,

    /// File whose first line is --as-user's password.
    #[arg(
        long,
        env = "WHARF_ADMIN_PASSWORD_FILE",
        global = true,
        value_name = "FILE",
        requires = "as_user",
        help_heading = "Connection"
    )]
    password_file: Option<PathBuf>,
}

/// The environment variable holding --as-user's password, when no
/// --password-file is given.
pub(crate) const PASSWORD_ENV: &str = "WHARF_ADMIN_PASSWORD";

impl Connection {
    /// The admin port's base URL and the `Authorization` value to send
    /// (the admin token as `Bearer`, or a tenant account's name and
    /// password as `Basic`), both checked before anything is sent.
    pub(crate) fn resolve(&self) -> Result<(Url, Option<String>), String> {
        let base = base_url(&self.url)?;
        if let Some(user) = &self.as_user {
            let password = account_password(
                self.password_file.as_deref(),
                std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
            )?;
            return Ok((base, Some(basic(user, &password)?)));
        }
        let token = admin_token(
            self.token_file.as_deref(),
            std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        )?;
        Ok((base, token.map(|t| format!("Bearer {t}"))))
    }
}

/// `Basic …` for `user` and `password`.
fn basic(user: &str, password: &str) -> Result<String, String> {
    use base64::Engine as _;
    if user.is_empty() || user.contains(':') {
        return Err(format!("--as-user {user:?} is not an account name"));
    }
    let pair = format!("{user}:{password}");
    Ok(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// --as-user's password: the first line of `file` if given, else `env`
/// (WHARF_ADMIN_PASSWORD).
fn account_password(file: Option<&Path>, env: Option<String>) -> Result<String, String> {
    let Some(path) = file else {
        return env.ok_or_else(|| {
            format!(
                "--as-user needs the account's password: --password-file FILE or {PASSWORD_ENV}"
            )
        });
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the password from {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(format!("{} holds no password", path.display()));
    }
    Ok(password.to_string())
}

/// One request of the admin API, built and checked before it is sent.
#[derive(Debug, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// From `/admin/v1` on, path segments percent-encoded, with any query.
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
    pub(crate) print: Print,
}

impl Call {
    /// A request whose answer prints as JSON, as most do.
    pub(crate) fn json(method: Method, path: String, body: Option<Value>) -> Call {
        Call {
            method,
            path,
            body,
            print: Print::Json,
        }
    }
}

/// What to print of a successful answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Print {
    /// The JSON body, pretty-printed (nothing for an empty body).
    Json,
    /// Only the body's `secret` field.
    Secret,
    /// A retention pass, as text (`crate::gc_cli::render_retention`).
    Retention,
}

/// `value` as one path segment: percent-encoded, and refused when empty or
/// a dot segment (which URL parsing would resolve into another path).
pub(super) fn segment(what: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("{what} {value:?} is not a name"));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// The admin token to send: the first line of `file` if given, else `env`
/// (WHARF_ADMIN_TOKEN), else none.
pub(super) fn admin_token(
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<String>, String> {
    let Some(path) = file else {
        return Ok(env);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the admin token from {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{} holds no admin token", path.display()));
    }
    if token.starts_with("sha256:") && !token.starts_with(ADMIN_TOKEN_PREFIX) {
        return Err(format!(
            "{} holds the token's hash (the server's --admin-token-file); \
             --token-file wants the token itself",
            path.display()
        ));
    }
    Ok(Some(token.to_string()))
}

/// The admin port's base URL, checked before anything is sent.
pub(crate) fn base_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("--url {url:?}: the scheme must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Error messages show the URL; the token belongs in --token-file.
        return Err("--url must not hold credentials: give the token with --token-file".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("--url {url:?}: no query or fragment, please"));
    }
    Ok(parsed)
}

/// Sends `call` and prints the answer as `call.print` says; an error answer
/// becomes the `Err`.
pub(super) fn send(base: &Url, auth: Option<&str>, call: &Call) -> Result<(), String> {
    let text = fetch(base, auth, call)?;
    if let Some(out) = render(call.print, &text)? {
        println!("{out}");
    }
    Ok(())
}

/// Sends `call` with `auth` (an `Authorization` value, from
/// [`Connection::resolve`]); the body of a successful answer, an error
/// answer as the `Err`.
pub(crate) fn fetch(base: &Url, auth: Option<&str>, call: &Call) -> Result<String, String> {
    // A garbage-collection pass runs as long as it has work.
    let timeout = match call.path.starts_with(&format!("{API_PREFIX}/gc")) {
        true => GC_REQUEST_TIMEOUT,
        false => REQUEST_TIMEOUT,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("setting up the HTTP client: {e}"))?;
    let url = format!("{}{}", base.as_str().trim_end_matches('/'), call.path);
    let mut request = client
        .request(call.method.clone(), &url)
        .header(ACCEPT, "application/json");
    if let Some(auth) = auth {
        let mut value = HeaderValue::from_str(auth).map_err(|_| {
            "the admin token or password holds characters a header cannot carry".to_string()
        })?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request
        .send()
        .map_err(|e| describe_send_error(base, &e, timeout))?;
    let status = response.status();
    let text = response
        .text()
        .map_err(|e| format!("reading the answer from {base}: {e}"))?;
    if !status.is_success() {
        let mut message = describe_error(status, &text);
        // A tenant account's password (Basic) has its own message; the hint
        // is about the operator's token.
        let basic = auth.is_some_and(|a| a.starts_with("Basic "));
        if status == StatusCode::UNAUTHORIZED && !basic {
            message.push_str(&token_hint(auth.is_some()));
        }
        return Err(message);
    }
    Ok(text)
}

/// What to do about a `401`: which token the server wants and the ways to
/// give it.
fn token_hint(sent: bool) -> String {
    let what = match sent {
        true => "the admin token sent is not the one the server's --admin-token-file was made for",
        false => "no admin token was sent, and this server asks for one",
    };
    format!(
        "\nwharf admin: {what}: give the plain token (the first file `wharf admin token --out DIR` \
         wrote, not its .sha256) with --token-file FILE or WHARF_ADMIN_TOKEN_FILE=FILE, or the \
         token itself in {TOKEN_ENV}"
    )
}

/// What to print of a successful answer's body; `None` for nothing.
pub(crate) fn render(print: Print, body: &str) -> Result<Option<String>, String> {
    if body.trim().is_empty() {
        return match print {
            Print::Json => Ok(None),
            Print::Secret => Err("the answer holds no secret".into()),
            Print::Retention => Err("the answer is empty".into()),
        };
    }
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) if print == Print::Json => return Ok(Some(body.trim_end().to_string())),
        Err(e) => return Err(format!("the answer is not JSON: {e}")),
    };
    match print {
        Print::Json => serde_json::to_string_pretty(&value)
            .map(Some)
            .map_err(|e| e.to_string()),
        Print::Secret => value
            .get("secret")
            .and_then(Value::as_str)
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| "the answer holds no secret".into()),
        Print::Retention => Ok(Some(crate::gc_cli::render_retention(&value))),
    }
}

/// `<status> <code>: <message>` for each error of an OCI error envelope;
/// for another body, the status and the start of the body.
fn describe_error(status: StatusCode, body: &str) -> String {
    let errors = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let list = v.get("errors")?.as_array()?.clone();
        let lines: Vec<String> = list
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(Value::as_str).unwrap_or("UNKNOWN");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                format!("{} {code}: {message}", status.as_u16())
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    });
    match errors {
        Some(lines) => lines.join("\nwharf admin: "),
        None => {
            let reason = status.canonical_reason().unwrap_or("error");
            let text: String = body.trim().chars().take(200).collect();
            if text.is_empty() {
                format!("{} {reason}", status.as_u16())
            } else {
                format!("{} {reason}: {text}", status.as_u16())
            }
        }
    }
}

/// A request that got no answer: why, in words an operator can act on.
fn describe_send_error(base: &Url, e: &reqwest::Error, timeout: Duration) -> String {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("no answer from {base} within {} s", timeout.as_secs())
    } else if e.is_connect() {
        format!(
            "cannot connect to {base}: {cause} (is `wharf serve` running, and is \
             --url or WHARF_ADMIN_URL its admin port?)"
        )
    } else {
        format!("request to {base} failed: {e}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = parse(&["--url", "http://10.0.0.1:5001", "tenant", "list"]);
        assert_eq!(a.connection.url, "http://10.0.0.1:5001");
        let a = parse(&[
            "tenant",
            "list",
            "--token-file",
            "/run/t",
            "--url",
            "http://h:1",
        ]);
        assert_eq!(a.connection.url, "http://h:1");
        assert_eq!(
            a.connection.token_file.as_deref(),
            Some(Path::new("/run/t"))
        );
    }

    #[test]
    fn segments_are_encoded_never_interpreted() {
        // Whatever passes a command's name check is still encoded.
        assert_eq!(
            segment("x", "a b/c?d#e%+~"),
            Ok("a%20b%2Fc%3Fd%23e%25+~".into())
        );
    }

    #[test]
    fn the_token_comes_from_the_file_first_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "wharf_admin_abc \nsecond line\n").unwrap();
        assert_eq!(
            admin_token(Some(&file), Some("from-env".into())),
            Ok(Some("wharf_admin_abc".into()))
        );
        assert_eq!(
            admin_token(None, Some("from-env".into())),
            Ok(Some("from-env".into()))
        );
        assert_eq!(admin_token(None, None), Ok(None));

        let hash = dir.path().join("admin-token.sha256");
        std::fs::write(&hash, format!("sha256:{}\n", "0".repeat(64))).unwrap();
        let e = admin_token(Some(&hash), None).unwrap_err();
        assert!(e.contains("hash"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(admin_token(Some(&file), None).is_err());
        assert!(admin_token(Some(&dir.path().join("missing")), None).is_err());
    }

    #[test]
    fn a_tenant_account_sends_its_name_and_password_as_basic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret pass\nsecond\n").unwrap();
        assert_eq!(
            account_password(Some(&file), Some("env".into())),
            Ok("s3cret pass".into())
        );
        assert_eq!(account_password(None, Some("env".into())), Ok("env".into()));
        assert!(account_password(None, None)
            .unwrap_err()
            .contains(PASSWORD_ENV));
        // alice:pw in base64.
        assert_eq!(basic("alice", "pw"), Ok("Basic YWxpY2U6cHc=".into()));
        assert!(basic("a:b", "pw").is_err());
        let a = parse(&["--as-user", "alice", "usage", "acme"]);
        assert_eq!(a.connection.as_user.as_deref(), Some("alice"));
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(base_url("http://127.0.0.1:5001").is_ok());
        assert!(base_url("https://admin.example/wharf/").is_ok());
        for bad in [
            "127.0.0.1:5001",
            "ftp://h",
            "http://user:pw@h",
            "http://h/?x=1",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_answers_show_status_code_and_message() {
        let body = r#"{"errors":[{"code":"CONFLICT","message":"tenant \"acme\" exists"}]}"#;
        assert_eq!(
            describe_error(StatusCode::CONFLICT, body),
            "409 CONFLICT: tenant \"acme\" exists"
        );
        let two =
            r#"{"errors":[{"code":"INVALID","message":"a"},{"code":"INVALID","message":"b"}]}"#;
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, two),
            "400 INVALID: a\nwharf admin: 400 INVALID: b"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, "<html>upstream down</html>"),
            "502 Bad Gateway: <html>upstream down</html>"
        );
        assert_eq!(describe_error(StatusCode::NOT_FOUND, ""), "404 Not Found");
        // A redirect is not followed: it ends up here too.
        assert_eq!(describe_error(StatusCode::FOUND, ""), "302 Found");
    }

    #[test]
    fn answers_are_pretty_printed_or_reduced_to_the_secret() {
        let created = r#"{"name":"acme+ci","secret":"wharf_robot_x"}"#;
        assert_eq!(
            render(Print::Json, created),
            Ok(Some(
                "{\n  \"name\": \"acme+ci\",\n  \"secret\": \"wharf_robot_x\"\n}".into()
            ))
        );
        assert_eq!(
            render(Print::Secret, created),
            Ok(Some("wharf_robot_x".into()))
        );
        assert!(render(Print::Secret, r#"{"name":"acme+ci"}"#).is_err());
        assert!(render(Print::Secret, "").is_err());
        assert_eq!(render(Print::Json, ""), Ok(None));
        assert_eq!(
            render(Print::Json, "plain text\n"),
            Ok(Some("plain text".into()))
        );
    }
}
