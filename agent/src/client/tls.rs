//! How a client trusts the orchestrator: HTTPS verified against a configured CA bundle (or the
//! bundled web PKI roots), and plain HTTP only to a loopback address and only when allowed.
//! The agent and the `basho` CLI share these rules.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use reqwest::tls::Version;

/// What a client accepts from the orchestrator's endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// PEM bundle the orchestrator's certificate must chain to; the bundled web PKI roots when
    /// absent.
    pub ca_file: Option<PathBuf>,
    /// Allows `http://` URLs, and only to loopback hosts.
    pub plain_http_on_loopback: bool,
}

impl TlsPolicy {
    /// Plain HTTP to loopback allowed, HTTPS with the bundled roots (tests, `basho dev`).
    pub fn plain_loopback() -> Self {
        Self {
            ca_file: None,
            plain_http_on_loopback: true,
        }
    }

    /// Checks `url` against the policy: `https://` always; `http://` only when
    /// `plain_http_on_loopback` is set and the host is loopback. The reason says what to change.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if !self.plain_http_on_loopback => Err(
                "plain http:// is refused; use https://, or set plain_http_on_loopback = true \
                 for an orchestrator on this machine (development only)"
                    .into(),
            ),
            "http" if !is_loopback(url) => Err(format!(
                "plain http:// is allowed only to a loopback host (localhost, 127.0.0.1, ::1), \
                 not {}; use https://",
                url.host_str().unwrap_or("")
            )),
            "http" => Ok(()),
            other => Err(format!("scheme {other}:// is not http(s); use https://")),
        }
    }

    /// Applies the policy to a client builder: TLS 1.2 or later, only the CA bundle's roots
    /// when one is configured, and no downgrade to plain HTTP (redirects included) for an
    /// `https://` orchestrator.
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
        url: &Url,
    ) -> Result<reqwest::ClientBuilder, String> {
        self.check_url(url)?;
        let mut builder = builder.min_tls_version(Version::TLS_1_2);
        if url.scheme() == "https" {
            builder = builder.https_only(true);
        }
        if let Some(path) = &self.ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for cert in load_ca_bundle(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }
}

/// The certificates of a PEM bundle; an unreadable file or one without a certificate is an
/// error naming the file.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        format!("CA file {shown}: {e}; point ca_file at the PEM bundle that signed the orchestrator's certificate")
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA file {shown}: not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {shown}: no PEM certificate in it; point ca_file at the CA's certificate"
        ));
    }
    Ok(certs)
}

/// `localhost` or an address in 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        let strict = TlsPolicy::default();
        let dev = TlsPolicy::plain_loopback();
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://[::1]:9",
        ] {
            assert!(dev.check_url(&url(ok)).is_ok(), "{ok}");
            assert!(strict.check_url(&url(ok)).is_err(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://basho.example.org",
            "http://localhost.example.org",
            "http://0.0.0.0:8080",
            "http://[::]:1",
        ] {
            let e = dev.check_url(&url(bad)).unwrap_err();
            assert!(e.contains("only to a loopback host"), "{bad}: {e}");
        }
        assert!(strict.check_url(&url("https://basho.example.org")).is_ok());
        assert!(dev.check_url(&url("ftp://127.0.0.1")).is_err());
    }

    #[test]
    fn ca_bundles_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            load_ca_bundle(&missing)
                .unwrap_err()
                .contains("missing.pem")
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(
            load_ca_bundle(&empty)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        let policy = TlsPolicy {
            ca_file: Some(empty),
            plain_http_on_loopback: false,
        };
        assert!(
            policy
                .apply(reqwest::Client::builder(), &url("https://o.example"))
                .is_err()
        );
    }
}
