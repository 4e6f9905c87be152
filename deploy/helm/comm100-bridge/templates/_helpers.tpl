{{/* The name of every object: the release's, with the chart's unless it holds it. */}}
{{- define "comm100-bridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "comm100-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "comm100-bridge.labels" -}}
{{ include "comm100-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "comm100-bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "comm100-bridge.secretName" -}}
{{- .Values.secret.existingSecret | default (include "comm100-bridge.fullname" .) -}}
{{- end -}}

{{/*
The longest shutdown, rounded up, plus 10 s: the delay, the requests in flight (the
deadline and 5 s to read a body), the spool drain and the producer's 10 s flush.
*/}}
{{- define "comm100-bridge.gracePeriod" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $ms := add .Values.shutdown.delayMs .Values.delivery.deadlineMs 5000 .Values.shutdown.spoolDrainMs 10000 -}}
{{- add (div (add $ms 999) 1000) 10 -}}
{{- end -}}
{{- end -}}

{{/* The environment variable of librdkafka property `.`: dots written as underscores. */}}
{{- define "comm100-bridge.propertyEnv" -}}
{{- printf "COMM100_BRIDGE__KAFKA__PROPERTIES__%s" (. | replace "." "_" | upper) -}}
{{- end -}}
