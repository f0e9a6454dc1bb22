{{- define "worksynapse.labels" -}}
app.kubernetes.io/name: worksynapse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "worksynapse.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{ .Values.publicUrl }}
{{- else if .Values.ingress.enabled -}}
{{ ternary "https" "http" (ne .Values.ingress.tlsSecretName "") }}://{{ .Values.ingress.host }}
{{- end -}}
{{- end }}

{{- define "worksynapse.env" -}}
- name: DATABASE_URL_FILE
  value: /run/secrets/worksynapse/database-url
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: WORKSYNAPSE_NATS_PREFIX
  value: {{ .Values.nats.prefix | quote }}
{{- if .Values.nats.tokenSecret.name }}
- name: WORKSYNAPSE_NATS_TOKEN_FILE
  value: /run/secrets/worksynapse/nats-token
{{- end }}
{{- if .Values.metricsTokenSecret.name }}
- name: WORKSYNAPSE_METRICS_TOKEN_FILE
  value: /run/secrets/worksynapse/metrics-token
{{- end }}
- name: WORKSYNAPSE_DATABASE_APP_ROLE
  value: {{ .Values.database.appRole | quote }}
- name: WORKSYNAPSE_DATABASE_MIGRATE_ON_START
  value: "false"
- name: WORKSYNAPSE_SECRETS_MASTER_KEY_FILE
  value: /run/secrets/worksynapse/master.key
- name: WORKSYNAPSE_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: WORKSYNAPSE_DATA_DIR
  value: /data
{{- with (include "worksynapse.publicUrl" .) }}
- name: WORKSYNAPSE_AUTH_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
- name: WORKSYNAPSE_HTTP_TRUST_PROXY
  value: {{ .Values.http.trustProxy | quote }}
- name: WORKSYNAPSE_HTTP_PROXY_HOPS
  value: {{ .Values.http.proxyHops | quote }}
{{- with .Values.http.trustedProxies }}
- name: WORKSYNAPSE_HTTP_TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Web and worker pods use the inference pods over NATS when there are any. */}}
{{- define "worksynapse.aiRemote" -}}
{{- if .Values.inference.enabled }}
- name: WORKSYNAPSE_AI_REMOTE
  value: "true"
{{- end }}
{{- end }}

{{- define "worksynapse.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" .Release.Name) }}
- name: tmp
  emptyDir: {}
- name: secrets
  projected:
    sources:
      - secret:
          name: {{ .Values.database.urlSecret.name }}
          items: [{ key: {{ .Values.database.urlSecret.key | quote }}, path: database-url }]
      - secret:
          name: {{ .Values.masterKeySecret.name }}
          items: [{ key: {{ .Values.masterKeySecret.key | quote }}, path: master.key }]
      {{- if .Values.nats.tokenSecret.name }}
      - secret:
          name: {{ .Values.nats.tokenSecret.name }}
          items: [{ key: {{ .Values.nats.tokenSecret.key | quote }}, path: nats-token }]
      {{- end }}
      {{- if .Values.metricsTokenSecret.name }}
      - secret:
          name: {{ .Values.metricsTokenSecret.name }}
          items: [{ key: {{ .Values.metricsTokenSecret.key | quote }}, path: metrics-token }]
      {{- end }}
{{- end }}

{{/* Scheduling of a role's pods: worksynapse.scheduling (dict "role" .Values.web) */}}
{{- define "worksynapse.scheduling" -}}
{{- with .role.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- end }}

{{- define "worksynapse.container" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: [ALL] } }
volumeMounts:
  - { name: data, mountPath: /data }
  - { name: secrets, mountPath: /run/secrets/worksynapse, readOnly: true }
  - { name: tmp, mountPath: /tmp }
{{- end }}
