//! End-to-end tests against a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok) and a real Prometheus, started by tests/e2e/cluster.sh.

mod admission;
mod all_namespaces;
mod experiment;
mod harness;
mod helm;
mod leader;
mod metrics;
mod observability;
mod pipeline;
mod pipeline_edges;
mod pipeline_ref;
mod podrunner_test;
mod prometheus_access;
mod rbac;
mod realrun;
mod simulation;
mod smoke;
mod tenancy;
mod topk;
