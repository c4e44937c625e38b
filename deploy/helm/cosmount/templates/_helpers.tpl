{{/*
Name prefix of every namespaced object and of the cluster-wide RBAC objects. The release name is used as is
when it already says cosmount, so `helm install cosmount ...` gives cosmount-node, cosmount-controller, ...
*/}}
{{- define "cosmount.fullname" -}}
{{- if contains "cosmount" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-cosmount" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The CSI driver name is compiled into the plugin (pkg/driver.Name); it is not a value. */}}
{{- define "cosmount.driverName" -}}cosmount.csi.io{{- end -}}

{{- define "cosmount.labels" -}}
app.kubernetes.io/name: cosmount
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cosmount
{{- end -}}

{{- define "cosmount.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "cosmount.sidecarImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The volume attributes that select the pods' trusted profile; exactly one must be set. */}}
{{- define "cosmount.volumeProfile" -}}
{{- $p := .Values.storageClasses.volumeProfile -}}
{{- $n := 0 -}}
{{- if $p.id }}{{ $n = add1 $n }}{{ end -}}
{{- if $p.name }}{{ $n = add1 $n }}{{ end -}}
{{- if $p.crn }}{{ $n = add1 $n }}{{ end -}}
{{- if ne (int $n) 1 -}}
{{- fail "storageClasses.volumeProfile: set exactly one of id, name and crn: the IAM trusted profile pods mount provisioned volumes through (the default name cosmount-${pod.namespace} is one profile per namespace, which deploy/examples/ibm-cloud-setup.md creates), or storageClasses.enabled=false for static and inline volumes only" -}}
{{- end -}}
authType: trustedProfile
{{- with $p.id }}
trustedProfileID: {{ . | quote }}
{{- end }}
{{- with $p.name }}
trustedProfileName: {{ . | quote }}
{{- end }}
{{- with $p.crn }}
trustedProfileCRN: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* StorageClass parameters shared by every class. */}}
{{- define "cosmount.classParameters" -}}
{{- $sc := .Values.storageClasses -}}
cosEndpoint: {{ required "storageClasses.cosEndpoint is required" $sc.cosEndpoint | quote }}
region: {{ required "storageClasses.region is required" $sc.region | quote }}
iamEndpoint: {{ $sc.iamEndpoint | default .Values.iamEndpoint | quote }}
{{ include "cosmount.volumeProfile" . }}
{{- with .Values.controller.apiKeySecret.name }}
csi.storage.k8s.io/provisioner-secret-name: {{ . | quote }}
csi.storage.k8s.io/provisioner-secret-namespace: {{ $.Values.controller.apiKeySecret.namespace | default $.Release.Namespace | quote }}
{{- end }}
{{- end -}}

{{- define "cosmount.classCommon" -}}
provisioner: {{ include "cosmount.driverName" . }}
reclaimPolicy: {{ .Values.storageClasses.reclaimPolicy }}
volumeBindingMode: {{ .Values.storageClasses.volumeBindingMode }}
allowVolumeExpansion: false
{{- with .Values.storageClasses.mountOptions }}
mountOptions:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* HTTPS_PROXY, HTTP_PROXY and NO_PROXY from .Values.proxy, in both spellings, as container env entries. */}}
{{- define "cosmount.proxyEnv" -}}
{{- $p := .Values.proxy -}}
{{- range $name, $value := dict "HTTPS_PROXY" $p.httpsProxy "HTTP_PROXY" $p.httpProxy "NO_PROXY" $p.noProxy }}
{{- if $value }}
- name: {{ $name }}
  value: {{ $value | quote }}
- name: {{ lower $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether any StorageClass is rendered, i.e. dynamic provisioning is offered. */}}
{{- define "cosmount.provisioning" -}}
{{- $sc := .Values.storageClasses -}}
{{- if and $sc.enabled (or (gt (len $sc.bucketClasses) 0) $sc.prefix.enabled) -}}true{{- end -}}
{{- end -}}

{{/* The endpoint policy flags of the node plugin and the controller (values: iamEndpoint, endpoints). */}}
{{- define "cosmount.endpointArgs" -}}
{{- $ep := .Values.endpoints -}}
{{- with $ep.cosDefault }}
- --cos-endpoint={{ . }}
{{- end }}
- --allowed-iam-endpoints={{ join "," $ep.allowedIAM }}
- --allowed-cos-endpoints={{ join "," $ep.allowedCOS }}
{{- if $ep.allowInsecureHTTP }}
- --allow-insecure-http=true
{{- end }}
{{- end -}}
