//! phoenix-operator: settings, telemetry, the three controllers and the HTTP endpoint, leader
//! election on a Lease, and a graceful shutdown on SIGTERM/SIGINT that finishes in-flight
//! reconciles and hands the Lease over.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use kube::client::ClientBuilder;
use phoenix::controller::{self, Context};
use phoenix::leader::Election;
use phoenix::settings::Settings;
use phoenix::telemetry::{self, Metrics, Readiness};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    // Flushes queued spans when main returns.
    let _traces = telemetry::init_logging(&settings)?;
    // Every apiserver request is timed into phoenix_kube_request_duration_seconds; over HTTP/2
    // unless the kubeconfig names a proxy (phoenix::apiserver).
    let config = kube::Config::infer().await?;
    let metrics_layer = telemetry::outbound::KubeMetricsLayer::default();
    let client = if phoenix::apiserver::speaks_http2(&config) {
        phoenix::apiserver::http2_builder(&config)?
            .with_layer(&metrics_layer)
            .build()
    } else {
        ClientBuilder::try_from(config)?
            .with_layer(&metrics_layer)
            .build()
    };
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());

    let listener = tokio::net::TcpListener::bind(settings.http_addr).await?;
    tracing::info!(addr = %settings.http_addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(telemetry::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
    ));

    // `shutdown` turns true on SIGTERM/SIGINT.
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        let _ = shutdown_tx.send(true);
    });

    let namespaces = settings.namespaces();
    let ctx = Arc::new(Context::new(client.clone(), settings.clone(), metrics));
    let mut early_stop = shutdown.clone();
    tokio::select! {
        _ = controller::wait_for_api(&client, &namespaces) => {}
        _ = early_stop.changed() => return Ok(()),
    }
    readiness.synced.store(true, Ordering::Relaxed);
    if !settings.leader_election {
        controller::run_all(ctx, &namespaces, shutdown).await;
        tracing::info!("stopped");
        return Ok(());
    }

    // Leader election: only the holder of the Lease reconciles.
    readiness.needs_lease.store(true, Ordering::Relaxed);
    let identity = settings.identity.clone().unwrap_or_else(hostname);
    let lease_ns = settings
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let election = Election::new(
        client,
        &lease_ns,
        &settings.lease_name,
        &identity,
        Duration::from_secs(settings.lease_duration_seconds),
        Duration::from_secs(settings.lease_retry_seconds),
    );
    tracing::info!(%identity, lease = %format!("{lease_ns}/{}", settings.lease_name), "waiting for leadership");
    if !election.acquire(&mut shutdown.clone()).await {
        return Ok(());
    }
    tracing::info!(%identity, "acquired leadership: starting controllers");
    readiness.leading.store(true, Ordering::Relaxed);

    // The controllers run while the Lease is renewed. On shutdown they finish their in-flight
    // reconciles (still renewing), then the Lease is released for a standby's next try. A lost
    // Lease ends the process at once: another replica may already be reconciling.
    let (stop_tx, stop) = watch::channel(false);
    let controllers = controller::run_all(ctx, &namespaces, stop);
    tokio::pin!(controllers);
    tokio::select! {
        reason = election.hold() => lost(&reason),
        _ = &mut controllers => {}
        _ = controller::stopped(shutdown.clone()) => {
            let _ = stop_tx.send(true);
            tokio::select! {
                reason = election.hold() => lost(&reason),
                _ = &mut controllers => {}
            }
        }
    }
    readiness.leading.store(false, Ordering::Relaxed);
    election.release().await;
    tracing::info!("stopped and released the Lease");
    Ok(())
}

/// Ends the process after the Lease was lost, so a fresh process can compete again.
fn lost(reason: &str) -> ! {
    tracing::error!(%reason, "lost the Lease: exiting so a fresh process can compete again");
    std::process::exit(1);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| format!("{}-{}", h.trim(), std::process::id()))
        .unwrap_or_else(|_| format!("phoenix-{}", std::process::id()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ctrl_c.await.unwrap_or(()),
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
