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

{{/* Where the Secret's keys are files: the bridge reads the tokens there again whenever the
kubelet updates them, so a rotation needs no restart. */}}
{{- define "comm100-bridge.secretDir" -}}
/run/secrets/comm100-bridge
{{- end -}}

{{/* Whether the Kafka password is read from the Secret: one was given, or SASL has a
username. */}}
{{- define "comm100-bridge.kafkaPassword" -}}
{{- if or .Values.secret.kafkaPassword (hasKey .Values.kafka.properties "sasl.username") -}}
true
{{- end -}}
{{- end -}}

{{/* Where kafka.caSecret is mounted. */}}
{{- define "comm100-bridge.caDir" -}}
/etc/comm100-bridge-kafka-ca
{{- end -}}

{{/* The Secret's files, the Kafka CA's, and extraVolumeMounts: the bridge's and the spool
drain Jobs' alike. */}}
{{- define "comm100-bridge.secretMount" -}}
- name: secret
  mountPath: {{ include "comm100-bridge.secretDir" . }}
  readOnly: true
{{- if .Values.kafka.caSecret.name }}
- name: kafka-ca
  mountPath: {{ include "comm100-bridge.caDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "comm100-bridge.secretVolume" -}}
- name: secret
  secret:
    secretName: {{ include "comm100-bridge.secretName" . }}
    defaultMode: 0440
{{- with .Values.kafka.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.kafka.caSecret.key }}
        path: {{ $.Values.kafka.caSecret.key }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
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

{{/* The topics the bridge writes to, one per line: <prefix>.<type> and the DLQ. */}}
{{- define "comm100-bridge.topics" -}}
{{- range list "offline_message_submitted" "chat_started" "chat_ended" "chat_wrapped_up" "agent_status_changed" "chat_requested" "chat_transferred" "unknown" "dlq" }}
{{ printf "%s.%s" $.Values.topics.prefix . }}
{{- end }}
{{- end -}}

{{/* The environment variable of librdkafka property `.`: dots written as underscores. */}}
{{- define "comm100-bridge.propertyEnv" -}}
{{- printf "COMM100_BRIDGE__KAFKA__PROPERTIES__%s" (. | replace "." "_" | upper) -}}
{{- end -}}

{{/* The bridge's environment: what the probes, volume and grace period rely on (these win
over the `config` file), the brokers, the Kafka properties and the Secret's files. The admin
listener is on every address because the kubelet's probes and Prometheus reach it on the
pod's address; it serves only /healthz, /readyz and /metrics (networkPolicy limits who may
connect). */}}
{{- define "comm100-bridge.env" -}}
- name: COMM100_BRIDGE__HTTP__LISTEN
  value: "0.0.0.0:{{ .Values.ports.http }}"
- name: COMM100_BRIDGE__ADMIN__LISTEN
  value: "0.0.0.0:{{ .Values.ports.admin }}"
- name: COMM100_BRIDGE__SPOOL__DIR
  value: /var/lib/comm100-bridge/spool
- name: COMM100_BRIDGE__HTTP__SHUTDOWN_DELAY_MS
  value: {{ .Values.shutdown.delayMs | quote }}
- name: COMM100_BRIDGE__SPOOL__MAX_BYTES
  value: {{ .Values.spool.maxBytes | int64 | quote }}
- name: COMM100_BRIDGE__SPOOL__DRAIN_ON_SHUTDOWN_MS
  value: {{ .Values.shutdown.spoolDrainMs | quote }}
- name: COMM100_BRIDGE__DELIVERY__DEADLINE_MS
  value: {{ .Values.delivery.deadlineMs | quote }}
- name: COMM100_BRIDGE__KAFKA__BROKERS
  value: {{ join "," .Values.kafka.brokers | quote }}
- name: COMM100_BRIDGE__TOPICS__PREFIX
  value: {{ .Values.topics.prefix | quote }}
- name: COMM100_BRIDGE__TOPICS__PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: COMM100_BRIDGE__TOPICS__REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
{{- range $key, $value := .Values.topics.config }}
- name: {{ printf "COMM100_BRIDGE__TOPICS__CONFIG__%s" ($key | replace "." "_" | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $value := .Values.kafka.properties }}
- name: {{ include "comm100-bridge.propertyEnv" $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.auth.trustedProxies }}
- name: COMM100_BRIDGE__AUTH__TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
- name: COMM100_BRIDGE__AUTH__TOKENS_FILE
  value: {{ include "comm100-bridge.secretDir" . }}/tokens
{{- if include "comm100-bridge.kafkaPassword" . }}
- name: COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD_FILE
  value: {{ include "comm100-bridge.secretDir" . }}/{{ .Values.secret.kafkaPasswordKey }}
{{- end }}
{{- if .Values.kafka.caSecret.name }}
{{- if hasKey .Values.kafka.properties "ssl.ca.location" }}
{{- fail "kafka.caSecret sets ssl.ca.location: remove it from kafka.properties" }}
{{- end }}
- name: COMM100_BRIDGE__KAFKA__PROPERTIES__SSL_CA_LOCATION
  value: {{ include "comm100-bridge.caDir" . }}/{{ .Values.kafka.caSecret.key }}
{{- end }}
- name: COMM100_BRIDGE__KAFKA__VALUE_FORMAT
  value: {{ .Values.kafka.valueFormat | quote }}
{{- if eq .Values.kafka.valueFormat "json_sr" }}
{{- $_ := required "kafka.valueFormat json_sr needs schemaRegistry.url" .Values.schemaRegistry.url }}
{{- end }}
{{- with .Values.schemaRegistry.url }}
- name: COMM100_BRIDGE__SCHEMA_REGISTRY__URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.schemaRegistry.username }}
- name: COMM100_BRIDGE__SCHEMA_REGISTRY__USERNAME
  value: {{ . | quote }}
- name: COMM100_BRIDGE__SCHEMA_REGISTRY__PASSWORD_FILE
  value: {{ include "comm100-bridge.secretDir" $ }}/{{ $.Values.secret.schemaRegistryPasswordKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
