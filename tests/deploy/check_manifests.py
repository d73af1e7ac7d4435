#!/usr/bin/env python3
"""Keeps deploy/ valid, offline, in a few seconds (registered with ctest; see deploy/README.md).

  tests/deploy/check_manifests.py [--root DIR]     (default: AIJOBS_SOURCE_DIR, or this checkout)

Checks:
  - yamllint on deploy/ (tests/deploy/yamllint.yaml);
  - every kustomization names files that exist, and every manifest is in one (but examples);
  - Deployments: the selector matches the pod template's labels;
  - every Service selector, PodDisruptionBudget, NetworkPolicy podSelector (and its
    same-namespace peers) matches the pods of a Deployment; HPA / ScaledObject targets exist
    and no Deployment has two autoscalers;
  - Service targetPorts and probe ports (httpGet, tcpSocket, grpc) name or number a declared
    containerPort; NetworkPolicy ports exist on the pods they lead to;
  - every ConfigMap / Secret (and key) referenced is declared in the manifests (the Secret by
    deploy/k8s/secret.example.yaml);
  - terminationGracePeriodSeconds covers preStop + --shutdown_grace_ms / --drain_timeout_ms;
  - compose: services, volumes and the scheduler address line up;
  - the Dockerfile's build stage installs every build package of dev's PACKAGES;
  - with AIJOBS_BIN_DIR (ctest sets it): every flag the manifests and compose pass to a binary
    is one that binary's --help lists;
  - with kubectl on PATH: `kubectl kustomize` renders each kustomization.
Exit status 1 with every problem listed, 0 when all hold.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:  # Debian: python3-yaml (in dev's PACKAGES)
    print("check_manifests: needs PyYAML (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(1)

BINARIES = ["aijobs-scheduler", "aijobs-worker", "aijobs-gateway", "aijobsctl", "aijobs-load"]
# dev's PACKAGES that only run tests or tools; everything else is needed to build the image.
NOT_FOR_THE_IMAGE = {
    "clang", "ccache", "postgresql-15", "postgresql-client-15", "openssl", "procps", "iproute2",
    "util-linux", "pgbouncer", "chromium", "fonts-dejavu-core", "nodejs", "yamllint",
    "python3-yaml",
}

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def matches(selector, labels):
    """A label selector (matchLabels / matchExpressions, or a plain map) against labels."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for e in selector.get("matchExpressions") or []:
            key, op, values = e["key"], e["operator"], e.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def selector_is_empty(selector):
    return not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions")


class Manifests:
    def __init__(self, root):
        self.root = root
        self.k8s = os.path.join(root, "deploy", "k8s")
        self.objects = []  # (file, doc)
        self.kustomized = set()

    def load(self):
        for dirpath, _, files in os.walk(self.k8s):
            for name in sorted(files):
                if not name.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self.root)
                try:
                    docs = load_docs(path)
                except yaml.YAMLError as e:
                    problem(rel, f"does not parse: {e}")
                    continue
                if name == "kustomization.yaml":
                    self.check_kustomization(path, docs[0] if docs else {})
                    continue
                for d in docs:
                    if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                        problem(rel, "a document without kind/apiVersion")
                        continue
                    if not d.get("metadata", {}).get("name"):
                        problem(rel, f"a {d['kind']} without metadata.name")
                        continue
                    self.objects.append((rel, d))
        for rel in sorted({f for f, _ in self.objects}):
            if rel not in self.kustomized and not os.path.basename(rel).endswith(
                    ".example.yaml"):
                problem(rel, "is in no kustomization.yaml (it would never be applied)")

    def check_kustomization(self, path, k):
        rel = os.path.relpath(path, self.root)
        base = os.path.dirname(path)
        for r in k.get("resources") or []:
            target = os.path.normpath(os.path.join(base, r))
            if os.path.isdir(target):
                if not os.path.exists(os.path.join(target, "kustomization.yaml")):
                    problem(rel, f"resource {r} is a directory without kustomization.yaml")
            elif not os.path.isfile(target):
                problem(rel, f"resource {r} does not exist")
            else:
                self.kustomized.add(os.path.relpath(target, self.root))

    def of_kind(self, kind):
        return [(f, d) for f, d in self.objects if d["kind"] == kind]

    def named(self, kind, name):
        for f, d in self.objects:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        return None

    def workloads(self):
        """(file, deployment, pod template labels, pod spec) of every Deployment."""
        out = []
        for f, d in self.of_kind("Deployment"):
            tpl = d.get("spec", {}).get("template", {})
            out.append((f, d, tpl.get("metadata", {}).get("labels") or {}, tpl.get("spec") or {}))
        return out

    def pods_matching(self, selector):
        return [w for w in self.workloads() if matches(selector, w[2])]


