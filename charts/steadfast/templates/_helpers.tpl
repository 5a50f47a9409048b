{{/*
Names, labels and the few derived values every template shares. Names are cut
at 63 characters because Kubernetes label values and DNS labels stop there.
*/}}

{{- define "steadfast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-qualified name. A release called "steadfast" is not repeated as
"steadfast-steadfast".
*/}}
{{- define "steadfast.fullname" -}}
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

{{/*
"<fullname>-<component>" cut so the whole name, suffix included, fits in 63
characters: the fullname gives way, the component suffix stays readable.
*/}}
{{- define "steadfast.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $room := int (sub 62 (len $component)) }}
{{- printf "%s-%s" (include "steadfast.fullname" $root | trunc $room | trimSuffix "-") $component }}
{{- end }}

{{- define "steadfast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource. Selector labels are a stable subset: a Deployment's
selector is immutable, so it must never include the chart version.
*/}}
{{- define "steadfast.labels" -}}
helm.sh/chart: {{ include "steadfast.chart" . }}
{{ include "steadfast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: steadfast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "steadfast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "steadfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "steadfast.operator.selectorLabels" -}}
{{ include "steadfast.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "steadfast.operator.labels" -}}
{{ include "steadfast.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "steadfast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "steadfast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: a digest pins the image and
wins over the tag; an empty tag means the chart's appVersion.
*/}}
{{- define "steadfast.image" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "steadfast.temporal.devName" -}}
{{- include "steadfast.componentName" (list . "temporal-dev") }}
{{- end }}

{{/*
The Temporal address ResearchAgents inherit: the dev server's Service when it is
enabled, otherwise what the user configured (possibly empty).
*/}}
{{- define "steadfast.temporal.address" -}}
{{- if .Values.temporal.dev.enabled }}
{{- printf "%s.%s.svc:%d" (include "steadfast.temporal.devName" .) .Release.Namespace (int .Values.temporal.dev.port) }}
{{- else }}
{{- .Values.temporal.address }}
{{- end }}
{{- end }}

{{/*
The restricted Pod Security profile, shared by every container the chart runs.
*/}}
{{- define "steadfast.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "steadfast.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Contradictory values fail the render with a message that says what to change.
The schema catches wrong types and unknown keys; these are the combinations it
cannot express.
*/}}
{{- define "steadfast.validate" -}}
{{- if and (eq .Values.watch.scope "namespaces") (empty .Values.watch.namespaces) }}
{{- fail "watch.scope is \"namespaces\" but watch.namespaces is empty: list the namespaces to watch, or set watch.scope=cluster" }}
{{- end }}
{{- if and (eq .Values.watch.scope "cluster") (not (empty .Values.watch.namespaces)) }}
{{- fail "watch.namespaces is set but watch.scope is \"cluster\": set watch.scope=namespaces to limit the operator to those namespaces, or empty the list" }}
{{- end }}
{{- if and .Values.temporal.dev.enabled .Values.temporal.address }}
{{- fail "temporal.dev.enabled=true and temporal.address are both set: the dev server becomes the default address, so leave temporal.address empty (or disable the dev server)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: Prometheus would scrape the operator twice; enable one" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true: a ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the operator must not run as the namespace's default ServiceAccount" }}
{{- end }}
{{- if eq (int .Values.operator.metricsPort) (int .Values.operator.healthPort) }}
{{- fail "operator.metricsPort and operator.healthPort are the same port: the operator serves them separately" }}
{{- end }}
{{- if and .Values.temporal.dev.enabled (eq (int .Values.temporal.dev.port) (int .Values.temporal.dev.uiPort)) }}
{{- fail "temporal.dev.port and temporal.dev.uiPort are the same port" }}
{{- end }}
{{- end }}
