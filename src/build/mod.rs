//! Pure builders of everything Phoenix generates: collector configs, ConfigMaps, workloads, Jobs.
//! Nothing here talks to the apiserver.

pub mod children;
pub mod collector_config;
pub mod job;
pub mod labels;
pub mod workload;
