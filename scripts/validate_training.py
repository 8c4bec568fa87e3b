"""Offline checks of the rendered training manifests (k8s/components/training).

usage: validate_training.py RENDERED.yaml...   (the renderings of scripts/validate_deploy.sh)

* A ``PyTorchJob`` is read into the Kubeflow Training SDK's ``KubeflowOrgV1PyTorchJob``
  through the SDK's own ``ApiClient`` and written back: a field the SDK does not know is lost
  on the way and reported, as are missing required fields. Each replica's pod template is then
  checked with ``kubernetes-validate --strict`` as a ``PodTemplate``.
* The plain alternative, an Indexed ``Job``, must have its headless Service, a rendezvous
  endpoint on pod 0 of that Service, and ``--nnodes`` equal to its completions.
* Every training pod: GPUs requested = limited = processes per node, ``/dev/shm`` in memory,
  the store credentials and the shared config from objects that exist in some rendering,
  a restricted security context, requests and limits.
* Both ways must be present in the renderings.

Exit status: 0 all good, 1 a problem (each printed), 3 the SDK or validator is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

try:
    import kubernetes_validate
    from kubeflow.training import ApiClient
except ImportError as exc:  # pragma: no cover - the tool check of validate_deploy.sh
    print(f"MISSING TOOL: {exc.name} (pip install kubeflow-training kubernetes-validate)", file=sys.stderr)
    sys.exit(3)

GPU = "nvidia.com/gpu"
K8S_VERSION = kubernetes_validate.latest_version()


class _Response:
    """What ``ApiClient.deserialize`` reads: the body of an API response."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def _diff(original: Any, echoed: Any, path: str = "") -> list[str]:
    """Where the SDK's round trip lost or changed something (unknown or mistyped fields)."""
    if isinstance(original, dict) and isinstance(echoed, dict):
        out = []
        for key, value in original.items():
            where = f"{path}.{key}" if path else key
            if key not in echoed:
                out.append(f"{where}: not a field of the PyTorchJob API (dropped by the SDK)")
            else:
                out += _diff(value, echoed[key], where)
        return out
    if isinstance(original, list) and isinstance(echoed, list):
        if len(original) != len(echoed):
            return [f"{path}: list changed length"]
        return [
            d
            for i, (a, b) in enumerate(zip(original, echoed, strict=True))
            for d in _diff(a, b, f"{path}[{i}]")
        ]
    if original != echoed and str(original) != str(echoed):
        return [f"{path}: {original!r} read back as {echoed!r}"]
    return []


def check_pytorchjob(doc: dict[str, Any]) -> list[str]:
    """The SDK round trip, the operator's requirements and the pod templates."""
    name = doc.get("metadata", {}).get("name", "?")
    where = f"PyTorchJob/{name}"
    client = ApiClient()
    try:
        job = client.deserialize(_Response(doc), "KubeflowOrgV1PyTorchJob")
    except (ValueError, TypeError) as exc:
        return [f"{where}: the Kubeflow SDK rejects it: {exc}"]
    problems = [f"{where}: {d}" for d in _diff(doc, client.sanitize_for_serialization(job))]
    if doc.get("apiVersion") != "kubeflow.org/v1":
        problems.append(f"{where}: apiVersion must be kubeflow.org/v1")
    specs = (job.spec.pytorch_replica_specs or {}) if job.spec else {}
    if set(specs) - {"Master", "Worker"} or "Master" not in specs:
        problems.append(
            f"{where}: pytorchReplicaSpecs needs Master (and optionally Worker), got {sorted(specs)}"
        )
    master = specs.get("Master")
    if master is not None and master.replicas != 1:
        problems.append(f"{where}: Master must have exactly 1 replica")
    nproc = job.spec.nproc_per_node if job.spec else None
    for role, spec in specs.items():
        pod = doc["spec"]["pytorchReplicaSpecs"][role].get("template")
        if spec.template is None or pod is None:
            problems.append(f"{where} {role}: no pod template")
            continue
        if spec.restart_policy not in ("Always", "OnFailure", "Never", "ExitCode"):
            problems.append(f"{where} {role}: restartPolicy {spec.restart_policy!r}")
        names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        if "pytorch" not in names:
            problems.append(f"{where} {role}: the operator needs a container named 'pytorch', got {names}")
        problems += _pod_template(f"{where} {role}", pod)
        problems += _training_pod(f"{where} {role}", pod["spec"], expected_gpus=nproc)
    return problems


def _pod_template(where: str, template: dict[str, Any]) -> list[str]:
    obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return [f"{where}: pod template: {path}: {exc.message}"]
    return []


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["containers"][0])


