//! Experiment analysis: Prometheus queries, statistics and the verdict.

pub mod stats;
