//! How collectors authenticate to their remote-write endpoint: which keys of a credentials Secret
//! Phoenix understands, the environment variables and mounted files their values reach the pod
//! through, and the exporter's `headers`, `auth` and `tls` that refer to them. The config holds
//! only references the operator generates (`${env:PHOENIX_RW_…}`, fixed file paths); values never
//! enter it, and the operator's own header values are escaped like user text. Pure.

use serde_json::{Map, Value, json};

use super::{ConfigError, HeaderEnv, escape, is_header_token};

/// Secret key: a bearer token, sent as `Authorization: Bearer <token>`.
pub const BEARER_TOKEN_KEY: &str = "bearer-token";
/// Secret key: the basic-auth user name (with [`PASSWORD_KEY`]).
pub const USERNAME_KEY: &str = "username";
/// Secret key: the basic-auth password (with [`USERNAME_KEY`]).
pub const PASSWORD_KEY: &str = "password";
/// Secret key prefix: `header.<Name>` is sent as header `Name` (e.g. `header.X-Scope-OrgID`).
pub const HEADER_PREFIX: &str = "header.";
/// Secret key: PEM CA of the endpoint's certificate.
pub const CA_KEY: &str = "ca.crt";
/// Secret key: PEM client certificate (with [`CLIENT_KEY_KEY`]).
pub const CLIENT_CERT_KEY: &str = "tls.crt";
/// Secret key: PEM client key (with [`CLIENT_CERT_KEY`]).
pub const CLIENT_KEY_KEY: &str = "tls.key";
/// Where the Secret's TLS files are mounted in the collector pod.
pub const MOUNT_DIR: &str = "/etc/phoenix/remote-write";
/// The basic-auth extension the exporter authenticates with.
pub const BASIC_AUTH_EXTENSION: &str = "basicauth/phoenix_remote_write";
/// What [`HeaderEnv::exporter`] says for the remote-write exporter's variables.
const EXPORTER: &str = "prometheusremotewrite";

/// How the collectors authenticate to the remote-write endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteWriteAuth {
    /// The credentials Secret (in the Pipeline's namespace) and its key names, never values.
    pub secret: Option<(String, Vec<String>)>,
    /// Headers with their values from the operator's settings (`--remote-write-header`).
    pub headers: Vec<(String, String)>,
}

/// What a [`RemoteWriteAuth`] adds to the collector config and pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteWritePlan {
    /// Fields of the `prometheusremotewrite` exporter: `headers`, `auth`, `tls`.
    pub exporter: Map<String, Value>,
    /// The basic-auth extension's id and config, when basic auth is used.
    pub extension: Option<(String, Value)>,
    /// Env vars the pod maps from the Secret, sorted by name.
    pub env: Vec<HeaderEnv>,
    /// The Secret's keys the pod mounts as files under [`MOUNT_DIR`] (TLS material).
    pub files: Vec<String>,
}

fn env(name: &str, secret: &str, key: &str) -> HeaderEnv {
    HeaderEnv {
        env: name.to_string(),
        exporter: EXPORTER.to_string(),
        secret: secret.to_string(),
        key: key.to_string(),
    }
}

fn invalid(secret: &str, problem: String) -> ConfigError {
    ConfigError::InvalidRemoteWriteSecret {
        secret: secret.to_string(),
        problem,
    }
}

/// An env var name for header `name`: `PHOENIX_RW_HDR_<NAME>`.
fn header_env_name(name: &str) -> String {
    let part: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PHOENIX_RW_HDR_{part}")
}

