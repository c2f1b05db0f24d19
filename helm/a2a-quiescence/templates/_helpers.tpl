{{/*
Named templates. The public ones, meant to be included from the pod specs of
your own agents (in this chart or in a chart that depends on it), are:

  a2a-quiescence.sidecar      the collector container (one per agent pod)
  a2a-quiescence.agentEnv     env entries for the instrumented agent container
  a2a-quiescence.agentLabels  pod labels the NetworkPolicy and PodMonitor select
  a2a-quiescence.agentCommand wraps a command with opentelemetry-instrument

Each takes (dict "root" . "agent" "my-agent"). From a parent chart the values
are read from .Values.a2a-quiescence (or pass "valuesKey" for an alias).
The chart name is fixed here, not read from .Chart, so that names computed
from a parent chart's context match the ones this chart creates.
*/}}

{{- define "a2a-quiescence.values" -}}
{{- $root := .root | default . -}}
{{- if eq $root.Chart.Name "a2a-quiescence" -}}
{{- toYaml $root.Values -}}
{{- else -}}
{{- $key := .valuesKey | default "a2a-quiescence" -}}
{{- if not (hasKey $root.Values $key) -}}
{{- fail (printf "a2a-quiescence: no values under .Values.%s; add the chart as a dependency (or pass \"valuesKey\")" $key) -}}
{{- end -}}
{{- toYaml (index $root.Values $key) -}}
{{- end -}}
{{- end -}}

{{- define "a2a-quiescence.name" -}}
{{- $v := .v -}}
{{- default "a2a-quiescence" $v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "a2a-quiescence.fullname" -}}
{{- $v := .v -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "a2a-quiescence.name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "a2a-quiescence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "a2a-quiescence.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "a2a-quiescence.labels" -}}
helm.sh/chart: {{ printf "a2a-quiescence-%s" .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "a2a-quiescence.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: a2a-quiescence
{{- with .v.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "a2a-quiescence.meshCollectorName" -}}
{{- printf "%s-mesh" (include "a2a-quiescence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "a2a-quiescence.meshSelectorLabels" -}}
{{ include "a2a-quiescence.selectorLabels" . }}
app.kubernetes.io/component: mesh-collector
{{- end -}}

{{- define "a2a-quiescence.secretName" -}}
{{- if .v.auth.existingSecret -}}
{{- .v.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-token" (include "a2a-quiescence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "a2a-quiescence.serviceAccountName" -}}
{{- if .v.meshCollector.serviceAccount.create -}}
{{- default (include "a2a-quiescence.meshCollectorName" .) .v.meshCollector.serviceAccount.name -}}
{{- else -}}
{{- default "default" .v.meshCollector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "a2a-quiescence.image" -}}
{{- $img := .v.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The token env entry, shared by collectors and agents. */}}
{{- define "a2a-quiescence.tokenEnv" -}}
{{- if .v.auth.enabled -}}
- name: A2A_QUIESCENCE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "a2a-quiescence.secretName" . }}
      key: {{ .v.auth.secretKey }}
{{- end }}
{{- end -}}

{{/*
The collector container for an agent pod. OTLP listens on 127.0.0.1 only (the
agent is in the same pod); the HTTP port listens on 0.0.0.0 so that
Prometheus can scrape /metrics.
*/}}
{{- define "a2a-quiescence.sidecar" -}}
{{- $root := .root | default . -}}
{{- $v := include "a2a-quiescence.values" . | fromYaml -}}
{{- $c := dict "root" $root "v" $v -}}
{{- $s := $v.sidecar -}}
- name: {{ $s.containerName }}
  image: {{ include "a2a-quiescence.image" $c | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $s.native }}
  restartPolicy: Always
  {{- end }}
  args:
    - --otlp-listen
    - {{ printf "127.0.0.1:%d" (int $v.ports.otlpHttp) | quote }}
    - --otlp-grpc-listen
    - {{ printf "127.0.0.1:%d" (int $v.ports.otlpGrpc) | quote }}
    - --http-listen
    - {{ printf "0.0.0.0:%d" (int $v.ports.http) | quote }}
    # the HTTP port is scraped from outside the pod: an explicit opt-in
    - --allow-remote
    {{- if $s.forwardToMesh }}
    # everything received also goes to the mesh collector, which decides settlement
    - --forward
    - {{ printf "http://%s:%d" (include "a2a-quiescence.meshCollectorName" $c) (int $v.ports.otlpHttp) | quote }}
    {{- end }}
    {{- range $s.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: a2aq-metrics
      containerPort: {{ $v.ports.http }}
      protocol: TCP
  {{- if or $v.auth.enabled $s.extraEnv }}
  env:
    {{- include "a2a-quiescence.tokenEnv" $c | nindent 4 }}
    {{- if and $s.forwardToMesh $v.auth.enabled }}
    - name: A2A_QUIESCENCE_FORWARD_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "a2a-quiescence.secretName" $c }}
          key: {{ $v.auth.secretKey }}
    {{- end }}
    {{- with $s.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with $s.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    {{- toYaml $s.securityContext | nindent 4 }}
{{- end -}}

{{/*
Environment for the instrumented agent container: its hop name, where its
OTLP telemetry and lifecycle snapshots go (the sidecar on 127.0.0.1), and the
token. OTEL_PYTHON_DISABLED_INSTRUMENTATIONS is deliberately left unset.
*/}}
{{- define "a2a-quiescence.agentEnv" -}}
{{- $root := .root | default . -}}
{{- $v := include "a2a-quiescence.values" . | fromYaml -}}
{{- $c := dict "root" $root "v" $v -}}
{{- if not .agent -}}
{{- fail "a2a-quiescence.agentEnv: pass the agent's name, e.g. (dict \"root\" . \"agent\" \"my-agent\")" -}}
{{- end -}}
- name: OTEL_SERVICE_NAME
  value: {{ .agent | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://127.0.0.1:%d" (int $v.ports.otlpHttp) | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: "http/protobuf"
- name: A2A_QUIESCENCE_ENDPOINT
  value: {{ printf "http://127.0.0.1:%d/v1/logs" (int $v.ports.otlpHttp) | quote }}
{{- if $v.agentEnv.disableSdkTracing }}
- name: OTEL_INSTRUMENTATION_A2A_SDK_ENABLED
  value: "false"
{{- end }}
{{- if $v.auth.enabled }}
{{ include "a2a-quiescence.tokenEnv" $c }}
{{- if $v.auth.otlpHeader }}
{{- /* $(VAR) is expanded by the kubelet from the entry above. */}}
- name: OTEL_EXPORTER_OTLP_HEADERS
  value: "Authorization=Bearer%20$(A2A_QUIESCENCE_TOKEN)"
{{- end }}
{{- end }}
{{- with $v.agentEnv.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod labels of instrumented agents (NetworkPolicy and PodMonitor select them). */}}
{{- define "a2a-quiescence.agentLabels" -}}
a2a-quiescence/agent: "true"
{{- end -}}

{{/* (dict "command" (list "python" "agent.py")): the command under opentelemetry-instrument. */}}
{{- define "a2a-quiescence.agentCommand" -}}
{{- $cmd := .command -}}
{{- if and $cmd (ne (index $cmd 0) "opentelemetry-instrument") -}}
{{- $cmd = prepend $cmd "opentelemetry-instrument" -}}
{{- end -}}
{{- toYaml $cmd -}}
{{- end -}}
