#!/usr/bin/env python3
"""The seckill chart's manifest test: checks what `helm template` rendered.

    manifest_test.py --repo ROOT --values FILE [--values FILE …] RENDERED.yaml
    manifest_test.py --repo ROOT --values FILE … --self-test RENDERED.yaml

The values files are the ones the rendering was made with (the chart's values.yaml
first): the test reads the balancer's health-check interval from them. Each check
prints PASS or FAIL and what it found; the exit status is 1 when one fails.

--self-test breaks a copy of the rendering once per check (a claim template removed, a
probe moved, a password put inline …) and passes only when each check then fails: a
check that cannot fail is no check. Python 3 with PyYAML (Debian's python3-yaml).
"""

import argparse
import copy
import os
import re
import sys
import tomllib

try:
    import yaml
except ImportError:  # pragma: no cover - a set-up problem, said plainly
    sys.exit("manifest_test.py needs PyYAML: ./dev setup installs Debian's python3-yaml")

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.I)
# Settings whose value is a secret: never in a rendered config file.
SECRET_SETTINGS = {
    "ticket_secret", "admin_token", "payment_webhook_secret", "redis_password",
    "kafka_password", "database_password",
}


class Failed(Exception):
    """A check's failure, with what it found."""


# ------------------------------------------------------------------ the rendering
class Rendering:
    def __init__(self, docs, values, alerts_source, alerts_copy):
        self.docs = [d for d in docs if isinstance(d, dict)]
        self.values = values
        self.alerts_source = alerts_source
        self.alerts_copy = alerts_copy

    def kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def component(self, kind, component):
        return [
            d for d in self.kind(kind)
            if d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    def one(self, kind, component):
        found = self.component(kind, component)
        if len(found) != 1:
            raise Failed(f"expected one {kind} of component {component!r}, found {len(found)}")
        return found[0]

    def workloads(self):
        return [d for d in self.docs if d.get("kind") in WORKLOADS]

    def configmap_files(self):
        """(ConfigMap name, file name, text) of every ConfigMap's data."""
        for cm in self.kind("ConfigMap"):
            for name, text in (cm.get("data") or {}).items():
                yield cm["metadata"]["name"], name, text


def name_of(doc):
    return f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"


def pod_spec(doc):
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return spec
    if doc["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def pod_labels(doc):
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def containers(spec):
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def gateway_container(r):
    sts = r.one("StatefulSet", "gateway")
    for c in pod_spec(sts)["containers"]:
        if c["name"] == "gateway":
            return sts, c
    raise Failed(f"{name_of(sts)} has no container `gateway`")


def port_number(container, port):
    """A probe's or Service's port (a name or a number) as the container's number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    if isinstance(port, str) and port.isdigit():
        return int(port)
    raise Failed(f"port {port!r} is not one of container {container['name']}'s ports")


def gateway_ports(r):
    """(public, internal) container ports of the gateway, from its config file."""
    _, c = gateway_container(r)
    config = gateway_config(r)
    try:
        public = int(config["listen"].rsplit(":", 1)[1])
        internal = int(config["internal_listen"].rsplit(":", 1)[1])
    except (KeyError, ValueError, IndexError) as e:
        raise Failed(f"the gateway's config has no usable listen/internal_listen ({e})")
    numbers = {p["containerPort"] for p in c.get("ports") or []}
    if not {public, internal} <= numbers:
        raise Failed(f"container ports {sorted(numbers)} lack listen {public} or internal_listen {internal}")
    return public, internal


def config_file(r, container, name_hint):
    """The TOML config the container's SECKILL_CONFIG names, parsed."""
    env = env_of(container)
    path = env.get("SECKILL_CONFIG", {}).get("value")
    if not path:
        raise Failed(f"container {container['name']} has no SECKILL_CONFIG")
    base = os.path.basename(path)
    for cm, name, text in r.configmap_files():
        if name == base and name_hint in cm:
            return tomllib.loads(text)
    raise Failed(f"no ConfigMap holds {base} (SECKILL_CONFIG={path})")


def gateway_config(r):
    _, c = gateway_container(r)
    return config_file(r, c, "gateway")


def mounted_files(spec, container):
    """mount path → (kind, set of files or None for 'any file') of the container's volumes
    that hold Secrets: a secret volume, or a projected one whose sources are all Secrets."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    out = {}
    for m in container.get("volumeMounts") or []:
        v = volumes.get(m["name"])
        if v is None:
            continue
        if "secret" in v:
            items = v["secret"].get("items")
            out[m["mountPath"]] = None if not items else {i["path"] for i in items}
        elif "projected" in v:
            sources = v["projected"].get("sources") or []
            if sources and all("secret" in s for s in sources):
                files = set()
                for s in sources:
                    items = s["secret"].get("items")
                    if not items:
                        files = None
                        break
                    files |= {i["path"] for i in items}
                out[m["mountPath"]] = files
    return out


def show(mounts):
    return "; ".join(f"{m}: {'any' if f is None else ', '.join(sorted(f))}" for m, f in sorted(mounts.items())) or "none"


def mounted_path(mounts, path):
    """The secret mount `path` is a projected file of, or None."""
    for mount, files in mounts.items():
        if under(path, mount) and path != mount:
            rel = path[len(mount.rstrip("/")) + 1:]
            if files is None or rel in files:
                return mount
    return None


# ------------------------------------------------------------------ the checks
def check_spool(r):
    sts, c = gateway_container(r)
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
    if not claims:
        raise Failed(f"{name_of(sts)} has no volumeClaimTemplates (the spool must outlive the pod)")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or [] if m["name"] in claims}
    if not mounts:
        raise Failed(f"no claim template of {sorted(claims)} is mounted in container gateway")
    spool = env_of(c).get("SECKILL_SPOOL_DIR", {}).get("value")
    if not spool:
        raise Failed("container gateway has no SECKILL_SPOOL_DIR")
    on = [n for n, p in mounts.items() if under(spool, p)]
    if not on:
        raise Failed(f"SECKILL_SPOOL_DIR={spool} is not on a claim ({mounts})")
    # The image's default would win over the config file's audit_log: a variable, on a claim.
    audit = env_of(c).get("SECKILL_AUDIT_LOG", {}).get("value")
    if not audit:
        raise Failed("container gateway has no SECKILL_AUDIT_LOG")
    if not any(under(audit, p) for p in mounts.values()):
        raise Failed(f"SECKILL_AUDIT_LOG={audit} is not on a claim ({mounts})")
    replicas = sts["spec"].get("replicas")
    return (f"{name_of(sts)} ({replicas} replicas): claim template `{on[0]}` mounted at "
            f"{mounts[on[0]]}, SECKILL_SPOOL_DIR={spool} and SECKILL_AUDIT_LOG={audit} on it")


def check_gateway_probes(r):
    _, c = gateway_container(r)
    public, _ = gateway_ports(r)
    found = []
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet")
        if not get:
            raise Failed(f"container gateway has no {probe} over HTTP")
        port = port_number(c, get.get("port"))
        if get.get("path") != path or port != public:
            raise Failed(f"{probe} is GET {get.get('path')} on port {port}; expected {path} on the public port {public}")
        found.append(f"{probe} GET {path} on {public}")
    return "gateway " + ", ".join(found)


def check_writer_probes(r):
    dep = r.one("Deployment", "writer")
    c = pod_spec(dep)["containers"][0]
    get = (c.get("readinessProbe") or {}).get("httpGet")
    if not get or get.get("path") != "/readyz":
        raise Failed(f"{name_of(dep)}: readinessProbe {get}; expected GET /readyz")
    port = port_number(c, get["port"])
    listen = config_file(r, c, "writer").get("metrics_listen", "")
    if not listen.endswith(f":{port}"):
        raise Failed(f"readiness on port {port}, but metrics_listen is {listen!r}")
    live = (c.get("livenessProbe") or {}).get("httpGet") or {}
    return (f"{name_of(dep)} ({dep['spec'].get('replicas')} replicas): readiness GET /readyz on "
            f"{port} (metrics_listen {listen}), liveness GET {live.get('path')}")


def prestop_seconds(c):
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"]), f"sleep action {pre['sleep']['seconds']}s"
    if "exec" in pre:
        cmd = pre["exec"].get("command") or []
        words = " ".join(str(w) for w in cmd)
        m = re.search(r"(?:^|[\s/])sleep\s+(\d+)", words)
        if m:
            return int(m.group(1)), f"exec `{words}`"
        raise Failed(f"preStop exec `{words}` does not sleep")
    raise Failed("container gateway has no preStop hook")


def check_prestop(r):
    sts, c = gateway_container(r)
    interval = int(r.values["balancer"]["healthCheckIntervalSeconds"])
    wait, how = prestop_seconds(c)
    if wait <= interval:
        raise Failed(f"preStop {how} is not longer than the balancer's check interval {interval}s")
    env = env_of(c)
    if "SECKILL_DRAIN_SECS" in env:
        drain, src = int(env["SECKILL_DRAIN_SECS"]["value"]), "SECKILL_DRAIN_SECS"
    else:
        drain, src = int(gateway_config(r).get("drain_secs", 10)), "drain_secs"
    grace = pod_spec(sts).get("terminationGracePeriodSeconds", 30)
    if grace <= wait + drain:
        raise Failed(f"terminationGracePeriodSeconds {grace} is not more than preStop {wait} + {src} {drain}")
    return (f"preStop {how} > balancer interval {interval}s; terminationGracePeriodSeconds "
            f"{grace} > preStop {wait} + {src} {drain}")


def check_resources(r):
    seen = []
    for w in r.workloads():
        for c in containers(pod_spec(w)):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if not (res.get(kind) or {}).get(what):
                        raise Failed(f"{name_of(w)} container {c['name']} has no resources.{kind}.{what}")
            seen.append(f"{c['name']} ({res['requests']['cpu']}/{res['requests']['memory']} .. "
                        f"{res['limits']['cpu']}/{res['limits']['memory']})")
    if not seen:
        raise Failed("no workload rendered")
    return f"{len(seen)} containers with cpu and memory requests and limits: " + ", ".join(seen)


def check_security(r):
    seen = []
    for w in r.workloads():
        spec = pod_spec(w)
        pod = spec.get("securityContext") or {}
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            problems = []
            if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
                problems.append("runAsNonRoot")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation: false")
            if sc.get("privileged"):
                problems.append("not privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities drop ALL")
            if problems:
                raise Failed(f"{name_of(w)} container {c['name']} lacks " + ", ".join(problems))
            seen.append(c["name"])
    if not seen:
        raise Failed("no workload rendered")
    return (f"{len(seen)} containers ({', '.join(seen)}): non-root, read-only root, "
            "no privilege escalation, all capabilities dropped")


def gateway_services(r):
    sts, c = gateway_container(r)
    labels = pod_labels(sts)
    return c, [s for s in r.kind("Service") if selects(s["spec"].get("selector"), labels)]


def service_targets(c, svc):
    return [port_number(c, p.get("targetPort", p.get("port"))) for p in svc["spec"].get("ports") or []]


def check_internal_port(r):
    c, services = gateway_services(r)
    _, internal = gateway_ports(r)
    found = []
    for s in services:
        if internal in service_targets(c, s):
            kind = s["spec"].get("type", "ClusterIP")
            if kind in ("LoadBalancer", "NodePort") or s["spec"].get("externalIPs"):
                raise Failed(f"{name_of(s)} exposes the internal port {internal} as {kind}")
            head = " headless" if s["spec"].get("clusterIP") == "None" else ""
            found.append(f"{name_of(s)} ({kind}{head})")
    for ing in r.kind("Ingress"):
        raise Failed(f"{name_of(ing)}: the chart renders no Ingress; one might reach the internal port")
    if not found:
        raise Failed(f"no Service carries the internal port {internal} (Prometheus and operators need one)")
    return f"internal port {internal} only on " + ", ".join(found)


def check_public_service(r):
    c, services = gateway_services(r)
    public, internal = gateway_ports(r)
    carrying = [s for s in services if public in service_targets(c, s)]
    if not carrying:
        raise Failed(f"no Service carries the gateway's public port {public}")
    out = []
    for s in carrying:
        targets = service_targets(c, s)
        if internal in targets:
            raise Failed(f"public {name_of(s)} also carries the internal port {internal}")
        out.append(f"{name_of(s)} ({s['spec'].get('type', 'ClusterIP')}) → {targets}")
    return "public: " + ", ".join(out) + f"; internal port {internal} not on it"


def check_pdbs(r):
    out = []
    for kind, component in (("StatefulSet", "gateway"), ("Deployment", "writer")):
        w = r.one(kind, component)
        labels = pod_labels(w)
        pdbs = [p for p in r.kind("PodDisruptionBudget")
                if selects(p["spec"].get("selector", {}).get("matchLabels"), labels)]
        if not pdbs:
            raise Failed(f"no PodDisruptionBudget selects {name_of(w)}'s pods")
        p = pdbs[0]["spec"]
        budget = ", ".join(f"{k} {p[k]}" for k in ("minAvailable", "maxUnavailable") if k in p)
        out.append(f"{name_of(pdbs[0])} for {component} ({budget})")
    return "; ".join(out)


def check_secrets(r):
    for s in r.kind("Secret"):
        if s.get("data") or s.get("stringData"):
            raise Failed(f"{name_of(s)} is rendered with data: secrets must come from existing Secrets")
    files, refs = [], []
    for w in r.workloads():
        spec = pod_spec(w)
        for c in containers(spec):
            mounts = mounted_files(spec, c)
            for e in c.get("env") or []:
                name = e["name"]
                if not SECRET_NAME.search(name):
                    continue
                if "valueFrom" in e:
                    if "secretKeyRef" not in e["valueFrom"]:
                        raise Failed(f"{name_of(w)} env {name} comes from {list(e['valueFrom'])}, not a Secret")
                    refs.append(name)
                    continue
                if not name.endswith("_FILE"):
                    raise Failed(f"{name_of(w)} container {c['name']} carries {name} inline")
                path = e.get("value", "")
                if not mounted_path(mounts, path):
                    raise Failed(f"{name_of(w)} {name}={path} is not a file of a mounted Secret ({show(mounts)})")
                files.append(f"{c['name']}:{name}")
    for cm, name, text in r.configmap_files():
        if not name.endswith(".toml"):
            continue
        settings = tomllib.loads(text)
        for key in SECRET_SETTINGS & settings.keys():
            if settings[key] != "":
                raise Failed(f"ConfigMap {cm} {name} sets the secret {key}")
        if "password" in str(settings.get("kafka_extra", "")).lower():
            raise Failed(f"ConfigMap {cm} {name}: kafka_extra carries a password")
        for key, value in settings.items():
            if isinstance(value, str) and re.search(r"://[^/@\s]*:[^/@\s]*@", value):
                raise Failed(f"ConfigMap {cm} {name}: {key} has a password in its URL")
    if not files:
        raise Failed("no secret is passed at all (the gateway needs its ticket and webhook secrets)")
    return (f"no Secret rendered; {len(files)} secret env vars are *_FILE paths of mounted Secrets "
            f"({', '.join(files)}), {len(refs)} secretKeyRef; no secret in the config files")


def check_tls_files(r):
    """Every TLS file a setting names is a file of a mounted Secret."""
    seen = []
    for w in r.workloads():
        spec = pod_spec(w)
        for c in containers(spec):
            mounts = mounted_files(spec, c)
            paths = {}
            env = env_of(c)
            for name, e in env.items():
                if re.fullmatch(r"SECKILL_\w+_(CA|CERT|KEY)_FILE", name):
                    paths[name] = e.get("value", "")
            if "SECKILL_CONFIG" in env:
                hint = "gateway" if c["name"] == "gateway" else "writer"
                settings = config_file(r, c, hint)
                for key, value in settings.items():
                    if re.fullmatch(r"\w+_(ca|cert|key)_file", key) and value:
                        paths[key] = value
                for part in str(settings.get("kafka_extra", "")).split(","):
                    k, _, v = part.partition("=")
                    if k.strip().startswith("ssl.") and k.strip().endswith(".location"):
                        paths[k.strip()] = v.strip()
            for what, path in paths.items():
                if not mounted_path(mounts, path):
                    raise Failed(f"{name_of(w)} {c['name']}: {what}={path} is not a file of a mounted Secret")
                seen.append(f"{c['name']}:{what}")
    return (f"{len(seen)} TLS files, each a file of a mounted Secret: " + ", ".join(seen)
            if seen else "no TLS file configured (TLS off)")


def check_migration(r):
    jobs = r.component("Job", "migrate")
    if not r.values.get("migration", {}).get("enabled", True):
        if jobs:
            raise Failed("migration.enabled is false but a migration Job is rendered")
        return "migration off: no Job (the writers migrate at start)"
    if len(jobs) != 1:
        raise Failed(f"expected one migration Job, found {len(jobs)}")
    job = jobs[0]
    hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
    if not {"pre-install", "pre-upgrade"} <= hooks:
        raise Failed(f"{name_of(job)} hooks {sorted(hooks)}; expected pre-install and pre-upgrade")
    c = pod_spec(job)["containers"][0]
    cmd = (c.get("command") or []) + (c.get("args") or [])
    if "migrate" not in cmd:
        raise Failed(f"{name_of(job)} runs {cmd}, not `order-writer migrate`")
    writer = r.one("Deployment", "writer")
    wc = pod_spec(writer)["containers"][0]
    if config_file(r, wc, "writer").get("migrate") is not False:
        raise Failed("the writers still migrate at start (migrate is not false) while the Job does it")
    return f"{name_of(job)} hook {','.join(sorted(hooks))} runs {' '.join(cmd)}; writers start with migrate = false"


def check_alerts_copy(r):
    if r.alerts_copy != r.alerts_source:
        a, b = r.alerts_source.splitlines(), r.alerts_copy.splitlines()
        line = next((i + 1 for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)) + 1)
        raise Failed(f"deploy/helm/seckill/files/alerts.yml differs from runbooks/alerts.yml (from line {line}): "
                     "cp runbooks/alerts.yml deploy/helm/seckill/files/alerts.yml")
    return f"files/alerts.yml is runbooks/alerts.yml byte for byte ({len(r.alerts_source)} bytes)"


def check_prometheus_rule(r):
    rules = r.kind("PrometheusRule")
    if not rules:
        if r.values.get("monitoring", {}).get("prometheusRule", {}).get("enabled"):
            raise Failed("monitoring.prometheusRule.enabled but no PrometheusRule rendered")
        return "no PrometheusRule (monitoring.prometheusRule.enabled is off)"
    want = yaml.safe_load(r.alerts_source)["groups"]
    got = rules[0].get("spec", {}).get("groups")
    if got != want:
        raise Failed(f"{name_of(rules[0])}'s groups differ from runbooks/alerts.yml's (templated on the way?)")
    n = sum(len(g.get("rules", [])) for g in got)
    templated = sum("{{ $labels." in str(x) for g in got for x in g.get("rules", []))
    monitors = [name_of(m) for m in r.kind("ServiceMonitor")]
    return (f"{name_of(rules[0])}: {n} rules equal to runbooks/alerts.yml ({templated} with Prometheus "
            f"templates kept); {', '.join(monitors) or 'no ServiceMonitor'}")


CHECKS = [
    ("gateway-spool", check_spool),
    ("gateway-probes", check_gateway_probes),
    ("writer-probes", check_writer_probes),
    ("gateway-prestop", check_prestop),
    ("resources", check_resources),
    ("security-context", check_security),
    ("internal-port", check_internal_port),
    ("public-service", check_public_service),
    ("pdbs", check_pdbs),
    ("secrets", check_secrets),
    ("tls-files", check_tls_files),
    ("migration", check_migration),
    ("alerts-copy", check_alerts_copy),
    ("prometheus-rule", check_prometheus_rule),
]


def run_checks(r, quiet=False):
    failed = {}
    for name, check in CHECKS:
        try:
            found = check(r)
            if not quiet:
                print(f"PASS {name}: {found}")
        except (Failed, KeyError, TypeError, ValueError, IndexError, tomllib.TOMLDecodeError) as e:
            failed[name] = f"{type(e).__name__ + ': ' if not isinstance(e, Failed) else ''}{e}"
            if not quiet:
                print(f"FAIL {name}: {failed[name]}")
    return failed


# ------------------------------------------------------------------ the self-test
def _gw(r):
    return gateway_container(r)


def _env(c, name, value):
    for e in c.setdefault("env", []):
        if e["name"] == name:
            e["value"] = value
            return
    c["env"].append({"name": name, "value": value})


def _service(r, which):
    c, services = gateway_services(r)
    _, internal = gateway_ports(r)
    for s in services:
        has = internal in service_targets(c, s)
        if has == (which == "internal"):
            return s
    raise Failed(f"no {which} service")


def _writer(r):
    return pod_spec(r.one("Deployment", "writer"))["containers"][0]


def _set_toml(r, hint, key, value):
    for cm in r.kind("ConfigMap"):
        if hint in cm["metadata"]["name"]:
            for name in cm["data"]:
                if name.endswith(".toml"):
                    lines = [l for l in cm["data"][name].splitlines() if not l.startswith(f"{key} =")]
                    cm["data"][name] = "\n".join(lines + [f'{key} = "{value}"']) + "\n"
                    return


def _break_prometheus_rule(r):
    rule = r.kind("PrometheusRule")[0]
    first = rule["spec"]["groups"][0]["rules"][0]
    first["annotations"]["summary"] = first["annotations"]["summary"].replace("{{ $labels.instance }}", "")


def _drop(r, kind):
    r.docs = [d for d in r.docs if d.get("kind") != kind]


MUTATIONS = [
    ("gateway-spool", "no claim templates", lambda r: _gw(r)[0]["spec"].pop("volumeClaimTemplates")),
    ("gateway-spool", "SECKILL_SPOOL_DIR off the volume", lambda r: _env(_gw(r)[1], "SECKILL_SPOOL_DIR", "/tmp/spool")),
    ("gateway-spool", "SECKILL_AUDIT_LOG off the volume", lambda r: _env(_gw(r)[1], "SECKILL_AUDIT_LOG", "/tmp/audit.jsonl")),
    ("gateway-probes", "readiness on /healthz", lambda r: _gw(r)[1]["readinessProbe"]["httpGet"].update(path="/healthz")),
    ("gateway-probes", "liveness on the internal port", lambda r: _gw(r)[1]["livenessProbe"]["httpGet"].update(port="internal")),
    ("writer-probes", "writer readiness on /healthz", lambda r: _writer(r)["readinessProbe"]["httpGet"].update(path="/healthz")),
    ("gateway-prestop", "no preStop", lambda r: _gw(r)[1]["lifecycle"].pop("preStop")),
    ("gateway-prestop", "preStop = the check interval",
     lambda r: _gw(r)[1]["lifecycle"].update(preStop={"sleep": {"seconds": int(r.values["balancer"]["healthCheckIntervalSeconds"])}})),
    ("gateway-prestop", "grace period = preStop + drain",
     lambda r: pod_spec(_gw(r)[0]).update(terminationGracePeriodSeconds=prestop_seconds(_gw(r)[1])[0]
                                           + int(env_of(_gw(r)[1])["SECKILL_DRAIN_SECS"]["value"]))),
    ("resources", "writer without a memory limit", lambda r: _writer(r)["resources"]["limits"].pop("memory")),
    ("resources", "migration without cpu requests",
     lambda r: pod_spec(r.component("Job", "migrate")[0])["containers"][0]["resources"]["requests"].pop("cpu")),
    ("security-context", "writable root filesystem", lambda r: _gw(r)[1]["securityContext"].update(readOnlyRootFilesystem=False)),
    ("security-context", "capabilities kept", lambda r: _writer(r)["securityContext"].pop("capabilities")),
    ("internal-port", "internal Service as NodePort", lambda r: _service(r, "internal")["spec"].update(type="NodePort", clusterIP=None)),
    ("internal-port", "internal Service as LoadBalancer", lambda r: _service(r, "internal")["spec"].update(type="LoadBalancer")),
    ("public-service", "internal port on the public Service",
     lambda r: _service(r, "public")["spec"]["ports"].append({"name": "admin", "port": 9100, "targetPort": "internal"})),
    ("pdbs", "no PodDisruptionBudget", lambda r: _drop(r, "PodDisruptionBudget")),
    ("secrets", "a password inline", lambda r: _gw(r)[1]["env"].append({"name": "SECKILL_REDIS_PASSWORD", "value": "hunter2"})),
    ("secrets", "a token file outside any Secret", lambda r: _env(_gw(r)[1], "SECKILL_ADMIN_TOKENS_FILE", "/tmp/admin_tokens")),
    ("secrets", "a Secret from values",
     lambda r: r.docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"p": "hunter2"}})),
    ("secrets", "a secret in the config file", lambda r: _set_toml(r, "gateway", "ticket_secret", "hunter2")),
    ("tls-files", "a CA file that is not mounted", lambda r: _set_toml(r, "writer", "database_ca_file", "/etc/ssl/nowhere.pem")),
    ("migration", "the Job not a pre-upgrade hook",
     lambda r: r.component("Job", "migrate")[0]["metadata"]["annotations"].update({"helm.sh/hook": "pre-install"})),
    ("alerts-copy", "the copy behind the source", lambda r: setattr(r, "alerts_copy", r.alerts_copy + "# stale\n")),
    ("prometheus-rule", "a rule templated by Helm", _break_prometheus_rule),
]


def self_test(r):
    if not r.kind("PrometheusRule") or not r.component("Job", "migrate"):
        print("FAIL self-test: run it on a rendering with every optional object (ci-values.yaml)")
        return 1
    base = run_checks(r, quiet=True)
    if base:
        print(f"FAIL self-test: the rendering itself fails {', '.join(base)}: the self-test needs a passing one")
        print("self-test: 0 passed, 1 failed")
        return 1
    bad = passed = 0
    covered = set()
    for check, what, mutate in MUTATIONS:
        broken = copy.deepcopy(r)
        try:
            mutate(broken)
        except (Failed, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            bad += 1
            print(f"FAIL self-test {check}: could not break the rendering ({what}): {type(e).__name__}: {e}")
            continue
        failed = run_checks(broken, quiet=True)
        if check in failed:
            covered.add(check)
            passed += 1
            print(f"PASS self-test {check} fails on {what}: {failed[check]}")
        else:
            bad += 1
            print(f"FAIL self-test {check} still passes on {what}")
    missing = [name for name, _ in CHECKS if name not in covered]
    if missing:
        bad += 1
        print(f"FAIL self-test: no broken rendering for {', '.join(missing)}")
    print(f"self-test: {passed} passed, {bad} failed")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="the repository's root (runbooks/alerts.yml)")
    ap.add_argument("--chart", help="the chart (default: <repo>/deploy/helm/seckill)")
    ap.add_argument("--values", action="append", default=[], help="values files, in order")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("rendered")
    a = ap.parse_args()
    chart = a.chart or os.path.join(a.repo, "deploy", "helm", "seckill")
    values = {}
    for f in [os.path.join(chart, "values.yaml")] + a.values:
        with open(f) as fh:
            values = deep_merge(values, yaml.safe_load(fh) or {})
    with open(a.rendered) as fh:
        docs = list(yaml.safe_load_all(fh))
    with open(os.path.join(a.repo, "runbooks", "alerts.yml")) as fh:
        source = fh.read()
    with open(os.path.join(chart, "files", "alerts.yml")) as fh:
        copy_text = fh.read()
    r = Rendering(docs, values, source, copy_text)
    if a.self_test:
        return self_test(r)
    failed = run_checks(r)
    print(f"manifests: {len(CHECKS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
