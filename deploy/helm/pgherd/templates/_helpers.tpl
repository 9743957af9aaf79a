{{/*
Names. The full name is the release name when it already contains the chart name (so
`helm install pgherd-coordinator` gives the names of deploy/*.yaml), else `<release>-pgherd`; 63 characters
at most, the limit of a label value and of most object names.
*/}}
{{- define "pgherd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgherd.fullname" -}}
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

{{/*
Selector labels: stable for the life of a release (a Deployment's selector cannot change).
*/}}
{{- define "pgherd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgherd.name" . }}-coordinator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgherd.labels" -}}
{{ include "pgherd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "pgherd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgherd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The database pods' ServiceAccount. The coordinator names their RoleBinding and its ClusterRole after it
(coordinator/src/builders/rbac.rs), so the ClusterRole this chart installs, the coordinator's `bind` grant
and the configuration must all carry this one name.
*/}}
{{- define "pgherd.podServiceAccountName" -}}
{{- required "podServiceAccount.name must not be empty" .Values.podServiceAccount.name -}}
{{- end -}}

{{- define "pgherd.podPriorityClassName" -}}
{{- if .Values.podPriorityClassName.create -}}
{{- default (printf "%s-pod" (include "pgherd.fullname" .)) .Values.podPriorityClassName.name -}}
{{- else -}}
{{- .Values.podPriorityClassName.name -}}
{{- end -}}
{{- end -}}

{{- define "pgherd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.registry -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
configTarget normalised to the kind of the configuration object. Zalando's chart spells the CRD target
`OperatorConfigurationCRD`; `OperatorConfiguration` is accepted as well. Anything else fails rather than
silently leaving the coordinator on built-in defaults.
*/}}
{{- define "pgherd.configKind" -}}
{{- if has .Values.configTarget (list "OperatorConfigurationCRD" "OperatorConfiguration") -}}
OperatorConfiguration
{{- else if eq .Values.configTarget "ConfigMap" -}}
ConfigMap
{{- else -}}
{{- fail (printf "configTarget: %q must be OperatorConfigurationCRD (or OperatorConfiguration) or ConfigMap" (toString .Values.configTarget)) -}}
{{- end -}}
{{- end -}}

{{/*
The configuration as YAML (templates can only return strings): `general`, the top-level settings, and
`groups`, the settings of each group of the CRD (crds/operatorconfiguration.crd.yaml) keyed by its name there.
Empty groups are left out, so the defaults render exactly deploy/operatorconfiguration.yaml. The
OperatorConfiguration nests the groups; the ConfigMap flattens everything into one level.
*/}}
{{- define "pgherd.config" -}}
{{- $kubernetes := deepCopy (default dict .Values.configKubernetes) -}}
{{- $podSA := include "pgherd.podServiceAccountName" . -}}
{{- if and (hasKey $kubernetes "pod_service_account_name") (ne (toString $kubernetes.pod_service_account_name) $podSA) -}}
{{- fail (printf "configKubernetes.pod_service_account_name (%v) differs from podServiceAccount.name (%s): set podServiceAccount.name only, the chart's RBAC follows it" $kubernetes.pod_service_account_name $podSA) -}}
{{- end -}}
{{- $_ := set $kubernetes "pod_service_account_name" $podSA -}}
{{- with include "pgherd.podPriorityClassName" . -}}
{{- $_ := set $kubernetes "pod_priority_class_name" . -}}
{{- end -}}
{{- $general := deepCopy (default dict .Values.configGeneral) -}}
{{- if not $general.docker_image -}}
{{- $_ := set $general "docker_image" (printf "localhost/pgherd-postgres:%s" .Chart.AppVersion) -}}
{{- end -}}
{{- $all := dict
  "users" .Values.configUsers
  "kubernetes" $kubernetes
  "postgres_pod_resources" .Values.configPostgresPodResources
  "load_balancer" .Values.configLoadBalancer
  "aws_or_gcp" .Values.configAwsOrGcp
  "teams_api" .Values.configTeamsApi
  "patroni" .Values.configPatroni
  "timeouts" .Values.configTimeouts
  "debug" .Values.configDebug
  "logging_rest_api" .Values.configLoggingRestApi
  "logical_backup" .Values.configLogicalBackup
  "connection_pooler" .Values.configConnectionPooler
  "major_version_upgrade" .Values.configMajorVersionUpgrade -}}
{{- $groups := dict -}}
{{- range $group, $settings := $all -}}
{{- if $settings -}}
{{- $_ := set $groups $group $settings -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "general" $general "groups" $groups) -}}
{{- end -}}

{{/*
One setting in the legacy ConfigMap format the coordinator parses (coordinator/src/config/configmap.rs):
strings as they are, numbers and booleans as JSON, lists comma-separated, maps `k:v,k2:v2`, and lists of maps
(infrastructure_roles_secrets) as maps separated by `;`. What has no flat form (a probe, sidecar containers)
fails here instead of failing in the coordinator at run time.
Argument: list of key and value.
*/}}
{{- define "pgherd.flat" -}}
{{- $key := index . 0 -}}
{{- $value := index . 1 -}}
{{- if kindIs "string" $value -}}
{{- $value -}}
{{- else if kindIs "slice" $value -}}
{{- $items := list -}}
{{- range $value -}}
{{- if kindIs "map" . -}}
{{- $items = append $items (include "pgherd.flatMap" (list $key .)) -}}
{{- else -}}
{{- $items = append $items (include "pgherd.flat" (list $key .)) -}}
{{- end -}}
{{- end -}}
{{- if and $value (kindIs "map" (first $value)) -}}
{{- join ";" $items -}}
{{- else -}}
{{- join "," $items -}}
{{- end -}}
{{- else if kindIs "map" $value -}}
{{- include "pgherd.flatMap" (list $key $value) -}}
{{- else if kindIs "invalid" $value -}}
{{- else -}}
{{- toJson $value -}}
{{- end -}}
{{- end -}}

{{- define "pgherd.flatMap" -}}
{{- $key := index . 0 -}}
{{- $pairs := list -}}
{{- range $k, $v := index . 1 -}}
{{- if or (kindIs "map" $v) (kindIs "slice" $v) -}}
{{- fail (printf "%s cannot be written to a ConfigMap (it holds %s.%s, a nested value): use configTarget OperatorConfigurationCRD" $key $key $k) -}}
{{- end -}}
{{- $pairs = append $pairs (printf "%s:%s" $k (include "pgherd.flat" (list $key $v))) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/*
Zalando chart values pgherd does not implement and whose silent absence would surprise: fail and say so.
*/}}
{{- define "pgherd.unsupported" -}}
{{- if and .Values.controllerID .Values.controllerID.create -}}
{{- fail "controllerID.create: pgherd-coordinator has no controller ID yet and would take every postgresql manifest, also those meant for another operator" -}}
{{- end -}}
{{- if .Values.enableStreams -}}
{{- fail "enableStreams: pgherd does not implement FabricEventStreams yet" -}}
{{- end -}}
{{- if and .Values.rbac.createAggregateClusterRoles -}}
{{- fail "rbac.createAggregateClusterRoles: this chart does not install user-facing ClusterRoles yet" -}}
{{- end -}}
{{- end -}}
