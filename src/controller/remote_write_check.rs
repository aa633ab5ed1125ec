//! Whether the collectors' remote-write endpoint takes their credentials: the operator sends it
//! an empty remote-write request (no series) with the same credentials the collectors use, so a
//! wrong password, an unknown CA or a tenant the gateway refuses becomes the Pipeline condition
//! `RemoteWriteReachable=False` with a reason naming it (`RemoteWriteUnauthorized`,
//! `RemoteWriteTLSError`, …) instead of an Experiment that silently has no data. The credentials'
//! values come from the same Secret the pods read; they live only in memory here and never reach
//! a log, a status or an Event.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::analysis::access::{self, AccessError};
use crate::analysis::remote_write::{self, RemoteWriteError};
use crate::crd::conditions::{self, Condition, ConditionStatus};
use crate::crd::pipeline::PipelineStatus;
use crate::desired::collector_config::remote_write::{
    BEARER_TOKEN_KEY, CA_KEY, CLIENT_CERT_KEY, CLIENT_KEY_KEY, HEADER_PREFIX, PASSWORD_KEY,
    RemoteWriteAuth, USERNAME_KEY,
};

/// The Pipeline condition this check sets.
pub const CONDITION: &str = "RemoteWriteReachable";
/// How long the check may take (it runs inside a reconcile).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The values of the collectors' remote-write credentials, as HTTP client settings.
#[derive(Default)]
pub struct Credentials {
    headers: HeaderMap,
    ca: Option<Vec<u8>>,
    identity: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

fn value(v: &[u8], what: &str) -> Result<HeaderValue, AccessError> {
    let mut v = HeaderValue::from_bytes(v.trim_ascii())
        .map_err(|_| AccessError::Settings(format!("{what} is not a valid header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The credentials `auth` describes, with their values from `secret` (the Secret `auth` names).
/// Pure.
pub fn credentials(
    auth: &RemoteWriteAuth,
    secret: Option<&Secret>,
) -> Result<Credentials, AccessError> {
    let mut c = Credentials::default();
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| AccessError::Settings(format!("{name:?} is not a header name")))
    };
    for (name, v) in &auth.headers {
        c.headers
            .insert(header(name)?, value(v.as_bytes(), "a header")?);
    }
    let data = secret.and_then(|s| s.data.as_ref());
    let get = |key: &str| data.and_then(|d| d.get(key)).map(|v| v.0.as_slice());
    if let Some(token) = get(BEARER_TOKEN_KEY) {
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(token.trim_ascii());
        c.headers
            .insert(AUTHORIZATION, value(&bearer, "the bearer token")?);
    }
    if let (Some(user), Some(password)) = (get(USERNAME_KEY), get(PASSWORD_KEY)) {
        use base64::Engine as _;
        let mut pair = user.to_vec();
        pair.push(b':');
        pair.extend_from_slice(password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        c.headers.insert(
            AUTHORIZATION,
            value(format!("Basic {encoded}").as_bytes(), "basic auth")?,
        );
    }
    for (key, v) in data.into_iter().flatten() {
        if let Some(name) = key.strip_prefix(HEADER_PREFIX) {
            c.headers.insert(header(name)?, value(&v.0, "a header")?);
        }
    }
    c.ca = get(CA_KEY).map(<[u8]>::to_vec);
    if let (Some(cert), Some(key)) = (get(CLIENT_CERT_KEY), get(CLIENT_KEY_KEY)) {
        let mut pem = cert.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(key);
        c.identity = Some(pem);
    }
    Ok(c)
}

/// An HTTP client trusting `c`'s CA (besides the system's) and presenting its client certificate.
/// The credentials' headers go on each request instead, so one client serves every probe without
/// TLS material.
fn client(c: &Credentials) -> Result<reqwest::Client, AccessError> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT);
    if let Some(pem) = &c.ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| AccessError::Settings(format!("{CA_KEY}: {e}")))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = &c.identity {
        let identity = reqwest::Identity::from_pem(pem).map_err(|e| {
            AccessError::Settings(format!("{CLIENT_CERT_KEY}/{CLIENT_KEY_KEY}: {e}"))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| AccessError::Settings(format!("HTTP client: {e}")))
}

/// The HTTP client of the probes whose credentials carry no CA and no client certificate (most
/// Pipelines'), shared by them. Building a client loads and decodes the system's CA certificates,
/// which every new Pipeline's first reconcile paid in CPU; a shared one also keeps its connections
/// to the endpoint open. It holds no credential: the headers go on each request.
pub type SharedProbeClient = access::Rebuilt<reqwest::Client>;

/// Sends an empty remote-write request to `url` with `credentials`, over `shared` unless they
/// carry TLS material (then over a client of their own).
pub async fn probe(
    url: &str,
    credentials: &Credentials,
    shared: &SharedProbeClient,
) -> Result<(), AccessError> {
    let client = if credentials.ca.is_none() && credentials.identity.is_none() {
        shared.get(
            std::time::Instant::now(),
            || client(&Credentials::default()),
        )?
    } else {
        client(credentials)?
    };
    match remote_write::push_with(&client, url, &credentials.headers, &[]).await {
        Ok(()) => Ok(()),
        Err(RemoteWriteError::Http { source, .. }) => Err(access::classify_reqwest(&source)),
        Err(RemoteWriteError::Rejected { status, .. }) if matches!(status, 401 | 403) => {
            Err(AccessError::Unauthorized { status })
        }
        Err(e) => Err(AccessError::Other(e.to_string())),
    }
}

/// The condition reason of a failed check: `RemoteWriteUnauthorized`, `RemoteWriteTLSError`,
/// `RemoteWriteTimeout`, `RemoteWriteUnreachable`, `RemoteWriteSettingsInvalid`, `RemoteWriteError`.
pub fn reason(error: &AccessError) -> String {
    format!(
        "RemoteWrite{}",
        error.reason().trim_start_matches("Prometheus")
    )
}

/// Whether a failed check waits on a person (credentials, certificates), not on time.
pub fn needs_a_fix(reason: &str) -> bool {
    matches!(
        reason,
        "RemoteWriteUnauthorized" | "RemoteWriteTLSError" | "RemoteWriteSettingsInvalid"
    )
}

/// Records the check's outcome as the [`CONDITION`] of `status`.
pub fn record(
    status: &mut PipelineStatus,
    url: &str,
    outcome: &Result<(), AccessError>,
    generation: Option<i64>,
) {
    let (state, reason, message) = match outcome {
        Ok(()) => (
            ConditionStatus::True,
            "Accepted".to_string(),
            format!("{url} accepts the collectors' remote writes"),
        ),
        Err(e) => (
            ConditionStatus::False,
            reason(e),
            format!(
                "remote write to {url}: {}",
                e.to_string().replace("Prometheus", "the endpoint")
            ),
        ),
    };
    conditions::set_condition(
        &mut status.conditions,
        Condition::new(CONDITION, state, &reason, message, generation, super::now()),
    );
}

/// Whether to check again: the config changed, or the last check did not pass.
pub fn due(previous: &PipelineStatus, hash: &str) -> bool {
    previous.config_hash.as_deref() != Some(hash)
        || !conditions::is_true(&previous.conditions, CONDITION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn probes_without_tls_material_share_one_client_and_send_only_their_own_credentials() {
        use crate::analysis::access::tests::authorization_of_next_request;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let url = format!(
            "http://{}/api/v1/write",
            listener.local_addr().expect("address")
        );
        let bearer = |token: &str| {
            credentials(
                &RemoteWriteAuth::default(),
                Some(&secret(&[(BEARER_TOKEN_KEY, token)])),
            )
            .expect("valid")
        };
        let shared = SharedProbeClient::default();
        for (credentials, sent) in [
            (bearer("team-a"), "Bearer team-a"),
            (bearer("team-b"), "Bearer team-b"),
            (Credentials::default(), ""),
        ] {
            let (outcome, seen) = tokio::join!(
                probe(&url, &credentials, &shared),
                authorization_of_next_request(&listener)
            );
            outcome.expect("accepted");
            assert_eq!(
                seen, sent,
                "each probe carries its own credentials, no other's"
            );
        }
        assert!(
            shared
                .get(std::time::Instant::now(), || Err::<reqwest::Client, ()>(()))
                .is_ok(),
            "the first probe built the shared client; the others reused it"
        );
    }

    #[test]
    fn credentials_are_the_collectors_and_stay_redacted() {
        let auth = RemoteWriteAuth {
            secret: Some(("rw".into(), vec![])),
            headers: vec![("X-Platform".into(), "p".into())],
        };
        let s = secret(&[
            ("username", "phoenix"),
            ("password", "pw"),
            ("header.X-Scope-OrgID", "team-a"),
        ]);
        let c = credentials(&auth, Some(&s)).expect("credentials");
        assert_eq!(c.headers[AUTHORIZATION], "Basic cGhvZW5peDpwdw==");
        assert!(c.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(c.headers["x-scope-orgid"], "team-a");
        assert_eq!(c.headers["x-platform"], "p");
        assert_eq!(format!("{c:?}"), "Credentials(redacted)");
        let bearer = credentials(&auth, Some(&secret(&[("bearer-token", "t0k\n")]))).expect("ok");
        assert_eq!(bearer.headers[AUTHORIZATION], "Bearer t0k");
    }

    #[test]
    fn reasons_name_the_remote_write_problem() {
        assert_eq!(
            reason(&AccessError::Unauthorized { status: 401 }),
            "RemoteWriteUnauthorized"
        );
        assert_eq!(
            reason(&AccessError::Tls(String::new())),
            "RemoteWriteTLSError"
        );
        assert!(needs_a_fix("RemoteWriteUnauthorized"));
        assert!(!needs_a_fix(&reason(&AccessError::Timeout)));
        let mut status = PipelineStatus::default();
        record(
            &mut status,
            "http://p/api/v1/write",
            &Err(AccessError::Unauthorized { status: 401 }),
            Some(1),
        );
        let c = conditions::find(&status.conditions, CONDITION).expect("set");
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "RemoteWriteUnauthorized")
        );
        assert!(c.message.contains("http://p/api/v1/write"), "{}", c.message);
        assert!(due(&status, "h"));
    }
}
