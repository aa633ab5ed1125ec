{{/* Names and labels shared by the templates. */}}

{{- define "phoenix.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; a release called like the chart is not repeated. */}}
{{- define "phoenix.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phoenix.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; never change them (Deployment selectors are immutable). The component is
     "operator" so they never match the collectors or simulators the operator creates. */}}
{{- define "phoenix.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phoenix.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "phoenix.labels" -}}
helm.sh/chart: {{ include "phoenix.chart" . }}
{{ include "phoenix.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "phoenix.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "phoenix.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "phoenix.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The simulator image; its tag defaults to the operator's. */}}
{{- define "phoenix.simulatorImage" -}}
{{- $tag := .Values.simulatorImage.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" .Values.simulatorImage.repository $tag }}
{{- end }}

{{- define "phoenix.leaseName" -}}
{{- default (include "phoenix.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The ConfigMap recording each namespace's collector UID, in the release namespace. */}}
{{- define "phoenix.uidLedgerName" -}}
{{- printf "%s-collector-uids" (include "phoenix.fullname" .) }}
{{- end }}

{{/* Fails the render on settings that cannot work together. */}}
{{- define "phoenix.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 requires leaderElection.enabled=true: without a Lease every replica would reconcile" }}
{{- end }}
{{- if not (has .Values.logFormat (list "text" "json")) }}
{{- fail (printf "logFormat must be text or json, not %q" .Values.logFormat) }}
{{- end }}
{{- end }}

{{/* Extra Prometheus query headers as Name=value,Name=value (PHOENIX_PROMETHEUS_HEADERS). */}}
{{- define "phoenix.prometheusHeaders" -}}
{{- $pairs := list -}}
{{- range $name, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $name $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* The TCP port of a URL: its explicit port, else 443 for https and 80 otherwise. */}}
{{- define "phoenix.urlPort" -}}
{{- $u := urlParse . -}}
{{- $host := $u.host -}}
{{- if and (contains ":" $host) (not (hasSuffix "]" $host)) -}}
{{- last (splitList ":" $host) -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end }}

{{/* NetworkPolicy ports (TCP) from a list of port numbers. */}}
{{- define "phoenix.tcpPorts" -}}
{{- range (uniq .) }}
- protocol: TCP
  port: {{ int . }}
{{- end }}
{{- end }}
