{{/* Chart name, truncated to fit label values. */}}
{{- define "tokenfactory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "tokenfactory.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tokenfactory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenfactory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tokenfactory.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tokenfactory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenfactory
{{- end -}}

{{- define "tokenfactory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tokenfactory.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tokenfactory.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does, namespaced part (see operator/tokenfactory/{handlers,kube}.py):
- TokenFactories: watched by kopf, patched for the finalizer tokenfactory.dev/finalizer and kopf's
  progress annotations; status merge-patched by the reconciler.
- Deployments (one per pool) and the Service: server-side applied (patch), listed, deleted; kopf
  watches Deployments.
- Pods: read only (kopf watches them; the reconciler lists them for GPUs held and readiness).
- Events: created (core v1 by the reconciler and kopf; events.k8s.io for newer clients).
No secrets, no configmaps.
*/}}
{{- define "tokenfactory.namespacedRules" -}}
{{- /* Exactly the verbs the code uses (tests/unit/test_security_units.py records the requests the real
  adapters send and compares them with these rules): kopf lists/watches TokenFactories, HTTPRoutes and
  InferencePools and patches away a finalizer an older version left on a TokenFactory; the children's watch
  cache (informer.py) lists/watches Deployments, Services and pods; the pipeline merge-patches the status,
  creates a missing child (get when it exists after all), server-side applies (patch) one that differs,
  JSON-patches a drifted pod template back (patch), deletes removed pools' Deployments and routing objects of
  another mode, and creates Events. */}}
- apiGroups: ["tokenfactory.dev"]
  resources: ["tokenfactories"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tokenfactory.dev"]
  resources: ["tokenfactories/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# spec.routing: HTTPRoute / InferencePool objects are server-side applied (create, patch), watched so hand edits
# are undone at once (list, watch) and deleted on a routing mode switch (delete).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Leader election: one Lease, by name (create needs no name: RBAC cannot restrict create by name). */}}
{{- define "tokenfactory.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update"]
{{- end -}}

{{/* Cluster-scoped reads kopf uses to observe the cluster (see values.yaml rbac.*). */}}
{{- define "tokenfactory.observeRules" -}}
# the operator reads the author-rights policy, its binding and its allow-list (by name only)
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicies", "validatingadmissionpolicybindings"]
  resourceNames: [{{ printf "%s-author-rights" (include "tokenfactory.fullname" .) | quote }}]
  verbs: ["get"]
- apiGroups: ["tokenfactory.dev"]
  resources: ["tokenfactoryallowlists"]
  resourceNames: [{{ include "tokenfactory.fullname" . | quote }}]
  verbs: ["get"]
{{- if and .Values.admissionPolicy.enabled .Values.admissionPolicy.namespaceSelector (not (and .Values.watchNamespaces .Values.rbac.readNamespaces)) }}
# the binding's namespaceSelector: the operator reads a factory's Namespace labels to know whether the
# policy checked its author (pipeline/admission.py)
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.readCustomResourceDefinitions }}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- if and .Values.watchNamespaces .Values.rbac.readNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end -}}