def _arg(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _training_pod(where: str, pod: dict[str, Any], expected_gpus: Any) -> list[str]:
    """Properties every training pod needs, whichever way it is run."""
    problems = []
    c = _container(pod)
    res = c.get("resources", {})
    requests, limits = res.get("requests", {}), res.get("limits", {})
    if not requests or not limits:
        problems.append(f"{where}: container needs resource requests and limits")
    if GPU not in limits or requests.get(GPU) != limits.get(GPU):
        problems.append(f"{where}: {GPU} must be requested and limited alike")
    elif expected_gpus is not None and str(limits[GPU]) != str(expected_gpus):
        problems.append(f"{where}: {limits[GPU]} GPUs per pod but {expected_gpus} processes per node")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    shm = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/dev/shm"]
    if not shm or volumes.get(shm[0]["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
        problems.append(f"{where}: /dev/shm must be an emptyDir with medium Memory")
    sources = {(next(iter(s)), next(iter(s.values()))["name"]) for s in c.get("envFrom", [])}
    for need in (("configMapRef", "ganfolk-config"), ("secretRef", "ganfolk-s3")):
        if need not in sources:
            problems.append(f"{where}: envFrom must include {need[0]} {need[1]}")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod securityContext must be restricted (runAsNonRoot, RuntimeDefault)")
    if (
        csc.get("allowPrivilegeEscalation") is not False
        or csc.get("capabilities", {}).get("drop") != ["ALL"]
        or csc.get("readOnlyRootFilesystem") is not True
    ):
        problems.append(f"{where}: container securityContext must be restricted")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false")
    return problems


def check_indexed_job(doc: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """The Job, its headless Service and the rendezvous arguments agree."""
    name = doc["metadata"]["name"]
    where = f"Job/{name}"
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"].get("metadata", {}).get("labels", {})
    problems = []
    nodes = spec.get("completions")
    if spec.get("parallelism") != nodes:
        problems.append(f"{where}: parallelism must equal completions (every node at once)")
    if pod.get("restartPolicy") not in ("OnFailure", "Never"):
        problems.append(f"{where}: restartPolicy must be OnFailure or Never")
    sub = pod.get("subdomain")
    svc = services.get(sub or "")
    if svc is None:
        problems.append(f"{where}: subdomain {sub!r} names no Service in the rendering")
    else:
        if svc["spec"].get("clusterIP") != "None":
            problems.append(f"{where}: Service {sub} must be headless (clusterIP: None)")
        selector = svc["spec"].get("selector", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{where}: Service {sub} does not select the Job's pods")
    args = _container(pod).get("args", [])
    endpoint = _arg(args, "--rdzv-endpoint") or ""
    host, _, port = endpoint.rpartition(":")
    if host.split(".")[:2] != [f"{name}-0", sub]:
        problems.append(f"{where}: --rdzv-endpoint {endpoint!r} must be pod 0, {name}-0.{sub}:PORT")
    ports = {str(p["containerPort"]) for p in _container(pod).get("ports", [])}
    if port not in ports:
        problems.append(f"{where}: rendezvous port {port!r} is not a container port")
    if str(_arg(args, "--nnodes")) != str(nodes):
        problems.append(f"{where}: --nnodes {_arg(args, '--nnodes')} but {nodes} completions")
    problems += _training_pod(where, pod, expected_gpus=_arg(args, "--gpus"))
    return problems


def main(paths: list[str]) -> int:
    """Check every training workload in the given renderings; print problems."""
    docs = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    problems: list[str] = []
    jobs = indexed = 0
    for d in docs:
        pods = []
        if d["kind"] == "PyTorchJob":
            jobs += 1
            problems += check_pytorchjob(d)
            pods = [
                s.get("template", {}).get("spec", {})
                for s in d["spec"].get("pytorchReplicaSpecs", {}).values()
            ]
        elif d["kind"] == "Job" and d["spec"].get("completionMode") == "Indexed":
            indexed += 1
            problems += check_indexed_job(d, services)
            pods = [d["spec"]["template"]["spec"]]
        for pod in pods:
            for c in pod.get("containers", []):
                for src in c.get("envFrom", []):
                    kind = "ConfigMap" if "configMapRef" in src else "Secret"
                    ref = next(iter(src.values()))
                    if (kind, ref["name"]) not in have and not ref.get("optional"):
                        problems.append(
                            f"{d['kind']}/{d['metadata']['name']}: {kind} {ref['name']} is in no rendering"
                        )
            account = pod.get("serviceAccountName")
            if account and ("ServiceAccount", account) not in have:
                problems.append(
                    f"{d['kind']}/{d['metadata']['name']}: ServiceAccount {account} is in no rendering"
                )
    if not jobs:
        problems.append("no PyTorchJob in any rendering (k8s/components/training/pytorchjob)")
    if not indexed:
        problems.append("no Indexed Job in any rendering (k8s/components/training/indexed-job)")
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"training manifests: {jobs} PyTorchJob(s), {indexed} Indexed Job(s) ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