def container_ports(pod_spec):
    names, numbers = set(), set()
    for c in pod_spec.get("containers") or []:
        for p in c.get("ports") or []:
            numbers.add(p.get("containerPort"))
            if p.get("name"):
                names.add(p["name"])
    return names, numbers


def port_declared(port, names, numbers):
    return port in names if isinstance(port, str) else port in numbers


def flags_of(args):
    """--name from --name=value / --name value in an argument list."""
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


def check_k8s(m, flag_uses):
    workloads = m.workloads()
    for f, d, labels, spec in workloads:
        name = d["metadata"]["name"]
        sel = d.get("spec", {}).get("selector")
        if not sel or not matches(sel, labels):
            problem(f, f"Deployment {name}: spec.selector does not match its pod labels")
        names, numbers = container_ports(spec)
        for c in spec.get("containers") or []:
            where = f"{f}: Deployment {name} container {c.get('name')}"
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_kind)
                if not probe:
                    continue
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in probe:
                        port = probe[action].get("port")
                        if action == "grpc" and not isinstance(port, int):
                            problem(where, f"{probe_kind}.grpc.port must be a number")
                        elif not port_declared(port, names, numbers):
                            problem(where, f"{probe_kind} port {port} is not a containerPort")
            check_config_refs(m, f"{where}", c, spec)
            args = list(c.get("command") or []) + list(c.get("args") or [])
            if args and args[0] in BINARIES:
                flag_uses.append((where, args[0], flags_of(args[1:])))
                check_grace(where, args, c, spec)
            elif args:
                problem(where, f"the command starts with {args[0]}, not one of {BINARIES}")
    for f, d in m.of_kind("Service"):
        name = d["metadata"]["name"]
        sel = d.get("spec", {}).get("selector")
        pods = m.pods_matching(sel) if sel else []
        if not pods:
            problem(f, f"Service {name}: selector {sel} matches no Deployment's pods")
            continue
        for p in d.get("spec", {}).get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            for wf, w, _, spec in pods:
                if not port_declared(target, *container_ports(spec)):
                    problem(f, f"Service {name}: targetPort {target} is not a containerPort of "
                               f"Deployment {w['metadata']['name']}")
    for f, d in m.of_kind("PodDisruptionBudget"):
        if not m.pods_matching(d.get("spec", {}).get("selector")):
            problem(f, f"PodDisruptionBudget {d['metadata']['name']}: selector matches no pods")
    scaled = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for f, d in m.of_kind(kind):
            ref = d.get("spec", {}).get("scaleTargetRef", {})
            target = ref.get("name")
            if ref.get("kind", "Deployment") != "Deployment" or not m.named("Deployment", target):
                problem(f, f"{kind} {d['metadata']['name']}: no Deployment {target}")
            if target in scaled:
                problem(f, f"{kind} {d['metadata']['name']}: Deployment {target} is already "
                           f"scaled by {scaled[target]}")
            scaled[target] = f"{kind} {d['metadata']['name']}"
    for f, d in m.of_kind("TriggerAuthentication"):
        for ref in d.get("spec", {}).get("secretTargetRef") or []:
            check_secret_key(m, f"{f}: TriggerAuthentication {d['metadata']['name']}",
                             ref.get("name"), ref.get("key"), False)
    for f, d in m.of_kind("ScaledObject"):
        for t in d.get("spec", {}).get("triggers") or []:
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref and not m.named("TriggerAuthentication", ref):
                problem(f, f"ScaledObject {d['metadata']['name']}: no TriggerAuthentication {ref}")
            if t.get("type") == "postgresql":
                q = (t.get("metadata") or {}).get("query", "")
                if not re.search(r"\bstate\s*=\s*1\b", q):
                    problem(f, "the postgresql trigger's query does not count state = 1 (the "
                               "partial index jobs_queue)")
    check_network_policies(m)


