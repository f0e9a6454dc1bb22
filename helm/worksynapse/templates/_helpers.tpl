{{- define "worksynapse.labels" -}}
app.kubernetes.io/name: worksynapse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "worksynapse.env" -}}
- name: DATABASE_URL_FILE
  value: /run/secrets/worksynapse/database-url
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: WORKSYNAPSE_NATS_PREFIX
  value: {{ .Values.nats.prefix | quote }}
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
          items: [{ key: {{ .Values.database.urlSecret.key }}, path: database-url }]
      - secret:
          name: {{ .Values.masterKeySecret.name }}
          items: [{ key: {{ .Values.masterKeySecret.key }}, path: master.key }]
{{- end }}
