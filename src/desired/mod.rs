//! The desired state: pure functions from a Phoenix resource to the objects Phoenix wants to exist
//! (collector configs, ConfigMaps, workloads, Jobs, an Experiment's children). Nothing here talks to
//! the apiserver.

pub mod children;
pub mod collector_config;
pub mod collector_uid;
pub mod job;
pub mod labels;
pub mod workload;
