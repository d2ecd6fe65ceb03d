//! The reveal rate spec (`KEYHOLD_REVEAL_RATE`), the trusted proxy list
//! (`KEYHOLD_TRUSTED_PROXIES`) and client-address resolution from
//! `X-Forwarded-For`.
//!
//! Input: UTF-8 lines: rate spec, proxy list, peer address, then one
//! `X-Forwarded-For` header value a line.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use keyhold::internals::limiter::{canonical, RevealLimiter, RevealRate, TrustedProxies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let spec = lines.next().unwrap_or("");
    if let Ok(rate) = spec.parse::<RevealRate>() {
        // What the server prints at start-up parses back to the same rate.
        assert_eq!(rate.to_string().parse::<RevealRate>(), Ok(rate));
        let limiter = RevealLimiter::new(rate);
        let d = limiter.check(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(
            d.allowed,
            "the first reveal of a fresh client is refused at {rate}"
        );
        assert_eq!(d.limit, rate.count.get());
    }
    let Ok(proxies) = lines.next().unwrap_or("").parse::<TrustedProxies>() else {
        return;
    };
    let peer = lines
        .next()
        .and_then(|p| p.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let headers: Vec<&str> = lines.collect();
    let (client, derived) = proxies.client_ip(peer, headers.iter().copied());
    if !proxies.contains(peer) {
        // An untrusted peer's header is never believed.
        assert_eq!((client, derived), (canonical(peer), false));
    }
    if !derived {
        assert_eq!(client, canonical(peer));
    }
});
