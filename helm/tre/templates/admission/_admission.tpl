{{/*
Shared parts of the admission policies. Project namespaces are the ones the controller labels tre.dev/project.
*/}}

{{- define "tre.admission.projectNamespaces" -}}
namespaceSelector:
  matchExpressions:
    - key: tre.dev/project
      operator: Exists
{{- end }}

{{/* A binding for policy $name; call with (dict "ctx" $ "name" "…" "selector" "project"|"all"). */}}
{{- define "tre.admission.binding" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .name }}
  labels:
    {{- include "tre.labels" (dict "ctx" .ctx "component" "admission-policy") | nindent 4 }}
spec:
  policyName: {{ .name }}
  validationActions:
    {{- toYaml .ctx.Values.admissionPolicies.validationActions | nindent 4 }}
  matchResources:
    {{- if eq .selector "project" }}
    {{- include "tre.admission.projectNamespaces" . | nindent 4 }}
    {{- else }}
    namespaceSelector: {}
    {{- end }}
{{- end }}
