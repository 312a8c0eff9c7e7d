//! Small helpers for reading request headers and building responses.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use wharf_core::RegistryError;

/// A response with `status`, no body and `Content-Length: 0`.
pub fn empty(status: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// Sets header `name` to `value` (values we build are always valid ASCII).
pub fn set(resp: &mut Response, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().insert(name, v);
    }
}

/// The `Range` header of an upload holding `size` bytes: `0-<last byte>`
/// (`0-0` when empty, as the reference implementation and clients expect).
pub fn upload_range(size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("ascii")
}

/// A header as a string, if present and ASCII.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Length`, if present; a malformed one is `SIZE_INVALID`.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    match get(headers, "content-length") {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| RegistryError::SizeInvalid(format!("bad Content-Length {v:?}"))),
    }
}

/// Whether the request carries a body (a non-zero length, or chunked).
pub fn has_body(headers: &HeaderMap) -> Result<bool, RegistryError> {
    Ok(match content_length(headers)? {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    })
}

/// A query parameter's first value, percent-decoded.
pub fn query<'a>(uri: &'a axum::http::Uri, key: &'a str) -> Option<std::borrow::Cow<'a, str>> {
    query_all(uri, key).next()
}

/// Every value of a query parameter, percent-decoded.
pub fn query_all<'a>(
    uri: &'a axum::http::Uri,
    key: &'a str,
) -> impl Iterator<Item = std::borrow::Cow<'a, str>> + 'a {
    form_values(uri.query().unwrap_or(""), key)
}

/// Every value of `key` in an `application/x-www-form-urlencoded` string
/// (a query, or a form body), percent-decoded.
pub fn form_values<'a>(
    form: &'a str,
    key: &'a str,
) -> impl Iterator<Item = std::borrow::Cow<'a, str>> + 'a {
    form.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The `n` and `last` pagination parameters. `n` is capped at `max`;
/// missing, it is `default`.
pub fn pagination(
    uri: &axum::http::Uri,
    default: usize,
    max: usize,
) -> Result<(usize, Option<String>), RegistryError> {
    let n = match query(uri, "n") {
        None => default,
        Some(v) if v.is_empty() => default,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| RegistryError::SizeInvalid(format!("n must be a number, not {v:?}")))?
            .min(max),
    };
    let last = query(uri, "last")
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty());
    Ok((n, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let uri: axum::http::Uri = "/x?a=1&mount=sha256%3Aab&from=a%2Fb&n=&flag"
            .parse()
            .unwrap();
        assert_eq!(query(&uri, "mount").unwrap(), "sha256:ab");
        assert_eq!(query(&uri, "from").unwrap(), "a/b");
        assert_eq!(query(&uri, "flag").unwrap(), "");
        assert!(query(&uri, "missing").is_none());
        let odd: axum::http::Uri = "/x?a=%&b=%4".parse().unwrap();
        assert_eq!(query(&odd, "a").unwrap(), "%");
        assert_eq!(query(&odd, "b").unwrap(), "%4");
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