/// Plans the exporter's authentication: headers from the settings, then the Secret's bearer
/// token, basic auth, `header.*` keys and TLS files. Keys it does not know are an error (a
/// typo would otherwise silently send no credentials), as are half pairs and a header set twice.
pub fn plan(auth: &RemoteWriteAuth) -> Result<RemoteWritePlan, ConfigError> {
    let mut out = RemoteWritePlan::default();
    let mut headers = Map::new();
    for (name, value) in &auth.headers {
        if name.is_empty() || !name.bytes().all(is_header_token) {
            return Err(ConfigError::InvalidRemoteWriteHeader(name.clone()));
        }
        headers.insert(name.clone(), Value::String(escape::confmap(value)));
    }
    if let Some((secret, keys)) = &auth.secret {
        let has = |k: &str| keys.iter().any(|key| key == k);
        let mut set_header = |name: &str, value: String| {
            if headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
                return Err(invalid(secret, format!("header {name} is set twice")));
            }
            headers.insert(name.to_string(), Value::String(value));
            Ok(())
        };
        if has(BEARER_TOKEN_KEY) {
            let name = "PHOENIX_RW_BEARER_TOKEN";
            set_header("Authorization", format!("Bearer ${{env:{name}}}"))?;
            out.env.push(env(name, secret, BEARER_TOKEN_KEY));
        }
        for key in keys {
            let Some(header) = key.strip_prefix(HEADER_PREFIX) else {
                continue;
            };
            if header.is_empty() || !header.bytes().all(is_header_token) {
                return Err(invalid(
                    secret,
                    format!("key {key:?} names no valid header"),
                ));
            }
            let name = header_env_name(header);
            if out.env.iter().any(|e| e.env == name) {
                return Err(invalid(
                    secret,
                    format!("keys for header {header} collide on env var {name}"),
                ));
            }
            set_header(header, format!("${{env:{name}}}"))?;
            out.env.push(env(&name, secret, key));
        }
        match (has(USERNAME_KEY), has(PASSWORD_KEY)) {
            (true, true) => {
                if has(BEARER_TOKEN_KEY) {
                    return Err(invalid(
                        secret,
                        format!("holds both {BEARER_TOKEN_KEY} and basic auth"),
                    ));
                }
                out.env
                    .push(env("PHOENIX_RW_USERNAME", secret, USERNAME_KEY));
                out.env
                    .push(env("PHOENIX_RW_PASSWORD", secret, PASSWORD_KEY));
                out.extension = Some((
                    BASIC_AUTH_EXTENSION.to_string(),
                    json!({"client_auth": {
                        "username": "${env:PHOENIX_RW_USERNAME}",
                        "password": "${env:PHOENIX_RW_PASSWORD}",
                    }}),
                ));
                out.exporter.insert(
                    "auth".into(),
                    json!({"authenticator": BASIC_AUTH_EXTENSION}),
                );
            }
            (false, false) => {}
            _ => {
                return Err(invalid(
                    secret,
                    format!("basic auth needs both {USERNAME_KEY} and {PASSWORD_KEY}"),
                ));
            }
        }
        let mut tls = Map::new();
        if has(CA_KEY) {
            tls.insert("ca_file".into(), json!(format!("{MOUNT_DIR}/{CA_KEY}")));
            out.files.push(CA_KEY.to_string());
        }
        match (has(CLIENT_CERT_KEY), has(CLIENT_KEY_KEY)) {
            (true, true) => {
                for (field, key) in [("cert_file", CLIENT_CERT_KEY), ("key_file", CLIENT_KEY_KEY)] {
                    tls.insert(field.into(), json!(format!("{MOUNT_DIR}/{key}")));
                    out.files.push(key.to_string());
                }
            }
            (false, false) => {}
            _ => {
                return Err(invalid(
                    secret,
                    format!(
                        "a client certificate needs both {CLIENT_CERT_KEY} and {CLIENT_KEY_KEY}"
                    ),
                ));
            }
        }
        if !tls.is_empty() {
            out.exporter.insert("tls".into(), Value::Object(tls));
        }
        let known = |k: &String| {
            k.starts_with(HEADER_PREFIX)
                || [
                    BEARER_TOKEN_KEY,
                    USERNAME_KEY,
                    PASSWORD_KEY,
                    CA_KEY,
                    CLIENT_CERT_KEY,
                    CLIENT_KEY_KEY,
                ]
                .contains(&k.as_str())
        };
        if let Some(unknown) = keys.iter().find(|k| !known(k)) {
            return Err(invalid(
                secret,
                format!(
                    "unknown key {unknown:?} (known: {BEARER_TOKEN_KEY}, {USERNAME_KEY}, {PASSWORD_KEY}, {HEADER_PREFIX}<Name>, {CA_KEY}, {CLIENT_CERT_KEY}, {CLIENT_KEY_KEY})"
                ),
            ));
        }
    }
    if !headers.is_empty() {
        out.exporter
            .insert("headers".into(), Value::Object(headers));
    }
    out.env.sort_by(|a, b| a.env.cmp(&b.env));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(keys: &[&str]) -> RemoteWriteAuth {
        RemoteWriteAuth {
            secret: Some((
                "rw".to_string(),
                keys.iter().map(|k| k.to_string()).collect(),
            )),
            headers: vec![],
        }
    }

    #[test]
    fn no_credentials_add_nothing() {
        assert_eq!(
            plan(&RemoteWriteAuth::default()).expect("plan"),
            RemoteWritePlan::default()
        );
    }

    #[test]
    fn secret_values_are_env_references_and_files_never_values() {
        let p = plan(&secret(&[
            "username",
            "password",
            "header.X-Scope-OrgID",
            "ca.crt",
            "tls.crt",
            "tls.key",
        ]))
        .expect("plan");
        assert_eq!(
            Value::Object(p.exporter.clone()),
            json!({
                "auth": {"authenticator": BASIC_AUTH_EXTENSION},
                "headers": {"X-Scope-OrgID": "${env:PHOENIX_RW_HDR_X_SCOPE_ORGID}"},
                "tls": {
                    "ca_file": "/etc/phoenix/remote-write/ca.crt",
                    "cert_file": "/etc/phoenix/remote-write/tls.crt",
                    "key_file": "/etc/phoenix/remote-write/tls.key",
                },
            })
        );
        let (id, ext) = p.extension.expect("basic auth");
        assert_eq!(id, BASIC_AUTH_EXTENSION);
        assert_eq!(ext["client_auth"]["password"], "${env:PHOENIX_RW_PASSWORD}");
        let envs: Vec<(&str, &str, &str)> = p
            .env
            .iter()
            .map(|e| (e.env.as_str(), e.secret.as_str(), e.key.as_str()))
            .collect();
        assert_eq!(
            envs,
            [
                ("PHOENIX_RW_HDR_X_SCOPE_ORGID", "rw", "header.X-Scope-OrgID"),
                ("PHOENIX_RW_PASSWORD", "rw", "password"),
                ("PHOENIX_RW_USERNAME", "rw", "username"),
            ]
        );
        assert_eq!(p.files, ["ca.crt", "tls.crt", "tls.key"]);
    }

    #[test]
    fn a_bearer_token_is_an_authorization_header() {
        let p = plan(&secret(&["bearer-token"])).expect("plan");
        assert_eq!(
            p.exporter["headers"],
            json!({"Authorization": "Bearer ${env:PHOENIX_RW_BEARER_TOKEN}"})
        );
        assert_eq!(p.extension, None);
    }

    #[test]
    fn operator_header_values_cannot_expand() {
        let p = plan(&RemoteWriteAuth {
            secret: None,
            headers: vec![("X-Scope-OrgID".into(), "${env:HOME}".into())],
        })
        .expect("plan");
        assert_eq!(
            p.exporter["headers"],
            json!({"X-Scope-OrgID": "$${env:HOME}"})
        );
    }

    #[test]
    fn unusable_secrets_are_named() {
        for (keys, problem) in [
            (&["username"][..], "needs both username and password"),
            (&["tls.crt"][..], "needs both tls.crt and tls.key"),
            (
                &["bearer-token", "username", "password"][..],
                "both bearer-token",
            ),
            (&["token"][..], "unknown key \"token\""),
            (&["header."][..], "names no valid header"),
            (&["header.a b"][..], "names no valid header"),
            (&["bearer-token", "header.authorization"][..], "set twice"),
        ] {
            let e = plan(&secret(keys)).expect_err("refused");
            assert_eq!(e.reason(), "InvalidRemoteWriteSecret");
            assert!(e.to_string().contains(problem), "{keys:?}: {e}");
            assert!(e.to_string().contains("rw"), "{e}");
        }
        let bad_header = RemoteWriteAuth {
            secret: None,
            headers: vec![("bad header".into(), "v".into())],
        };
        assert!(plan(&bad_header).is_err());
    }
}
