{{/* Names, labels and the config of the basho-orchestrator chart. */}}

{{- define "basho-orchestrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-basho-orchestrator, or the release name when it already holds the chart name. */}}
{{- define "basho-orchestrator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "basho-orchestrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "basho-orchestrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "basho-orchestrator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "basho-orchestrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: basho
{{- end -}}

{{- define "basho-orchestrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "basho-orchestrator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "basho-orchestrator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "basho-orchestrator.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "basho-orchestrator.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "basho-orchestrator.configSecretName" -}}
{{- default (printf "%s-config" (include "basho-orchestrator.fullname" .)) .Values.config.existingSecret -}}
{{- end -}}

{{- define "basho-orchestrator.templatesConfigMapName" -}}
{{- default (printf "%s-templates" (include "basho-orchestrator.fullname" .)) .Values.workspaceTemplatesConfigMap -}}
{{- end -}}

{{/*
orchestrator.toml. Strings go through toJson: a JSON string is a valid TOML basic string. Numbers
go through int64 because values are read as floats.
*/}}
{{- define "basho-orchestrator.configToml" -}}
# Rendered by the basho-orchestrator Helm chart from its values (helm get values <release>).
# BASHO_DATABASE, when set from database.postgres.existingSecret, overrides `database`.
listen = "0.0.0.0:{{ .Values.port | int64 }}"
data_dir = "/var/lib/basho"
templates_dir = "/etc/basho/templates"
platform_tokens = {{ .Values.tokens.platform | toJson }}

[tls]
cert_file = "/etc/basho/tls/tls.crt"
key_file = "/etc/basho/tls/tls.key"
{{- range .Values.tokens.agents }}

[[agents]]
site = {{ .site | toJson }}
token = {{ .token | toJson }}
{{- end }}
{{- range $i, $issuer := .Values.trustedIssuers }}

[[trusted_issuers]]
issuer = {{ $issuer.issuer | toJson }}
jwks_file = "/etc/basho/issuers/issuer-{{ $i }}.jwks.json"
{{- end }}

[limits]
max_body_bytes = {{ .Values.limits.maxBodyBytes | int64 }}
long_poll_max_s = {{ .Values.limits.longPollMaxS | int64 }}
agent_silent_s = {{ .Values.limits.agentSilentS | int64 }}
{{- with .Values.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}

{{/*
Several replicas: PostgreSQL is required; the headless Service their sessions relay through.
*/}}
{{- define "basho-orchestrator.replicated" -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- $_ := required "replicaCount > 1 needs the PostgreSQL store: set database.postgres.existingSecret (SQLite has one writer)" .Values.database.postgres.existingSecret -}}
true
{{- end -}}
{{- end }}

{{- define "basho-orchestrator.peersName" -}}
{{ include "basho-orchestrator.fullname" . }}-peers
{{- end }}
