{{- define "kube-nftlb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels deploy/ has, then Helm's own. */}}
{{- define "kube-nftlb.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kube-nftlb.labels" -}}
{{ include "kube-nftlb.selector" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kube-nftlb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The metrics address's port, and the host the kubelet probes (loopback for a wildcard). */}}
{{- define "kube-nftlb.metricsPort" -}}
{{- $port := regexFind "[0-9]+$" .Values.metrics.address -}}
{{- if not $port -}}
{{- fail (printf "metrics.address %q: want host:port, e.g. 127.0.0.1:9195" .Values.metrics.address) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{- define "kube-nftlb.metricsHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" .Values.metrics.address "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if has $host (list "" "0.0.0.0" "::") -}}127.0.0.1{{- else -}}{{ $host }}{{- end -}}
{{- end -}}

{{- define "kube-nftlb.metricsLoopback" -}}
{{- $host := regexReplaceAll ":[0-9]+$" .Values.metrics.address "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") -}}true{{- end -}}
{{- end -}}
