{{/*
Names, labels, the image reference, security contexts and the TRE_* environment shared by every template.
*/}}

{{- define "tre.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: "tre" for a release called tre, else "<release>-tre". */}}
{{- define "tre.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tre.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "airlock"). */}}
{{- define "tre.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tre.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every object's labels; call with (dict "ctx" $ "component" "airlock"). */}}
{{- define "tre.labels" -}}
helm.sh/chart: {{ include "tre.chart" .ctx }}
{{ include "tre.selectorLabels" . }}
app.kubernetes.io/part-of: tre
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "tre.controller.fullname" -}}
{{- printf "%s-controller" (include "tre.fullname" .) }}
{{- end }}

{{- define "tre.airlock.fullname" -}}
{{- printf "%s-airlock" (include "tre.fullname" .) }}
{{- end }}

{{/* The controller's identity as the API server sees it (admission policies compare request.userInfo.username). */}}
{{- define "tre.controller.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "tre.controller.fullname" .) }}
{{- end }}

{{- define "tre.hub.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Values.cluster.hubNamespace .Values.hub.serviceAccount }}
{{- end }}

{{/* The image: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "tre.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod Security Standards "restricted", at pod level. */}}
{{- define "tre.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security Standards "restricted", per container, plus a read-only root filesystem. */}}
{{- define "tre.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The settings every TRE process needs (tre/config.py): database and object store; secrets by reference only. */}}
{{- define "tre.env.common" -}}
- name: TRE_ENVIRONMENT
  value: production
- name: TRE_HOME
  value: /tmp/tre
- name: TRE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | quote }}
      key: {{ .Values.database.secretKey | quote }}
- name: TRE_OBJECT_STORE_URL
  value: {{ .Values.objectStore.url | quote }}
{{- with .Values.objectStore.endpoint }}
- name: TRE_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.credentials.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.objectStore.credentials.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.objectStore.credentials.secretAccessKeyKey | quote }}
{{- end }}
{{- end }}

{{/* Refuse value combinations that would weaken isolation or cannot work. */}}
{{- define "tre.validate" -}}
{{- if not .Values.database.existingSecret }}
{{- fail "database.existingSecret: name the existing Secret holding the database URL (kubectl create secret generic tre-database --from-literal=url=postgresql+psycopg://…)" }}
{{- end }}
{{- if not .Values.objectStore.url }}
{{- fail "objectStore.url: set it to s3://bucket/prefix" }}
{{- end }}
{{- if not .Values.vault.address }}
{{- fail "vault.address: set the Vault URL, e.g. https://vault.vault.svc:8200" }}
{{- end }}
{{- if and (not .Values.objectStore.credentials.existingSecret) (not .Values.objectStore.workloadIdentity) }}
{{- fail "objectStore: set credentials.existingSecret (a Secret with the S3 keys) or workloadIdentity: true (IRSA or similar); keys are never inlined" }}
{{- end }}
{{- if and (eq .Values.vault.auth.method "tokenSecret") (not .Values.vault.auth.tokenSecret.name) }}
{{- fail "vault.auth.tokenSecret.name: name the Secret holding a Vault token, or use vault.auth.method=kubernetes" }}
{{- end }}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.serviceMonitor.enabled) }}
{{- fail "metrics.prometheusRule.enabled needs metrics.serviceMonitor.enabled: the alerts read metrics only a ServiceMonitor collects" }}
{{- end }}
{{- if and .Values.admissionPolicies.enabled (not (has "Deny" .Values.admissionPolicies.validationActions)) (not .Values.admissionPolicies.allowAuditOnly) }}
{{- fail "admissionPolicies.validationActions without Deny only reports violations; set allowAuditOnly: true to accept that during a rollout" }}
{{- end }}
{{- end }}
