// The peer of `just bench`: the OpenTelemetry Operator, built from the Go module proxy by
// scripts/bench.sh (GOTOOLCHAIN=local; go.sum pins every module's hash).
module phoenix.bench/peer

go 1.23.0

require github.com/open-telemetry/opentelemetry-operator v0.120.0
