{{/* Chart name. */}}
{{- define "llmd-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "llmd-operator.fullname" -}}
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

{{- define "llmd-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmd-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmd-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmd-operator.labels" -}}
helm.sh/chart: {{ include "llmd-operator.chart" . }}
{{ include "llmd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-d
{{- end }}

{{- define "llmd-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmd-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmd-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where shared InferenceSchedulers and the price overrides live. */}}
{{- define "llmd-operator.homeNamespace" -}}
{{- default .Release.Namespace .Values.homeNamespace }}
{{- end }}

{{/* Namespaced mode: the watched namespaces plus the home namespace, without duplicates (JSON list). */}}
{{- define "llmd-operator.roleNamespaces" -}}
{{- $all := append (.Values.watchNamespaces | default list) (include "llmd-operator.homeNamespace" .) }}
{{- toJson (uniq $all) }}
{{- end }}

{{- define "llmd-operator.clusterWide" -}}
{{- if empty .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{- define "llmd-operator.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{- end }}
{{- end }}

{{- define "llmd-operator.modelsConfigMap" -}}
{{- printf "%s-models" (include "llmd-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmd-operator.pricesConfigMap" -}}
{{- printf "%s-prices" (include "llmd-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Rules for the namespaced resources the operator reads and writes. One list, used by the ClusterRole
(all namespaces) or by a Role per watched namespace.
*/}}
{{- define "llmd-operator.namespacedRules" -}}
- apiGroups: [inference.llm-d.io]
  resources: [llmdeployments]
  verbs: [get, list, watch, patch, update]
- apiGroups: [inference.llm-d.io]
  resources: [llmdeployments/status]
  verbs: [get, list, watch, patch, update]
- apiGroups: [scheduler.llm-d.io]
  resources: [inferenceschedulers]
  verbs: [get, list, watch, patch, update]
- apiGroups: [scheduler.llm-d.io]
  resources: [inferenceschedulers/status]
  verbs: [get, list, watch, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# configmaps: update too, because the profiler's Role grants it and RBAC forbids granting more than one holds.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# spec.profiling: the profiler Job, its ServiceAccount, and the Role that lets it publish its ConfigMap.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
