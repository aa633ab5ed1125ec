//! The connection to the cluster from kubectl's flags: `--kubeconfig` (or `KUBECONFIG`, which may
//! list several files), `--context`, and the namespace (`-n`, else the context's, else
//! `default`).

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use super::{CliError, GlobalArgs};

/// A client and the namespace the command works in.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
}

/// Connects as kubectl would with the same flags.
pub async fn connect(global: &GlobalArgs) -> Result<Connection, CliError> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &global.kubeconfig {
        Some(paths) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in std::env::split_paths(paths).filter(|p| !p.as_os_str().is_empty()) {
                let file = Kubeconfig::read_from(&path).map_err(|e| {
                    CliError::Connection(format!("kubeconfig {}: {e}", path.display()))
                })?;
                merged = Some(match merged {
                    Some(m) => m
                        .merge(file)
                        .map_err(|e| CliError::Connection(format!("kubeconfig: {e}")))?,
                    None => file,
                });
            }
            let kubeconfig =
                merged.ok_or_else(|| CliError::Connection("--kubeconfig names no file".into()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    };
    let config = match config {
        Ok(c) => c,
        Err(kubeconfig_error) if global.kubeconfig.is_none() && global.context.is_none() => {
            Config::incluster().map_err(|e| {
                CliError::Connection(format!(
                    "no kubeconfig ({kubeconfig_error}) and not in a cluster ({e})"
                ))
            })?
        }
        Err(e) => return Err(CliError::Connection(format!("kubeconfig: {e}"))),
    };
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client =
        Client::try_from(config).map_err(|e| CliError::Connection(format!("client: {e}")))?;
    Ok(Connection { client, namespace })
}

/// A kube error as the CLI reports it: not found and forbidden say so, anything else is a
/// connection problem.
pub fn api_error(what: &str, e: kube::Error) -> CliError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => CliError::Usage(format!("{what} not found")),
        _ => CliError::Connection(format!("{what}: {e}")),
    }
}
