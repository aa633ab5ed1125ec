//go:build tools

// Package peer only pins the OpenTelemetry Operator's main package for scripts/bench.sh, which
// builds it with `go build github.com/open-telemetry/opentelemetry-operator`.
package peer

import _ "github.com/open-telemetry/opentelemetry-operator"
