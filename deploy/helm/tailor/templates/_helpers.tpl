{{/*
The chart's name, and the full name every object's name starts with.
*/}}
{{- define "tailor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
<release>-<name>, or the release name alone if it holds the name already.
Kept to 40 characters: the longest suffix is "-paramserver" and a pod adds
"-NN" and a controller hash, within the 63 of a DNS label.
*/}}
{{- define "tailor.fullname" -}}
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

{{- define "tailor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object; "tailor.selectorLabels" with a component is what
Services, StatefulSets, Deployments, PodDisruptionBudgets select on.
*/}}
{{- define "tailor.labels" -}}
helm.sh/chart: {{ include "tailor.chart" . }}
app.kubernetes.io/name: {{ include "tailor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tailor
{{- end }}

{{/* the labels shared by every pod of the release (the NetworkPolicy's) */}}
{{- define "tailor.releaseLabels" -}}
app.kubernetes.io/name: {{ include "tailor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* call with (dict "ctx" $ "component" "worker") */}}
{{- define "tailor.selectorLabels" -}}
{{ include "tailor.releaseLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* the labels of a component's objects: call as tailor.selectorLabels */}}
{{- define "tailor.componentLabels" -}}
{{ include "tailor.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tailor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tailor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tailor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* the headless Services that give pods their stable names */}}
{{- define "tailor.coordinatorService" -}}
{{- printf "%s-coordinator" (include "tailor.fullname" .) }}
{{- end }}
{{- define "tailor.paramserverService" -}}
{{- printf "%s-paramserver" (include "tailor.fullname" .) }}
{{- end }}
{{- define "tailor.etcdService" -}}
{{- printf "%s-etcd" (include "tailor.fullname" .) }}
{{- end }}
{{- define "tailor.etcdHeadless" -}}
{{- printf "%s-etcd-headless" (include "tailor.fullname" .) }}
{{- end }}

{{/*
The etcd client endpoints every role gets as --etcd: the in-chart etcd's
client Service, or etcd.external.endpoints.
*/}}
{{- define "tailor.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- printf "http://%s.%s.svc.%s:2379" (include "tailor.etcdService" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- if not .Values.etcd.external.endpoints }}
{{- fail "etcd.enabled is false: give etcd.external.endpoints" }}
{{- end }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}

{{/* the Secret names the roles read */}}
{{- define "tailor.s3Secret" -}}
{{- if and .Values.s3.credentials.accessKeyId .Values.s3.credentials.secretAccessKey }}
{{- printf "%s-s3" (include "tailor.fullname" .) }}
{{- else if .Values.s3.credentials.existingSecret }}
{{- .Values.s3.credentials.existingSecret }}
{{- else }}
{{- fail "s3.credentials: give existingSecret, or accessKeyId and secretAccessKey" }}
{{- end }}
{{- end }}

{{- define "tailor.tlsSecret" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else if and .Values.tls.ca .Values.tls.cert .Values.tls.key }}
{{- printf "%s-tls" (include "tailor.fullname" .) }}
{{- else }}
{{- fail "tls.enabled: give tls.existingSecret, or tls.ca, tls.cert and tls.key" }}
{{- end }}
{{- end }}

{{- define "tailor.gossipSecret" -}}
{{- default (printf "%s-gossip" (include "tailor.fullname" .)) .Values.gossip.existingSecret }}
{{- end }}

{{/*
The flags every cluster role and the submit Job share: etcd and the run.
*/}}
{{- define "tailor.clusterArgs" -}}
- {{ printf "--etcd=%s" (include "tailor.etcdEndpoints" .) | quote }}
- {{ printf "--run=%s" (required "run.id is required" .Values.run.id) | quote }}
{{- end }}

{{/*
The environment of every tailor container: the pod's name and namespace
(for $(POD_NAME) in arguments), the S3 store and its credentials from the
Secret, and the files of TLS, the gossip key and etcd's credentials.
*/}}
{{- define "tailor.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.s3.endpoint }}
- name: TAILOR_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "tailor.s3Secret" . }}
      key: {{ .Values.s3.credentials.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tailor.s3Secret" . }}
      key: {{ .Values.s3.credentials.secretAccessKeyKey }}
{{- if .Values.s3.caSecret }}
- name: AWS_CA_BUNDLE
  value: /etc/tailor/s3-ca/ca.crt
{{- end }}
{{- if .Values.tls.enabled }}
- name: TAILOR_TLS_CA
  value: /etc/tailor/tls/ca.crt
- name: TAILOR_TLS_CERT
  value: /etc/tailor/tls/tls.crt
- name: TAILOR_TLS_KEY
  value: /etc/tailor/tls/tls.key
{{- end }}
{{- if not .Values.etcd.enabled }}
{{- if .Values.etcd.external.tls.existingSecret }}
- name: TAILOR_ETCD_CA
  value: /etc/tailor/etcd-tls/ca.crt
{{- if .Values.etcd.external.tls.clientCert }}
- name: TAILOR_ETCD_CERT
  value: /etc/tailor/etcd-tls/tls.crt
- name: TAILOR_ETCD_KEY
  value: /etc/tailor/etcd-tls/tls.key
{{- end }}
{{- end }}
{{- with .Values.etcd.external.auth.existingSecret }}
- name: TAILOR_ETCD_USER
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.etcd.external.auth.usernameKey }}
- name: TAILOR_ETCD_PASSWORD_FILE
  value: /etc/tailor/etcd-auth/password
{{- end }}
{{- end }}
{{- if .Values.gossip.enabled }}
- name: TAILOR_GOSSIP_KEY_FILE
  value: /etc/tailor/gossip/gossip.key
{{- end }}
{{- end }}

{{/* volume mounts matching tailor.env and tailor.volumes */}}
{{- define "tailor.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.s3.caSecret }}
- name: s3-ca
  mountPath: /etc/tailor/s3-ca
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/tailor/tls
  readOnly: true
{{- end }}
{{- if .Values.gossip.enabled }}
- name: gossip
  mountPath: /etc/tailor/gossip
  readOnly: true
{{- end }}
{{- if not .Values.etcd.enabled }}
{{- if .Values.etcd.external.tls.existingSecret }}
- name: etcd-tls
  mountPath: /etc/tailor/etcd-tls
  readOnly: true
{{- end }}
{{- if .Values.etcd.external.auth.existingSecret }}
- name: etcd-auth
  mountPath: /etc/tailor/etcd-auth
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "tailor.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- with .Values.s3.caSecret }}
- name: s3-ca
  secret:
    secretName: {{ . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "tailor.tlsSecret" . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if .Values.gossip.enabled }}
- name: gossip
  secret:
    secretName: {{ include "tailor.gossipSecret" . }}
    defaultMode: 0440
    items:
      - key: gossip.key
        path: gossip.key
{{- end }}
{{- if not .Values.etcd.enabled }}
{{- with .Values.etcd.external.tls.existingSecret }}
- name: etcd-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- if $.Values.etcd.external.tls.clientCert }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- with .Values.etcd.external.auth.existingSecret }}
- name: etcd-auth
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.etcd.external.auth.passwordKey }}
        path: password
{{- end }}
{{- end }}
{{- end }}

{{/* the probes of a long-running role, on its metrics port */}}
{{- define "tailor.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* the pod-level settings every tailor pod shares */}}
{{- define "tailor.podSpec" -}}
serviceAccountName: {{ include "tailor.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* the ports of a long-running role; grpc only for coordinators and parameter servers */}}
{{- define "tailor.ports" -}}
{{- if .grpc }}
- name: grpc
  containerPort: {{ .ctx.Values.ports.grpc }}
  protocol: TCP
{{- end }}
- name: gossip-tcp
  containerPort: {{ .ctx.Values.ports.gossip }}
  protocol: TCP
- name: gossip-udp
  containerPort: {{ .ctx.Values.ports.gossip }}
  protocol: UDP
- name: metrics
  containerPort: {{ .ctx.Values.ports.metrics }}
  protocol: TCP
{{- end }}

{{/* the listen flags of a long-running role */}}
{{- define "tailor.listenArgs" -}}
{{- if .grpc }}
- --listen=0.0.0.0:{{ .ctx.Values.ports.grpc }}
{{- end }}
- --gossip=0.0.0.0:{{ .ctx.Values.ports.gossip }}
- --metrics-listen=0.0.0.0:{{ .ctx.Values.ports.metrics }}
{{- end }}

{{/*
A pod's affinity: the values' (.affinity), or else a preference for
spreading the component's pods over nodes (one node's loss then takes one
coordinator, one etcd member, one parameter server). Call with
(dict "ctx" $ "component" "coordinator" "affinity" .Values.coordinator.affinity).
*/}}
{{- define "tailor.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tailor.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}
