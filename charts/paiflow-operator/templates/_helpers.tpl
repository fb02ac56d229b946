{{/* The chart's name. */}}
{{- define "paiflow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: the release name when it already says paiflow-operator, else <release>-paiflow-operator. */}}
{{- define "paiflow-operator.fullname" -}}
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

{{- define "paiflow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paiflow-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "paiflow-operator.labels" -}}
{{ include "paiflow-operator.selectorLabels" . }}
app.kubernetes.io/part-of: paiflow-operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "paiflow-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A value still holding an example's placeholder (<ACCOUNT_ID>, <CLUSTER_ID>) stops the install here, not later
as an STS error. */}}
{{- define "paiflow-operator.noPlaceholder" -}}
{{- $name := index . 0 }}{{- $value := index . 1 }}
{{- if regexMatch "<[A-Z][A-Z0-9_]*>" (toString $value) }}
{{- fail (printf "%s still holds the placeholder %s: set it to your own value" $name (regexFind "<[A-Z][A-Z0-9_]*>" (toString $value))) }}
{{- end }}
{{- end }}
