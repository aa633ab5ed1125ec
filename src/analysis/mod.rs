//! Experiment analysis: Prometheus queries, statistics and the verdict.

pub mod access;
pub mod measure;
pub mod queries;
pub mod remote_write;
pub mod stats;
pub mod verdict;
