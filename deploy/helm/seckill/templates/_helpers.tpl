{{/* Names and labels. */}}
{{- define "seckill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "seckill.fullname" -}}
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

{{- define "seckill.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "seckill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "seckill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "seckill.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "seckill.componentLabels" -}}
{{ include "seckill.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "seckill.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where mounted secrets and TLS material live in every container. */}}
{{- define "seckill.secretsDir" -}}/etc/seckill/secrets{{- end -}}
{{- define "seckill.tlsDir" -}}/etc/seckill/tls{{- end -}}
{{- define "seckill.configDir" -}}/etc/seckill/config{{- end -}}

{{/* The pods' security context: non-root (the image's user 10001), files group-readable. */}}
{{- define "seckill.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "seckill.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Secret files. Each entry of a component's list is
  (dict "env" "SECKILL_TICKET_SECRET_FILE" "file" "ticket_secret" "ref" <{existingSecret, key}>)
and only entries whose ref names a Secret are used: the Secret's key is projected to
<secretsDir>/<file>, and the env var points at it.
*/}}
{{- define "seckill.secretEnv" -}}
{{- range . }}
{{- if .ref.existingSecret }}
- name: {{ .env }}
  value: {{ printf "%s/%s" (include "seckill.secretsDir" $) .file | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The projected volume of a list of secret entries (nothing if none is used). */}}
{{- define "seckill.secretVolume" -}}
{{- $used := list -}}
{{- range . }}{{ if .ref.existingSecret }}{{ $used = append $used . }}{{ end }}{{ end -}}
{{- if $used }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
    {{- range $used }}
      - secret:
          name: {{ .ref.existingSecret }}
          items:
            - key: {{ required (printf "the key of the Secret %s (for %s)" .ref.existingSecret .file) .ref.key }}
              path: {{ .file }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "seckill.secretMount" -}}
{{- $used := false -}}
{{- range . }}{{ if .ref.existingSecret }}{{ $used = true }}{{ end }}{{ end -}}
{{- if $used }}
- name: secrets
  mountPath: {{ include "seckill.secretsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
TLS material: (dict "ctx" $ "services" (list "redis" "kafka")) — each service whose
.Values.<service>.tls.enabled is projected to <tlsDir>/<service>/{ca,cert,key}.pem.
*/}}
{{- define "seckill.tlsVolume" -}}
{{- $ctx := .ctx -}}
{{- $on := list -}}
{{- range .services }}{{ if (index $ctx.Values . "tls").enabled }}{{ $on = append $on . }}{{ end }}{{ end -}}
{{- if $on }}
- name: tls
  projected:
    defaultMode: 0440
    sources:
    {{- range $on }}
    {{- $tls := index $ctx.Values . "tls" }}
      - secret:
          name: {{ required (printf "%s.tls.existingSecret is required with %s.tls.enabled" . .) $tls.existingSecret }}
          items:
            {{- if $tls.caKey }}
            - key: {{ $tls.caKey }}
              path: {{ . }}/ca.pem
            {{- end }}
            {{- if $tls.certKey }}
            - key: {{ $tls.certKey }}
              path: {{ . }}/cert.pem
            - key: {{ required (printf "%s.tls.keyKey is required with %s.tls.certKey" . .) $tls.keyKey }}
              path: {{ . }}/key.pem
            {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "seckill.tlsMount" -}}
{{- $ctx := .ctx -}}
{{- $on := false -}}
{{- range .services }}{{ if (index $ctx.Values . "tls").enabled }}{{ $on = true }}{{ end }}{{ end -}}
{{- if $on }}
- name: tls
  mountPath: {{ include "seckill.tlsDir" $ctx }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The settings of a service's TLS files, as a YAML map: (dict "ctx" $ "service" "redis"
"prefix" "redis") gives redis_ca_file, redis_cert_file, redis_key_file.
*/}}
{{- define "seckill.tlsSettings" -}}
{{- $tls := index .ctx.Values .service "tls" -}}
{{- $dir := printf "%s/%s" (include "seckill.tlsDir" .ctx) .service -}}
{{- if $tls.enabled }}
{{- if $tls.caKey }}
{{ .prefix }}_ca_file: {{ printf "%s/ca.pem" $dir | quote }}
{{- end }}
{{- if $tls.certKey }}
{{ .prefix }}_cert_file: {{ printf "%s/cert.pem" $dir | quote }}
{{ .prefix }}_key_file: {{ printf "%s/key.pem" $dir | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
kafka_extra of a component: (dict "ctx" $ "username" "<sasl user>") — the security
protocol, the SASL mechanism and user, the TLS files, then kafka.extra.
*/}}
{{- define "seckill.kafkaExtra" -}}
{{- $k := .ctx.Values.kafka -}}
{{- $parts := list -}}
{{- if $k.securityProtocol }}{{ $parts = append $parts (printf "security.protocol=%s" $k.securityProtocol) }}{{ end -}}
{{- if .username }}
{{- $parts = append $parts (printf "sasl.mechanisms=%s" (required "kafka.saslMechanism is required with a SASL user" $k.saslMechanism)) -}}
{{- $parts = append $parts (printf "sasl.username=%s" .username) -}}
{{- end -}}
{{- if $k.tls.enabled -}}
{{- $dir := printf "%s/kafka" (include "seckill.tlsDir" .ctx) -}}
{{- if $k.tls.caKey }}{{ $parts = append $parts (printf "ssl.ca.location=%s/ca.pem" $dir) }}{{ end -}}
{{- if $k.tls.certKey }}
{{- $parts = append $parts (printf "ssl.certificate.location=%s/cert.pem" $dir) -}}
{{- $parts = append $parts (printf "ssl.key.location=%s/key.pem" $dir) -}}
{{- end -}}
{{- end -}}
{{- if $k.extra }}{{ $parts = append $parts $k.extra }}{{ end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* A map of settings as TOML (`key = value`, values as JSON scalars: valid TOML). */}}
{{- define "seckill.toml" -}}
{{- range $k, $v := . }}
{{- if or (kindIs "map" $v) (kindIs "slice" $v) }}
{{- fail (printf "setting %s: a scalar is expected" $k) }}
{{- end }}
{{ $k }} = {{ toJson $v }}
{{- end }}
{{- end -}}

