//! Peer comparison: the OpenTelemetry Operator reconciling equivalent OpenTelemetryCollector
//! resources. Not measured: see [`REASON`] (and docs/benchmarks.md).

use crate::support::Report;

/// Why the peer is not measured on this machine.
pub const REASON: &str = "PLACEHOLDER";

pub fn run(report: &mut Report) {
    report.info("peer: not measured", REASON);
}