def check_config_refs(m, where, c, spec):
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            r = vf["secretKeyRef"]
            check_secret_key(m, where, r.get("name"), r.get("key"), r.get("optional", False))
        if "configMapKeyRef" in vf:
            r = vf["configMapKeyRef"]
            check_configmap_key(m, where, r.get("name"), r.get("key"), r.get("optional", False))
    for e in c.get("envFrom") or []:
        if "secretRef" in e:
            check_secret_key(m, where, e["secretRef"].get("name"), None, False)
        if "configMapRef" in e:
            check_configmap_key(m, where, e["configMapRef"].get("name"), None, False)
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for vm in c.get("volumeMounts") or []:
        if vm.get("name") not in volumes:
            problem(where, f"volumeMount {vm.get('name')} has no volume")
    for v in spec.get("volumes") or []:
        if "secret" in v:
            s = v["secret"]
            keys = [i.get("key") for i in s.get("items") or []] or [None]
            for k in keys:
                check_secret_key(m, where, s.get("secretName"), k, s.get("optional", False))
        if "configMap" in v:
            s = v["configMap"]
            keys = [i.get("key") for i in s.get("items") or []] or [None]
            for k in keys:
                check_configmap_key(m, where, s.get("name"), k, s.get("optional", False))


def check_secret_key(m, where, name, key, optional):
    s = m.named("Secret", name)
    if s is None:
        problem(where, f"Secret {name} is declared nowhere in deploy/k8s (not even as an example)")
    elif key and key not in (s.get("data") or {}) and key not in (s.get("stringData") or {}):
        if not optional:
            problem(where, f"Secret {name} has no key {key}")


def check_configmap_key(m, where, name, key, optional):
    c = m.named("ConfigMap", name)
    if c is None:
        problem(where, f"ConfigMap {name} is declared nowhere in deploy/k8s")
    elif key and key not in (c.get("data") or {}) and not optional:
        problem(where, f"ConfigMap {name} has no key {key}")


def prestop_sleep(c):
    cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    if cmd and os.path.basename(cmd[0]) == "sleep":
        return float(cmd[1])
    sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
    return float(sleep.get("seconds", 0)) if sleep else 0.0


def flag_value(args, name, default):
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def check_grace(where, args, c, spec):
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = prestop_sleep(c)
    if args[0] == "aijobs-scheduler":
        # Shutdown: health NOT_SERVING, drain for --shutdown_grace_ms, then 2 s to close.
        need = pre + int(flag_value(args, "shutdown_grace_ms", 10000)) / 1000 + 2
    elif args[0] == "aijobs-worker":
        need = pre + int(flag_value(args, "drain_timeout_ms", 30000)) / 1000
    elif args[0] == "aijobs-gateway":
        need = pre + 5  # open event streams are ended within 5 s
    else:
        return
    if grace <= need:
        problem(where, f"terminationGracePeriodSeconds {grace} does not cover preStop + drain "
                       f"({need:g} s): the pod would be killed while draining")


