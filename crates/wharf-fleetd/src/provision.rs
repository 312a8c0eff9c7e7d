//! Creates a placed tenant on its cell, through one of the cell's nodes'
//! admin API (`POST /admin/v1/tenants`, docs/admin-api.yaml).
//!
//! Owns: that call and how its answer is read. A tenant the cell holds
//! already with the settings asked for (hostname, and the quota limits
//! given) counts as created, so the step can be retried after a crash
//! between the recorded placement and the cell's answer; any other answer
//! of the cell that names the request as the problem (`400`, `409`) is a
//! [`Provisioned::Refused`] carrying the cell's own message; a node that
//! cannot be reached, or answers `5xx`, `401` or `403`, leaves the outcome
//! unknown ([`Provisioned::Unreachable`]): the placement stays recorded and
//! the step is tried again. Once created, [`Provisioner::wait_known`]
//! waits (bounded) until every node of the cell knows the tenant, so that
//! the route the service then writes never reaches a node that would
//! answer for it as unknown.
//!
//! Must never: decide where a tenant goes, record or route anything (the
//! service does, from the outcome), or change a tenant the cell holds
//! already.

use std::time::Duration;

use serde_json::{json, Value};

use crate::store::CellQuota;

/// What the cell said to a tenant's creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// The cell created it now.
    Created,
    /// The cell held it already, with the same settings.
    AlreadyThere,
    /// The cell refused it: its message.
    Refused(String),
    /// No node gave an answer that settles it: why.
    Unreachable(String),
}

/// The tenant as placement asks the cell for it.
#[derive(Clone, Debug)]
pub struct TenantSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its own hostname (lowercase), if any.
    pub hostname: Option<&'a str>,
    /// The quota limits asked for.
    pub quota: CellQuota,
}

/// The client that talks to the cells' admin APIs for placement.
pub struct Provisioner {
    client: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
}

