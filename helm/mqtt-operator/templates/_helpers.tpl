{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "mqtt-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, or release-chart when the release name lacks the chart name. */}}
{{- define "mqtt-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the operator pods (stable: used in the Deployment selector). */}}
{{- define "mqtt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mqtt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "mqtt-operator.labels" -}}
{{ include "mqtt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mqtt-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mqtt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mqtt-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mqtt-operator.leaseName" -}}
{{- default (include "mqtt-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}