{{/* Settings that only come from Secrets: refused in gateway.config and writer.config. */}}
{{- define "seckill.refuseSecrets" -}}
{{- $where := .where -}}
{{- range $k, $v := .config }}
{{- if has (trimSuffix "_file" $k) (list "ticket_secret" "admin_token" "admin_tokens" "payment_webhook_secret" "redis_password" "kafka_password" "database_password" "ticket_keys") }}
{{- fail (printf "%s.%s: secrets come from existing Secrets (see values.yaml), never from values" $where $k) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The database URL of a role (no password: that comes from its file). */}}
{{- define "seckill.databaseUrl" -}}
{{- $pg := .ctx.Values.postgres -}}
{{- printf "postgres://%s@%s:%v/%s?sslmode=%s" .user $pg.host $pg.port $pg.database $pg.sslmode -}}
{{- end -}}

{{/* Chart-wide checks, run by every workload template. */}}
{{- define "seckill.validate" -}}
{{- $g := .Values.gateway -}}
{{- $interval := int .Values.balancer.healthCheckIntervalSeconds -}}
{{- $drain := int $g.drain.seconds -}}
{{- if le $interval 0 }}
{{- fail "balancer.healthCheckIntervalSeconds must be positive" }}
{{- end }}
{{- if le $drain $interval }}
{{- fail (printf "gateway.drain.seconds (%d) must be longer than balancer.healthCheckIntervalSeconds (%d): the balancer would still send buyers to a stopping gateway" $drain $interval) }}
{{- end }}
{{- if $g.terminationGracePeriodSeconds }}
{{- if le (int $g.terminationGracePeriodSeconds) (add $drain (int $g.drainSecs)) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed gateway.drain.seconds + gateway.drainSecs (%d)" $g.terminationGracePeriodSeconds (add $drain (int $g.drainSecs))) }}
{{- end }}
{{- end }}
{{- if not $g.secrets.ticketSecret.existingSecret }}
{{- fail "gateway.secrets.ticketSecret.existingSecret is required" }}
{{- end }}
{{- if not $g.secrets.paymentWebhookSecret.existingSecret }}
{{- fail "gateway.secrets.paymentWebhookSecret.existingSecret is required" }}
{{- end }}
{{- if not (or $g.secrets.adminTokens.existingSecret $g.secrets.adminToken.existingSecret) }}
{{- fail "gateway.secrets.adminTokens (or adminToken) .existingSecret is required" }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
{{- if not (and (hasPrefix "rediss://" .Values.redis.gatewayUrl) (hasPrefix "rediss://" .Values.redis.writerUrl)) }}
{{- fail "redis.tls.enabled needs rediss:// URLs (redis.gatewayUrl, redis.writerUrl)" }}
{{- end }}
{{- end }}
{{- if and .Values.postgres.tls.enabled (eq .Values.postgres.sslmode "disable") }}
{{- fail "postgres.tls.enabled contradicts postgres.sslmode=disable" }}
{{- end }}
{{- if not (has .Values.kafka.securityProtocol (list "" "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol %q: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if contains "password" (lower .Values.kafka.extra) }}
{{- fail "kafka.extra must not carry a password: use gateway.kafka.password / writer.kafka.password (existing Secrets)" }}
{{- end }}
{{- include "seckill.refuseSecrets" (dict "where" "gateway.config" "config" $g.config) }}
{{- include "seckill.refuseSecrets" (dict "where" "writer.config" "config" .Values.writer.config) }}
{{- end -}}

{{/* The gateways' preStop wait and grace period. */}}
{{- define "seckill.gatewayGrace" -}}
{{- $g := .Values.gateway -}}
{{- if $g.terminationGracePeriodSeconds -}}
{{- int $g.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add (int $g.drain.seconds) (int $g.drainSecs) 10 -}}
{{- end -}}
{{- end -}}
