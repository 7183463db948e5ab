{{/* Names, labels and the site config of the basho-agent chart. */}}

{{- define "basho-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-basho-agent, or the release name when it already holds the chart name. */}}
{{- define "basho-agent.fullname" -}}
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

{{- define "basho-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "basho-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "basho-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "basho-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: basho
{{- end -}}

{{- define "basho-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "basho-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "basho-agent.siteName" -}}
{{- default .Release.Name .Values.site.name -}}
{{- end -}}

{{/* The namespace of the workspace pods. */}}
{{- define "basho-agent.workspaceNamespace" -}}
{{- default (printf "%s-workspaces" .Release.Namespace) .Values.workspaces.namespace -}}
{{- end -}}

{{- define "basho-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "basho-agent.tokenSecretName" -}}
{{- default (printf "%s-token" (include "basho-agent.fullname" .)) .Values.token.existingSecret -}}
{{- end -}}

{{- define "basho-agent.hasCa" -}}
{{- if or .Values.orchestrator.ca.pem .Values.orchestrator.ca.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* Paths inside the agent container. */}}
{{- define "basho-agent.stateDir" -}}/var/lib/basho-agent{{- end -}}

{{/* A [backend.work] / [backend.results] inline table. */}}
{{- define "basho-agent.volumeToml" -}}
{{- if .claim -}}
{ claim = {{ .claim | toJson }} }
{{- else -}}
{ host_path = {{ .hostPath | toJson }} }
{{- end -}}
{{- end -}}

{{/*
The site config (site.toml). Strings go through toJson: a JSON string is a valid TOML basic
string. Numbers go through int64 because values are read as floats (1048576 would print as
1.048576e+06); capacity.maxShare, a share, stays a float. The [capacity] keys past gpus are
rendered only when set, so the agent's own defaults apply otherwise.
*/}}
{{- define "basho-agent.siteToml" -}}
# Rendered by the basho-agent Helm chart from its values (helm get values <release>).
# Check it: basho-agent check-config --config /etc/basho/config/site.toml
site = {{ include "basho-agent.siteName" . | toJson }}

[orchestrator]
url = {{ .Values.orchestrator.url | toJson }}
token_file = "/etc/basho/token/token"
poll_wait_s = {{ .Values.orchestrator.pollWaitS | int64 }}
{{- if include "basho-agent.hasCa" . }}
ca_file = "/etc/basho/ca/ca.pem"
{{- end }}

[capacity]
cpus = {{ .Values.capacity.cpus | int64 }}
memory_mib = {{ .Values.capacity.memoryMib | int64 }}
gpus = {{ .Values.capacity.gpus | int64 }}
{{- if .Values.capacity.maxShare }}
max_share = {{ .Values.capacity.maxShare | float64 }}
{{- end }}
{{- if .Values.capacity.quietHours }}
quiet_hours = {{ .Values.capacity.quietHours | toJson }}
{{- end }}
{{- if .Values.capacity.utcOffset }}
utc_offset = {{ .Values.capacity.utcOffset | toJson }}
{{- end }}
{{- if .Values.capacity.reportEveryS }}
report_every_s = {{ .Values.capacity.reportEveryS | int64 }}
{{- end }}

[backend]
kind = "kubernetes"
namespace = {{ include "basho-agent.workspaceNamespace" . | toJson }}
work = {{ include "basho-agent.volumeToml" .Values.workspaces.work }}
results = {{ include "basho-agent.volumeToml" .Values.workspaces.results }}
gpu_resource = {{ .Values.workspaces.gpuResource | toJson }}
stop_grace_s = {{ .Values.workspaces.stopGraceS | int64 }}
watch_grace_s = {{ .Values.workspaces.watchGraceS | int64 }}
pull = {{ .Values.workspaces.pull | default "never" | toJson }}
{{- range .Values.datasets }}

[[datasets]]
id = {{ .id | toJson }}
{{- if .claim }}
claim = { name = {{ .claim.name | toJson }}{{ if .claim.subPath }}, sub_path = {{ .claim.subPath | toJson }}{{ end }} }
{{- else }}
path = {{ .hostPath | toJson }}
{{- end }}
{{- if .grantUrl }}
grant_url = {{ .grantUrl | toJson }}
{{- end }}
{{- if .issuers }}
issuers = {{ .issuers | toJson }}
{{- end }}
{{- if .source }}
source = {{ .source | toJson }}
{{- end }}
{{- end }}

[images]
{{- range $name, $image := .Values.images }}
{{ $name | toJson }} = {{ $image | toJson }}
{{- end }}
{{- range $i, $issuer := .Values.trustedIssuers }}

[[trusted_issuers]]
issuer = {{ $issuer.issuer | toJson }}
jwks_file = "/etc/basho/issuers/issuer-{{ $i }}.jwks.json"
{{- end }}

[sessions]
proof = {{ .Values.sessions.proof | default "required" | toJson }}
max_proof_age_s = {{ .Values.sessions.maxProofAgeS | default 300 | int64 }}
encryption = {{ .Values.sessions.encryption | default "required" | toJson }}
{{- range $i, $idp := .Values.sessions.identityIssuers }}

[[sessions.identity_issuers]]
issuer = {{ $idp.issuer | toJson }}
audience = {{ $idp.audience | toJson }}
subject_claim = {{ $idp.subjectClaim | default "sub" | toJson }}
jwks_file = "/etc/basho/issuers/identity-{{ $i }}.jwks.json"
{{- end }}
{{- range $i, $a := .Values.sessions.approvers }}

[[sessions.approvers]]
issuer = {{ $a.issuer | toJson }}
jwks_file = "/etc/basho/issuers/approver-{{ $i }}.jwks.json"
{{- end }}

[paths]
state_dir = "{{ include "basho-agent.stateDir" . }}"
# Unused by the kubernetes backend (workspaces get /work and /results from [backend]), but part
# of every site config.
work_root = "{{ include "basho-agent.stateDir" . }}/work"
results_root = "{{ include "basho-agent.stateDir" . }}/results"
project_work = {{ .Values.workspaces.projectWork | default false }}

[isolation]
user = {{ .Values.isolation.user | toJson }}
pids_limit = {{ .Values.isolation.pidsLimit | int64 }}
tmp_size_mib = {{ .Values.isolation.tmpSizeMib | int64 }}
{{- if .Values.metrics.enabled }}

[metrics]
listen = "0.0.0.0:{{ .Values.metrics.port | int64 }}"
{{- end }}
{{- with .Values.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}

{{/*
Every JWKS file the agent reads, as a list of {file, source}: the trusted visa issuers', the
identity providers' and the approvers'. Each source is inline (jwks), a configMap or a secret.
*/}}
{{- define "basho-agent.jwksFiles" -}}
{{- $files := list }}
{{- range $i, $e := .Values.trustedIssuers }}
{{- $files = append $files (dict "file" (printf "issuer-%d.jwks.json" $i) "source" $e) }}
{{- end }}
{{- range $i, $e := .Values.sessions.identityIssuers }}
{{- $files = append $files (dict "file" (printf "identity-%d.jwks.json" $i) "source" $e) }}
{{- end }}
{{- range $i, $e := .Values.sessions.approvers }}
{{- $files = append $files (dict "file" (printf "approver-%d.jwks.json" $i) "source" $e) }}
{{- end }}
{{- toYaml $files }}
{{- end -}}

{{/*
The Role's rules: exactly what the kubernetes backend calls, in the workspace namespace.
Keep in step with basho_agent::backend::kubernetes::REQUIRED_PERMISSIONS (a test compares them).
*/}}
{{- define "basho-agent.rules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create"]
{{- end -}}

{{/*
Selects every workspace pod: the agent labels each app.kubernetes.io/managed-by=basho. Keep it
exactly the selector of the agent's own deny-all policy (backend/kubernetes/policy.rs), which
accepts a policy of its name only with that selector.
*/}}
{{- define "basho-agent.workspacePodSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: basho
{{- end -}}
