{{/* The image reference. */}}
{{- define "governor.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels selecting Governor's serving pods (the same as config/manager). */}}
{{- define "governor.selectorLabels" -}}
app.kubernetes.io/name: governor
app.kubernetes.io/component: operator
{{- end }}

{{/* The pod security context every Governor pod runs with. */}}
{{- define "governor.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
seccompProfile: { type: RuntimeDefault }
{{- end }}

{{/* The container security context every Governor container runs with. */}}
{{- define "governor.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: ["ALL"] }
{{- end }}