def check_network_policies(m):
    for f, d in m.of_kind("NetworkPolicy"):
        name = d["metadata"]["name"]
        spec = d.get("spec", {})
        selected = m.pods_matching(spec.get("podSelector") or {}) if not selector_is_empty(
            spec.get("podSelector")) else m.workloads()
        if not selected:
            problem(f, f"NetworkPolicy {name}: podSelector matches no pods")
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                check_peer(m, f, name, peer, "from")
            for p in rule.get("ports") or []:
                for wf, w, _, pspec in selected:
                    if not port_declared(p.get("port"), *container_ports(pspec)):
                        problem(f, f"NetworkPolicy {name}: ingress port {p.get('port')} is not a "
                                   f"containerPort of {w['metadata']['name']}")
        for rule in spec.get("egress") or []:
            peers = []
            for peer in rule.get("to") or []:
                peers += check_peer(m, f, name, peer, "to")
            for p in rule.get("ports") or []:
                for wf, w, _, pspec in peers:
                    if not port_declared(p.get("port"), *container_ports(pspec)):
                        problem(f, f"NetworkPolicy {name}: egress port {p.get('port')} is not a "
                                   f"containerPort of {w['metadata']['name']}")


def check_peer(m, f, name, peer, direction):
    """Same-namespace podSelector peers must select pods of ours; returns them."""
    if "podSelector" in peer and "namespaceSelector" not in peer:
        pods = m.pods_matching(peer["podSelector"])
        if not pods:
            problem(f, f"NetworkPolicy {name}: {direction} podSelector "
                       f"{peer['podSelector']} matches no pods")
        return pods
    return []


def compose_commands(service):
    """The binary invocations in a compose service's command: (binary, args) pairs."""
    cmd = service.get("command")
    if cmd is None:
        return []
    words = cmd if isinstance(cmd, list) else shlex.split(cmd)
    if words[:1] == ["sh"] or words[:1] == ["/bin/sh"]:
        script = words[-1]
        out = []
        # Shell lines with continuations; an assignment prefix (X=$(...) exec bin) is allowed.
        for line in script.replace("\\\n", " ").splitlines():
            try:
                toks = shlex.split(line.replace("$$", "$"))
            except ValueError:
                continue
            for i, t in enumerate(toks):
                if t in BINARIES:
                    out.append((t, toks[i + 1:]))
                    break
        return out
    return [(words[0], words[1:])] if words and words[0] in BINARIES else []


def check_compose(root, flag_uses):
    path = os.path.join(root, "deploy", "compose.yaml")
    rel = os.path.relpath(path, root)
    if not os.path.exists(path):
        problem(rel, "missing")
        return
    try:
        c = load_docs(path)[0]
    except yaml.YAMLError as e:
        problem(rel, f"does not parse: {e}")
        return
    services = c.get("services") or {}
    volumes = set((c.get("volumes") or {}).keys())
    names = set(services)
    for s in services.values():
        for net in (s.get("networks") or {}).values() if isinstance(s.get("networks"),
                                                                   dict) else []:
            names.update((net or {}).get("aliases") or [])
    count = {}
    for sname, s in services.items():
        for binary, _ in compose_commands(s):
            count[binary] = count.get(binary, 0) + int((s.get("deploy") or {}).get("replicas", 1))
    if "postgres" not in services:
        problem(rel, "no service postgres")
    for binary, want in (("aijobs-scheduler", 2), ("aijobs-worker", 2), ("aijobs-gateway", 1)):
        if count.get(binary, 0) < want:
            problem(rel, f"{count.get(binary, 0)} containers run {binary}, expected {want}")
    for sname, s in services.items():
        where = f"{rel}: service {sname}"
        deps = s.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problem(where, f"depends_on {dep}, which is not a service")
        for v in s.get("volumes") or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/", "$")) and src not in volumes:
                problem(where, f"volume {src} is not declared under volumes:")
        for binary, args in compose_commands(s):
            flag_uses.append((where, binary, flags_of(args)))
            target = flag_value(args, "scheduler", None)
            if target:
                for addr in target.split(","):
                    host = addr.rsplit(":", 1)[0]
                    if host not in names:
                        problem(where, f"--scheduler {addr}: {host} is no service or alias")


def help_flags(bin_dir, binary):
    path = os.path.join(bin_dir, binary)
    if not os.access(path, os.X_OK):
        problem(path, "missing (AIJOBS_BIN_DIR): cannot check the flags given to it")
        return None
    res = subprocess.run([path, "--helpfull" if binary.startswith("aijobs-") and binary !=
                          "aijobs-load" else "--help"],
                         capture_output=True, text=True, timeout=20)
    return set(re.findall(r"--([a-z][a-z0-9_-]*)", res.stdout + res.stderr))


