//! phoenix-operator: settings, telemetry, the three controllers and the HTTP endpoint, with a
//! graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Parser;
use kube::Client;
use phoenix::controller::{self, Context};
use phoenix::settings::Settings;
use phoenix::telemetry::{self, Metrics, Readiness};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    telemetry::init_logging(&settings);
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());

    let listener = tokio::net::TcpListener::bind(settings.http_addr).await?;
    tracing::info!(addr = %settings.http_addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(telemetry::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });

    let ctx = Arc::new(Context::new(client, settings.clone(), metrics));
    readiness.synced.store(true, Ordering::Relaxed);
    controller::run_all(ctx, &settings.namespaces(), stop_rx).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
