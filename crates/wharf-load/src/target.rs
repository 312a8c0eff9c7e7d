//! Parses target addresses and request specs, and refuses anything that is
//! not loopback (`127.0.0.0/8` or `::1`). Host names are refused too, even
//! `localhost`: a name could resolve elsewhere, an IP literal cannot.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Uri};

/// One request of the mix, ready to send on any connection to the target.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    pub method: Method,
    /// Path and query, as sent in the request line.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A parsed `--url` spec: where to connect, and what to send.
#[derive(Debug)]
pub struct Spec {
    pub addr: SocketAddr,
    /// The `Host` header value (`ip:port`).
    pub authority: String,
    pub request: RequestSpec,
}

/// `ip` is loopback in the narrow sense this tool allows.
pub fn is_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

fn check(addr: SocketAddr) -> Result<SocketAddr, String> {
    if is_allowed(addr.ip()) {
        Ok(addr)
    } else {
        Err(format!(
            "refusing {addr}: wharf-load only targets loopback (127.0.0.0/8 or ::1)"
        ))
    }
}

/// `http://ip[:port][/path]` or `ip:port` → address, `Host` value, and the
/// URL's path if it had one.
pub fn parse_addr(s: &str) -> Result<(SocketAddr, String, Option<String>), String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        let addr = check(addr)?;
        return Ok((addr, addr.to_string(), None));
    }
    let uri: Uri = s.parse().map_err(|e| format!("bad URL {s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{s:?}: only http:// URLs (or ip:port) are supported"
        ));
    }
    let host = uri.host().ok_or_else(|| format!("{s:?}: no host"))?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            format!("{s:?}: the host must be an IP literal (127.0.0.1 or [::1]), not a name")
        })?;
    let addr = check(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| p != "/");
    Ok((addr, addr.to_string(), path))
}

/// `[METHOD ]URL[|Name: value]...`
pub fn parse_spec(s: &str) -> Result<Spec, String> {
    let mut parts = s.split('|');
    let head = parts.next().unwrap_or("").trim();
    let (method, url) = match head.split_once(' ') {
        Some((m, u)) => (
            Method::from_bytes(m.as_bytes()).map_err(|_| format!("bad method {m:?}"))?,
            u.trim(),
        ),
        None => (Method::GET, head),
    };
    let (addr, authority, path) = parse_addr(url)?;
    let mut headers = Vec::new();
    for h in parts {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("bad header {h:?} in {s:?}: expected `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("bad header name {name:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("bad header value {value:?}"))?;
        headers.push((name, value));
    }
    Ok(Spec {
        addr,
        authority,
        request: RequestSpec {
            method,
            path: path.unwrap_or_else(|| "/".into()),
            headers,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_allowed() {
        assert!(parse_addr("127.0.0.1:5000").is_ok());
        assert!(parse_addr("127.9.8.7:1").is_ok());
        assert!(parse_addr("[::1]:5000").is_ok());
        assert!(parse_addr("http://[::1]:5000/v2/").is_ok());
        for bad in [
            "10.0.0.1:5000",
            "0.0.0.0:5000",
            "[::]:5000",
            "[::ffff:127.0.0.1]:5000",
            "http://192.168.1.1:5000/v2/",
            "http://localhost:5000/v2/",
            "http://example.com/v2/",
            "https://127.0.0.1:5000/v2/",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn spec_with_method_and_headers() {
        let s = parse_spec(
            "HEAD http://127.0.0.1:5000/v2/a/b/manifests/1|Accept: application/x, application/y",
        )
        .unwrap();
        assert_eq!(s.addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(s.authority, "127.0.0.1:5000");
        assert_eq!(s.request.method, Method::HEAD);
        assert_eq!(s.request.path, "/v2/a/b/manifests/1");
        assert_eq!(s.request.headers.len(), 1);
        assert_eq!(s.request.headers[0].0, "accept");
        assert_eq!(s.request.headers[0].1, "application/x, application/y");
    }

    #[test]
    fn spec_defaults() {
        let s = parse_spec("http://127.0.0.1:80/v2/").unwrap();
        assert_eq!(s.request.method, Method::GET);
        assert_eq!(s.request.path, "/v2/");
        assert!(parse_spec("http://127.0.0.1:80/v2/|NoColon").is_err());
        assert!(parse_spec("http://10.1.1.1:80/v2/").is_err());
    }
}