def check_flags(flag_uses, bin_dir):
    known = {}
    for where, binary, flags in flag_uses:
        if binary not in known:
            known[binary] = help_flags(bin_dir, binary)
        if known[binary] is None:
            continue
        for fl in flags:
            if fl not in known[binary]:
                problem(where, f"{binary} has no flag --{fl} (not in its --help)")


def check_dockerfile(root):
    dev = open(os.path.join(root, "dev")).read()
    mdev = re.search(r"^PACKAGES=\((.*?)\)", dev, re.S | re.M)
    docker_path = os.path.join(root, "Dockerfile")
    if not os.path.exists(docker_path):
        problem("Dockerfile", "missing")
        return
    docker = open(docker_path).read()
    build_stage = docker.split("\nFROM ", 2)[1] if docker.count("\nFROM ") >= 2 else docker
    installed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", build_stage))
    for pkg in mdev.group(1).split() if mdev else []:
        if pkg not in NOT_FOR_THE_IMAGE and pkg not in installed:
            problem("Dockerfile", f"the build stage does not install {pkg} (in dev's PACKAGES); "
                                  "add it, or to NOT_FOR_THE_IMAGE here if only tests need it")
    for must in ("STOPSIGNAL SIGTERM", "ARG BASE_IMAGE=debian:bookworm", "USER "):
        if must not in docker:
            problem("Dockerfile", f"has no '{must}'")


def run_yamllint(root):
    exe = shutil.which("yamllint")
    if not exe:
        problem("yamllint", "not installed (apt-get install yamllint; ./dev deps)")
        return
    conf = os.path.join(root, "tests", "deploy", "yamllint.yaml")
    res = subprocess.run([exe, "-f", "parsable", "-c", conf, os.path.join(root, "deploy")],
                         capture_output=True, text=True, timeout=60)
    for line in res.stdout.splitlines():
        problem("yamllint", os.path.relpath(line, root) if line.startswith(root) else line)
    if res.returncode != 0 and not res.stdout:
        problem("yamllint", res.stderr.strip())


def run_kustomize(root):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return "kubectl not on PATH (Debian 12 ships only kubernetes-client 1.20): not rendered"
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, "deploy", "k8s")):
        if "kustomization.yaml" in files:
            res = subprocess.run([kubectl, "kustomize", dirpath], capture_output=True,
                                 text=True, timeout=60)
            rel = os.path.relpath(dirpath, root)
            if res.returncode != 0:
                problem(rel, f"kubectl kustomize: {res.stderr.strip()[-500:]}")
            else:
                out.append(f"{rel}: {res.stdout.count(chr(10) + 'kind: ')} objects")
    return "kubectl kustomize rendered " + ", ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--root", default=os.environ.get("AIJOBS_SOURCE_DIR", here))
    opts = ap.parse_args()
    root = os.path.abspath(opts.root)
    run_yamllint(root)
    m = Manifests(root)
    m.load()
    flag_uses = []
    check_k8s(m, flag_uses)
    check_compose(root, flag_uses)
    check_dockerfile(root)
    notes = [f"{len(m.objects)} objects in deploy/k8s"]
    bin_dir = os.environ.get("AIJOBS_BIN_DIR")
    if bin_dir:
        check_flags(flag_uses, bin_dir)
        notes.append(f"{sum(len(f) for _, _, f in flag_uses)} flags checked against {bin_dir}")
    else:
        notes.append("AIJOBS_BIN_DIR unset: flags not checked against the binaries")
    notes.append(run_kustomize(root))
    for n in notes:
        print(f"check_manifests: {n}")
    if problems:
        for p in problems:
            print(f"check_manifests: FAIL {p}")
        print(f"check_manifests: {len(problems)} problem(s)")
        return 1
    print("check_manifests: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
