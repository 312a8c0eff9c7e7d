//! Endpoints a tenant sets may reach the public internet only.
//!
//! A webhook makes the node send requests to an address of its setter's
//! choosing. The operator chooses freely (their own network is theirs);
//! a tenant's account must not be able to point the node at the
//! operator's network (the metadata database, the admin ports, a cloud
//! metadata service at 169.254.169.254): that would turn every node into
//! a proxy into it. So an endpoint a tenant sets is marked
//! [`crate::Target::public_only`], and:
//!
//! 1. when it is written, [`check_public_target`] resolves its host and
//!    refuses it unless every address is public ([`is_public`]);
//! 2. when an event is delivered, a host that is an IP address is checked
//!    again, and a name is resolved by [`PublicOnly`], which hands the
//!    connection only public addresses: a name that resolved to a public
//!    address when it was written and to a private one later (DNS
//!    rebinding) finds no address to connect to;
//! 3. redirects are never followed (the notifier's client follows none),
//!    so a public receiver cannot bounce the request inward.
//!
//! Owns: the definition of a public address, the write-time check and the
//! delivery-time resolver. Must never: let a `public_only` delivery
//! connect to an address [`is_public`] refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Whether `ip` is an address of the public internet: not unspecified,
/// loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
/// (100.64/10), link-local (169.254/16, fe80::/10), multicast, broadcast,
/// reserved (0/8, 240/4), documentation or benchmarking ranges, nor an
/// IPv6 form (mapped, compatible, NAT64, 6to4, Teredo) of an IPv4 address
/// that is not public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, and documentation (TEST-NET-1..3).
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        // Benchmarking.
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) are judged by that IPv4.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7) and link-local (fe80::/10).
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        // Teredo (2001::/32), documentation (2001:db8::/32), discard (100::/64).
        || (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8))
        || (s[0] == 0x100 && s[1..4] == [0; 3]))
}

/// Refuses `url` unless its host is a public address or a name whose every
/// address is public (resolved now). For an endpoint a tenant sets.
pub async fn check_public_target(url: &Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let refused = |what: String| {
        Err(format!(
            "a tenant's notification endpoint must be on the public internet: {what} \
             (ask the operator to set an endpoint on a private network)"
        ))
    };
    if let Some(ip) = literal_ip(url) {
        return if is_public(ip) {
            Ok(())
        } else {
            refused(format!("{ip} is not a public address"))
        };
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => return refused(format!("{host} does not resolve ({e})")),
    };
    if addrs.is_empty() {
        return refused(format!("{host} resolves to no address"));
    }
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => refused(format!(
            "{host} resolves to {}, not a public address",
            a.ip()
        )),
        None => Ok(()),
    }
}

/// The host of `url` when it is an IP address.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// A resolver that hands out only public addresses, for the deliveries of
/// `public_only` endpoints.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no public address").into();
                return Err(e);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_and_not() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
        for not in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:0001::1",
            "2002:c0a8:0101::1",
        ] {
            assert!(!is_public(ip(not)), "{not}");
        }
    }

    #[tokio::test]
    async fn the_write_time_check_resolves_names_and_judges_literals() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(check_public_target(&u("http://93.184.216.34/hook"))
            .await
            .is_ok());
        for refused in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3:5001/admin/v1/tenants",
            "http://localhost:5001/hook",
        ] {
            let e = check_public_target(&u(refused)).await.unwrap_err();
            assert!(e.contains("public internet"), "{refused}: {e}");
        }
        let e = check_public_target(&u("http://localhost:5001/"))
            .await
            .unwrap_err();
        assert!(e.contains("localhost resolves to"), "{e}");
        let e = check_public_target(&u("http://no-such-host.invalid/"))
            .await
            .unwrap_err();
        assert!(e.contains("does not resolve"), "{e}");
    }

    #[tokio::test]
    async fn the_delivery_resolver_gives_no_private_address() {
        let r = PublicOnly;
        let e = match r.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("no public address"), "{e}");
    }
}
