//! End-to-end tests against a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok) and a real Prometheus, started by tests/e2e/cluster.sh.

mod admission;
mod admission_cases;
mod all_namespaces;
mod apiserver_client;
mod cli;
mod experiment;
mod exporters;
mod failures;
mod harness;
mod helm;
mod leader;
mod metrics;
mod observability;
mod pipeline;
mod pipeline_edges;
mod pipeline_ref;
mod plan;
mod pod_security;
mod podrunner_test;
mod prometheus_access;
mod rbac;
mod realrun;
mod remote_write_auth;
mod simulation;
mod smoke;
mod tenancy;
mod topk;
mod traces;
