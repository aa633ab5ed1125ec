//! phoenix-operator: settings, telemetry, the three controllers and the HTTP endpoint, leader
//! election on a Lease, and a graceful shutdown on SIGTERM/SIGINT that finishes in-flight
//! reconciles and hands the Lease over.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Parser;
use kube::client::ClientBuilder;
use kube_lease_manager::LeaseManagerBuilder;
use phoenix::controller::{self, Context};
use phoenix::settings::Settings;
use phoenix::telemetry::{self, Metrics, Readiness};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::parse();
    // Flushes queued spans when main returns.
    let _traces = telemetry::init_logging(&settings)?;
    // Every apiserver request is timed into phoenix_kube_request_duration_seconds.
    let client = ClientBuilder::try_from(kube::Config::infer().await?)?
        .with_layer(&telemetry::outbound::KubeMetricsLayer::default())
        .build();
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
    let manager = LeaseManagerBuilder::new(client, &settings.lease_name)
        .with_namespace(&lease_ns)
        .with_identity(&identity)
        .with_duration(settings.lease_duration_seconds)
        .with_grace((settings.lease_duration_seconds / 3).max(1))
        .with_field_manager("phoenix-operator-lease")
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %format!("{lease_ns}/{}", settings.lease_name), "waiting for leadership");
    let mut waiting = shutdown.clone();
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return Err("lease manager stopped".into()) },
            _ = waiting.changed() => { drop(leading); let _ = lease_task.await; return Ok(()); }
        }
    }
    tracing::info!(%identity, "acquired leadership: starting controllers");
    readiness.leading.store(true, Ordering::Relaxed);

    // Stop the controllers on shutdown or when the Lease is lost.
    let (stop_tx, stop) = watch::channel(false);
    let mut lost = leading.clone();
    let mut on_shutdown = shutdown.clone();
    let watchdog = tokio::spawn(async move {
        let lost_lease = tokio::select! {
            _ = on_shutdown.changed() => false,
            _ = async { while lost.changed().await.is_ok() { if !*lost.borrow() { return; } } } => true,
        };
        let _ = stop_tx.send(true);
        lost_lease
    });
    controller::run_all(ctx, &namespaces, stop).await;
    let lost_lease = watchdog.await.unwrap_or(false);
    readiness.leading.store(false, Ordering::Relaxed);
    // Dropping the receiver makes the lease task release the Lease: a clean hand-over.
    drop(leading);
    let _ = lease_task.await;
    if lost_lease {
        tracing::error!("lost the Lease: exiting so a fresh process can compete again");
        std::process::exit(1);
    }
    tracing::info!("stopped and released the Lease");
    Ok(())
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
