//! HTTP/1.1 Upgrade (WebSocket and any other protocol): the request's `Connection: upgrade` and
//! `Upgrade` headers survive hop-by-hop stripping, the upstream's `101 Switching Protocols` goes
//! back to the client, and then the two connections are joined byte for byte until either side
//! closes.

use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use http::{Extensions, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, debug};

static CONNECTION_UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// The `Upgrade` value of an HTTP/1.1 request that asks to switch protocols (`Connection` lists
/// `upgrade`), or `None`.
pub fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if !asks {
        return None;
    }
    headers.get(UPGRADE).cloned()
}

/// Puts `Connection: upgrade` and `Upgrade: <protocol>` back after hop-by-hop stripping.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, CONNECTION_UPGRADE.clone());
    headers.insert(UPGRADE, protocol);
}

/// Takes the client side's pending upgrade out of the request's extensions.
pub fn take(extensions: &mut Extensions) -> Option<OnUpgrade> {
    extensions.remove::<OnUpgrade>()
}

/// Joins the two upgraded connections in the background once both sides have switched.
pub fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(
        async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(error) => {
                    debug!(%error, "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
                Err(error) => debug!(%error, "upgraded connection ended with an error"),
            }
        }
        .instrument(tracing::debug_span!("upgraded")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_http11_requests_that_list_upgrade_in_connection_ask() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            requested(Version::HTTP_11, &ws),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(requested(Version::HTTP_10, &ws), None);
        assert_eq!(requested(Version::HTTP_2, &ws), None);
        let no_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert_eq!(requested(Version::HTTP_11, &no_token), None);
        let no_upgrade = headers(&[("connection", "upgrade")]);
        assert_eq!(requested(Version::HTTP_11, &no_upgrade), None);
    }

    #[test]
    fn restore_puts_both_headers_back() {
        let mut h = HeaderMap::new();
        restore(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[UPGRADE], "websocket");
    }
}
