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
    {{- if $v.meshTier.enabled }}
    # everything received also goes to the OpenTelemetry Collector in front of the
    # mesh tier, whose load_balancing exporter routes it by trace id to the shard
    # that owns the cascade
    - --forward
    - {{ include "a2a-quiescence.forwardTarget" $c | quote }}
    # every address of the shards' headless Service: only to notice membership
    # changes (then, after --ring-settle, the agents resend what they hold)
    - --shards
    - {{ printf "dns+http://%s.%s.svc.%s:%d" (include "a2a-quiescence.tierHeadlessName" $c) $root.Release.Namespace $v.meshTier.clusterDomain (int $v.ports.http) | quote }}
    - --ring-port
    - {{ $v.ports.otlpGrpc | quote }}
    - --ring-refresh
    - {{ $v.meshTier.ringRefresh | quote }}
    - --ring-settle
    - {{ $v.meshTier.ringSettle | quote }}
    {{- else }}
    # everything received also goes to the mesh collector, which decides settlement
    - --forward
    - {{ include "a2a-quiescence.forwardTarget" $c | quote }}
    {{- end }}
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

{{/*
The mesh tier (meshTier.enabled): shards in a StatefulSet behind a headless
Service, fed by an OpenTelemetry Collector's load_balancing exporter.
*/}}
{{/* StatefulSet name; 52 characters at most (the controller-revision-hash label adds 11). */}}
{{- define "a2a-quiescence.tierName" -}}
{{- printf "%s-shard" (include "a2a-quiescence.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service: the pods' DNS subdomain and what the exporter's k8s resolver watches. */}}
{{- define "a2a-quiescence.tierHeadlessName" -}}
{{- printf "%s-shards" (include "a2a-quiescence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "a2a-quiescence.tierSelectorLabels" -}}
{{ include "a2a-quiescence.selectorLabels" . }}
app.kubernetes.io/component: mesh-tier
{{- end -}}

{{- define "a2a-quiescence.tierServiceAccountName" -}}
{{- $sa := .v.meshTier.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "a2a-quiescence.tierName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/*
The ring endpoint of shard $i exactly as the exporter's k8s resolver names it
with return_hostnames: true and ports: [otlpGrpc]:
<pod-hostname>.<service>.<namespace>:<port> (no .svc.cluster.local).
Takes (dict "root" . "v" .Values "i" N).
*/}}
{{- define "a2a-quiescence.tierEndpoint" -}}
{{- printf "%s-%d.%s.%s:%d" (include "a2a-quiescence.tierName" .) (int .i) (include "a2a-quiescence.tierHeadlessName" .) .root.Release.Namespace (int .v.ports.otlpGrpc) -}}
{{- end -}}

{{/*
The shard set, one `ENDPOINT=URL` line per ordinal 0..replicas-1: the ring
endpoint the exporter hashes, and the shard's HTTP API by its fully qualified
pod DNS name (no reliance on the pod's DNS search path).
*/}}
{{- define "a2a-quiescence.tierShardList" -}}
{{- $c := . -}}
{{- range $i := until (int $c.v.meshTier.replicas) -}}
{{- $ctx := dict "root" $c.root "v" $c.v "i" $i }}
{{- $host := printf "%s-%d.%s.%s.svc.%s" (include "a2a-quiescence.tierName" $c) $i (include "a2a-quiescence.tierHeadlessName" $c) $c.root.Release.Namespace $c.v.meshTier.clusterDomain }}
{{ include "a2a-quiescence.tierEndpoint" $ctx }}=http://{{ $host }}:{{ int $c.v.ports.http }}
{{- end -}}
{{- end -}}

{{/* The OpenTelemetry Collector in front of the tier (gateway Deployment or pod sidecar). */}}
{{- define "a2a-quiescence.gatewayName" -}}
{{- printf "%s-lb" (include "a2a-quiescence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "a2a-quiescence.gatewaySelectorLabels" -}}
{{ include "a2a-quiescence.selectorLabels" . }}
app.kubernetes.io/component: otel-gateway
{{- end -}}

{{- define "a2a-quiescence.gatewayServiceAccountName" -}}
{{- $o := .v.meshTier.otelCollector -}}
{{- if eq $o.mode "sidecar" -}}
{{- required "meshTier.otelCollector.sidecar.serviceAccountName: the ServiceAccount of the agent pods that carry the OpenTelemetry Collector sidecar (the k8s resolver's Role is bound to it)" $o.sidecar.serviceAccountName -}}
{{- else if $o.gateway.serviceAccount.create -}}
{{- default (include "a2a-quiescence.gatewayName" .) $o.gateway.serviceAccount.name -}}
{{- else -}}
{{- default "default" $o.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "a2a-quiescence.otelImage" -}}
{{- $img := .v.meshTier.otelCollector.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}
{{- end -}}

{{/* OTLP ports the OpenTelemetry Collector listens on: the gateway's or the sidecar's. */}}
{{- define "a2a-quiescence.otelPorts" -}}
{{- $o := .v.meshTier.otelCollector -}}
{{- toYaml (ternary $o.sidecar.ports $o.gateway.ports (eq $o.mode "sidecar")) -}}
{{- end -}}

{{/*
Where a pod sidecar forwards everything it receives: the mesh collector, or,
with the mesh tier on, the OpenTelemetry Collector in front of it (OTLP/HTTP).
*/}}
{{- define "a2a-quiescence.forwardTarget" -}}
{{- $v := .v -}}
{{- if $v.meshTier.enabled -}}
{{- $ports := include "a2a-quiescence.otelPorts" . | fromYaml -}}
{{- if eq $v.meshTier.otelCollector.mode "sidecar" -}}
{{- printf "http://127.0.0.1:%d" (int $ports.otlpHttp) -}}
{{- else -}}
{{- printf "http://%s:%d" (include "a2a-quiescence.gatewayName" .) (int $ports.otlpHttp) -}}
{{- end -}}
{{- else -}}
{{- printf "http://%s:%d" (include "a2a-quiescence.meshCollectorName" .) (int $v.ports.otlpHttp) -}}
{{- end -}}
{{- end -}}

{{/*
The OpenTelemetry Collector's configuration: OTLP in, the load_balancing
exporter out to the shards, routed by trace id. Written for the pinned
otel/opentelemetry-collector-contrib version (meshTier.otelCollector.image.tag);
meshTier.otelCollector.config is merged over it.
*/}}
{{- define "a2a-quiescence.otelConfig" -}}
{{- $v := .v -}}
{{- $o := $v.meshTier.otelCollector -}}
{{- $ports := include "a2a-quiescence.otelPorts" . | fromYaml -}}
{{- $listen := ternary "127.0.0.1" "0.0.0.0" (eq $o.mode "sidecar") -}}
{{- $grpc := dict "endpoint" (printf "%s:%d" $listen (int $ports.otlpGrpc)) -}}
{{- $http := dict "endpoint" (printf "%s:%d" $listen (int $ports.otlpHttp)) -}}
{{- $extensions := list "health_check" -}}
{{- $ext := dict "health_check" (dict "endpoint" (printf "0.0.0.0:%d" (int $o.healthCheckPort))) -}}
{{- $otlp := dict "timeout" $o.exporter.timeout "tls" $o.exporter.tls -}}
{{- if $v.auth.enabled -}}
{{- /* the pod sidecars send the token; the shards require it on OTLP ingest */}}
{{- $_ := set $ext "bearertokenauth" (dict "token" "${env:A2A_QUIESCENCE_TOKEN}") -}}
{{- $extensions = append $extensions "bearertokenauth" -}}
{{- $_ := set $grpc "auth" (dict "authenticator" "bearertokenauth") -}}
{{- $_ := set $http "auth" (dict "authenticator" "bearertokenauth") -}}
{{- $_ := set $otlp "headers" (dict "authorization" "Bearer ${env:A2A_QUIESCENCE_TOKEN}") -}}
{{- end -}}
{{- $lb := dict
  "routing_key" "traceID"
  "protocol" (dict "otlp" $otlp)
  "resolver" (dict "k8s" (dict
    "service" (printf "%s.%s" (include "a2a-quiescence.tierHeadlessName" .) .root.Release.Namespace)
    "ports" (list (int $v.ports.otlpGrpc))
    "return_hostnames" true
    "timeout" $o.exporter.resolverTimeout)) -}}
{{- $config := dict
  "extensions" $ext
  "receivers" (dict "otlp" (dict "protocols" (dict "grpc" $grpc "http" $http)))
  "processors" (dict "memory_limiter" (dict "check_interval" "1s" "limit_percentage" 80 "spike_limit_percentage" 25))
  "exporters" (dict "load_balancing" $lb "nop" dict)
  "service" (dict
    "extensions" $extensions
    "pipelines" (dict
      "logs" (dict "receivers" (list "otlp") "processors" (list "memory_limiter") "exporters" (list "load_balancing"))
      "traces" (dict "receivers" (list "otlp") "processors" (list "memory_limiter") "exporters" (list "nop"))
      "metrics" (dict "receivers" (list "otlp") "processors" (list "memory_limiter") "exporters" (list "nop")))) -}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $o.config)) -}}
{{- end -}}

{{/*
A projected service account token for the OpenTelemetry Collector container
only (its k8s resolver lists and watches EndpointSlices): pods keep
automountServiceAccountToken: false, so no other container gets the token.
*/}}
{{- define "a2a-quiescence.kubeApiVolume" -}}
- name: otel-kube-api-access
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}

{{/* The OpenTelemetry Collector container (gateway and sidecar alike). */}}
{{- define "a2a-quiescence.otelContainer" -}}
{{- $c := . -}}
{{- $v := .v -}}
{{- $o := $v.meshTier.otelCollector -}}
{{- $ports := include "a2a-quiescence.otelPorts" . | fromYaml -}}
- name: {{ $o.containerName }}
  image: {{ include "a2a-quiescence.otelImage" $c | quote }}
  imagePullPolicy: {{ $o.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  args:
    - --config=/conf/config.yaml
  ports:
    - name: lb-otlp-grpc
      containerPort: {{ $ports.otlpGrpc }}
      protocol: TCP
    - name: lb-otlp-http
      containerPort: {{ $ports.otlpHttp }}
      protocol: TCP
    - name: lb-health
      containerPort: {{ $o.healthCheckPort }}
      protocol: TCP
  {{- if or $v.auth.enabled $o.extraEnv }}
  env:
    {{- include "a2a-quiescence.tokenEnv" $c | nindent 4 }}
    {{- with $o.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /
      port: lb-health
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 6
  readinessProbe:
    httpGet:
      path: /
      port: lb-health
    periodSeconds: 5
    timeoutSeconds: 2
  resources:
    {{- toYaml $o.resources | nindent 4 }}
  securityContext:
    {{- toYaml $o.securityContext | nindent 4 }}
  volumeMounts:
    - name: otel-config
      mountPath: /conf
      readOnly: true
    - name: otel-kube-api-access
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
{{- end -}}

{{/*
The OpenTelemetry Collector as a container of an agent pod
(meshTier.otelCollector.mode: sidecar), beside the a2a-quiescence.sidecar:

  initContainers:
    {{- include "a2a-quiescence.sidecar" (dict "root" . "agent" "my-agent") | nindent 8 }}
    {{- include "a2a-quiescence.otelSidecar" (dict "root" .) | nindent 8 }}
  volumes:
    {{- include "a2a-quiescence.otelSidecarVolumes" (dict "root" .) | nindent 8 }}

The pod's serviceAccountName must be meshTier.otelCollector.sidecar.serviceAccountName.
*/}}
{{- define "a2a-quiescence.otelSidecar" -}}
{{- $root := .root | default . -}}
{{- $v := include "a2a-quiescence.values" . | fromYaml -}}
{{- $c := dict "root" $root "v" $v "native" $v.sidecar.native -}}
{{- if not (and $v.meshTier.enabled (eq $v.meshTier.otelCollector.mode "sidecar")) -}}
{{- fail "a2a-quiescence.otelSidecar: needs meshTier.enabled=true and meshTier.otelCollector.mode=sidecar" -}}
{{- end -}}
{{- include "a2a-quiescence.otelContainer" $c -}}
{{- end -}}

{{- define "a2a-quiescence.otelSidecarVolumes" -}}
{{- $root := .root | default . -}}
{{- $v := include "a2a-quiescence.values" . | fromYaml -}}
{{- $c := dict "root" $root "v" $v -}}
- name: otel-config
  configMap:
    name: {{ printf "%s-config" (include "a2a-quiescence.gatewayName" $c) | trunc 63 | trimSuffix "-" }}
{{ include "a2a-quiescence.kubeApiVolume" $c }}
{{- end -}}

{{/*
The series only the collectors that decide settlement report truly (a regex
over __name__): cascade gauges and counters, mesh settled, detection latency,
edges. Kept in step with a2a_quiescence.names by tests/test_helm.py.
*/}}
{{- define "a2a-quiescence.settlementSeries" -}}
a2a_cascades_.*|a2a_mesh_settled|a2a_settlement_detection_latency_seconds_.*|a2a_edge_messages_total
{{- end -}}