impl Provisioner {
    /// A provisioner sending `token` (the nodes' plain admin token) as
    /// `Authorization: Bearer`, each call bounded by `connect` to connect
    /// and `timeout` in all.
    pub fn new(token: Option<String>, connect: Duration, timeout: Duration) -> Provisioner {
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Provisioner {
            client,
            token,
            timeout,
        }
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let b = self.client.request(method, url).timeout(self.timeout);
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// Creates `spec` on the cell whose nodes' admin URLs are `nodes`: the
    /// first node that answers speaks for the cell (its nodes share one
    /// directory).
    pub async fn create(&self, cell: u32, nodes: &[String], spec: &TenantSpec<'_>) -> Provisioned {
        let mut last = format!("cell {cell} has no nodes");
        for node in nodes {
            match self.create_on(cell, node, spec).await {
                Provisioned::Unreachable(e) => last = e,
                settled => return settled,
            }
        }
        Provisioned::Unreachable(last)
    }

    /// Waits (at most `within`) until every node of the cell that answers
    /// knows tenant `name`: each node answers from its own copy of the
    /// cell's directory, refreshed every few seconds, and a route to the
    /// cell reaches any of them. Returns the nodes that still did not
    /// (a node that cannot be reached is not waited for).
    pub async fn wait_known(&self, nodes: &[String], name: &str, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut waiting: Vec<String> = nodes.to_vec();
        loop {
            let mut still = Vec::new();
            for node in waiting {
                let url = format!("{}/admin/v1/tenants/{name}", node.trim_end_matches('/'));
                match self.request(reqwest::Method::GET, url).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(_) => still.push(node),
                    Err(e) if e.is_connect() => {}
                    Err(_) => still.push(node),
                }
            }
            if still.is_empty() || tokio::time::Instant::now() >= deadline {
                return still;
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create_on(&self, cell: u32, node: &str, spec: &TenantSpec<'_>) -> Provisioned {
        let base = node.trim_end_matches('/');
        let mut body = json!({"name": spec.name, "hostname": spec.hostname});
        if spec.quota != CellQuota::default() {
            body["quota"] = json!(spec.quota);
        }
        let url = format!("{base}/admin/v1/tenants");
        let resp = match self
            .request(reqwest::Method::POST, url.clone())
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Provisioned::Unreachable(format!("cell {cell}: POST {url}: {e}")),
        };
        let status = resp.status().as_u16();
        let message = error_message(resp).await;
        match status {
            200..=299 => Provisioned::Created,
            409 => self.compare(cell, base, spec, message).await,
            400 | 422 => Provisioned::Refused(message),
            _ => {
                Provisioned::Unreachable(format!("cell {cell}: POST {url} -> {status}: {message}"))
            }
        }
    }

    /// After a `409`: the tenant the cell holds, if it is the one asked
    /// for, is [`Provisioned::AlreadyThere`]; else the cell's refusal
    /// (`conflict`) stands.
    async fn compare(
        &self,
        cell: u32,
        base: &str,
        spec: &TenantSpec<'_>,
        conflict: String,
    ) -> Provisioned {
        let url = format!("{base}/admin/v1/tenants/{}", spec.name);
        let resp = match self.request(reqwest::Method::GET, url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Provisioned::Unreachable(format!("cell {cell}: GET {url}: {e}")),
        };
        match resp.status().as_u16() {
            200 => match resp.json::<Value>().await {
                Ok(t) => match differences(&t, spec) {
                    None => Provisioned::AlreadyThere,
                    Some(d) => Provisioned::Refused(format!("{conflict} ({d})")),
                },
                Err(e) => Provisioned::Unreachable(format!("cell {cell}: GET {url}: {e}")),
            },
            // Not the tenant itself: its hostname is another's, or its
            // name is still settling after a deletion.
            404 => Provisioned::Refused(conflict),
            s => Provisioned::Unreachable(format!("cell {cell}: GET {url} -> {s}")),
        }
    }
}

/// How the cell's tenant `t` differs from `spec`, or `None` when it is
/// the one asked for (hostnames compared without case; only the quota
/// limits given are compared).
pub fn differences(t: &Value, spec: &TenantSpec<'_>) -> Option<String> {
    let mut d = Vec::new();
    let have = t["hostname"].as_str().map(str::to_ascii_lowercase);
    if have.as_deref() != spec.hostname {
        d.push(format!(
            "it has hostname {}, not {}",
            have.as_deref().unwrap_or("none"),
            spec.hostname.unwrap_or("none")
        ));
    }
    for (key, want) in [
        ("bytes", spec.quota.bytes),
        ("repositories", spec.quota.repositories),
    ] {
        let have = t["quota"][key].as_u64();
        if want.is_some() && have != want {
            d.push(format!(
                "its quota.{key} is {}, not {}",
                have.map_or("none".into(), |v| v.to_string()),
                want.map_or("none".into(), |v| v.to_string())
            ));
        }
    }
    (!d.is_empty()).then(|| format!("the cell's tenant differs: {}", d.join(", ")))
}

/// The message of an admin API error answer (`{"errors": [{"message"}]}`),
/// else the body's start.
async fn error_message(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(hostname: Option<&'a str>, quota: CellQuota) -> TenantSpec<'a> {
        TenantSpec {
            name: "acme",
            hostname,
            quota,
        }
    }

    #[test]
    fn the_same_tenant_has_no_differences() {
        let t = json!({"name": "acme", "hostname": "Acme.Example", "quota": {"bytes": 100}});
        assert_eq!(
            differences(&t, &spec(Some("acme.example"), CellQuota::default())),
            None
        );
        let q = CellQuota {
            bytes: Some(100),
            repositories: None,
        };
        assert_eq!(differences(&t, &spec(Some("acme.example"), q)), None);
    }

    #[test]
    fn another_hostname_or_quota_is_named() {
        let t = json!({"name": "acme", "hostname": null, "quota": {"bytes": 100}});
        let d = differences(&t, &spec(Some("acme.example"), CellQuota::default())).unwrap();
        assert!(d.contains("hostname none, not acme.example"), "{d}");
        let q = CellQuota {
            bytes: Some(5),
            repositories: Some(2),
        };
        let d = differences(&t, &spec(None, q)).unwrap();
        assert!(d.contains("quota.bytes is 100, not 5"), "{d}");
        assert!(d.contains("quota.repositories is none, not 2"), "{d}");
    }
}
