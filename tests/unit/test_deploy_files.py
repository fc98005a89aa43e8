"""The deployment files in deploy/, checked without Docker, kubectl or a network.

Each file is read as its tool reads it (YAML, the Containerfile's instructions, systemd's
INI syntax), and every primia configuration in it, a TOML file or one embedded in a
ConfigMap, is loaded with primia's own loaders: a renamed key, a wrong path or a
certificate nobody issues fails here rather than at a hospital.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from primia.federated.coordinator_config import CoordinatorConfig, load_coordinator_config
from primia.inference.party_config import (
    CryptoProviderConfig,
    ModelOwnerConfig,
    load_crypto_provider_config,
    load_data_owner_config,
    load_model_owner_config,
)
from primia.rpc.node_config import load_node_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
PKI = PurePosixPath("/srv/primia/pki")
STATE = PurePosixPath("/srv/primia/state")
NODES = ["hospital-a", "hospital-b", "hospital-c"]

# The primia command a container or unit runs -> the loader that command uses.
LOADERS: dict[tuple[str, str], Callable[[Path], Any]] = {
    ("coordinator", "serve"): load_coordinator_config,
    ("node", "serve"): load_node_config,
    ("infer", "crypto-provider"): load_crypto_provider_config,
    ("infer", "serve"): load_model_owner_config,
    ("infer", "predict"): load_data_owner_config,
}

SECRET_NAME = re.compile(r"secret|passw|token|private|credential|(^|_)key$", re.IGNORECASE)
SECRET_VALUE = re.compile(r"-----BEGIN|^[A-Za-z0-9+/=_-]{32,}$")


def loader_for(args: list[str]) -> Callable[[Path], Any]:
    return LOADERS[(args[0], args[1])]


def option(args: list[str], name: str) -> str:
    assert name in args, f"{args} has no {name}"
    return args[args.index(name) + 1]


def under(path: PurePosixPath | Path | str, folder: PurePosixPath | str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(folder))


def tls_paths(config: Any) -> list[Path]:
    return [config.tls.ca, config.tls.certificate, config.tls.key]


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def default_of(cls: type, name: str) -> Any:
    return next(field.default for field in fields(cls) if field.name == name)


# --------------------------------------------------------------------------- YAML


def yaml_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def test_every_yaml_file_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    names = {path.relative_to(DEPLOY).as_posix() for path in paths}
    assert {
        "compose.yaml",
        "kubernetes/coordinator.yaml",
        "kubernetes/node.yaml",
        "kubernetes/node-gpu-patch.yaml",
        "kubernetes/kustomization.yaml",
    } <= names
    for path in paths:
        documents = yaml_documents(path)
        assert documents, f"{path.name} holds no document"
        assert all(isinstance(document, dict) for document in documents), path.name


# --------------------------------------------------------------------------- Compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's volumes in the long syntax (the short one, SOURCE:TARGET[:ro], too)."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            volume = {
                "type": kind,
                "source": source,
                "target": target,
                "read_only": "ro" in ",".join(mode).split(","),
            }
        result.append(volume)
    return result


def mount_at(service: dict[str, Any], target: PurePosixPath | str) -> dict[str, Any] | None:
    return next((m for m in mounts(service) if m["target"] == str(target)), None)


def primia_services(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(name, primia arguments) of every service that runs primia with a --config."""
    for name, service in services.items():
        args = service.get("command") or []
        if "entrypoint" not in service and "--config" in args:
            yield name, args


@pytest.fixture(scope="module")
def compose_configs(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every service's configuration file, found through its mounts and loaded by primia."""
    configs = {}
    for name, args in primia_services(services):
        target = option(args, "--config")
        mount = mount_at(services[name], target)
        assert mount is not None, f"{name}: nothing is mounted at its --config {target}"
        assert mount["type"] == "bind" and mount.get("read_only"), name
        source = DEPLOY / mount["source"]
        assert source.is_file(), f"{name} mounts {mount['source']}, which does not exist"
        configs[name] = loader_for(args)(source)
    return configs


def issued_by_init(services: dict[str, dict[str, Any]]) -> set[str]:
    """The names init.sh issues certificates to (its `issue NAME ROLE` lines and NODES)."""
    script = DEPLOY / init_script(services)
    text = script.read_text()
    names = set(re.findall(r"^\s*issue\s+([\w.-]+)\s+\w+", text, re.MULTILINE))
    (nodes,) = re.findall(r'^NODES="([^"]*)"', text, re.MULTILINE)
    assert re.search(r'for node in \$NODES; do\s+issue "\$node" node', text)
    return names | set(nodes.split())


def init_script(services: dict[str, dict[str, Any]]) -> str:
    init = services["init"]
    shell, path = init["entrypoint"]
    assert shell == "/bin/sh"
    mount = mount_at(init, path)
    assert mount is not None and mount["type"] == "bind", "init's script is not mounted"
    return mount["source"]


def test_compose_runs_the_consortium(services: dict[str, dict[str, Any]]) -> None:
    assert {"init", "coordinator", *NODES, "crypto-provider", "model-owner"} <= set(services)
    assert services["init"]["profiles"] == ["init"]
    # `docker compose up` starts the federation only; inference waits for its model.
    started_by_up = {name for name, service in services.items() if not service.get("profiles")}
    assert started_by_up == {"coordinator", *NODES}
    commands = {name: args[:2] for name, args in primia_services(services)}
    assert commands["coordinator"] == ["coordinator", "serve"]
    assert all(commands[node] == ["node", "serve"] for node in NODES)
    assert commands["crypto-provider"] == ["infer", "crypto-provider"]
    assert commands["model-owner"] == ["infer", "serve"]


def test_compose_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = {json.dumps(service.get("image")) for service in services.values()}
    builds = {json.dumps(service.get("build"), sort_keys=True) for service in services.values()}
    assert len(images) == 1 and None not in images, images
    assert len(builds) == 1, builds
    build = next(iter(services.values()))["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Containerfile"


def test_compose_mounts_pki_read_only_and_the_ca_key_nowhere_else(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        pki = mount_at(service, PKI)
        assert pki is not None, f"{name} does not mount the certificates at {PKI}"
        assert pki["type"] == "volume" and pki["source"] == "pki"
        # init writes the certificates; every other service only reads them.
        assert bool(pki.get("read_only")) is (name != "init"), name
        sources = {m["source"] for m in mounts(service)}
        assert ("ca" in sources) is (name == "init"), f"{name} must not see the CA's key"


def test_compose_runs_as_the_image_user_except_init(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        user = str(service.get("user", "")).split(":")[0]
        if name == "init":
            assert user in ("0", "root")
        else:
            assert user == "", f"{name} overrides the image's non-root user"
            assert service.get("read_only") is True, name
            assert service.get("cap_drop") == ["ALL"], name


def test_compose_environment_holds_no_secret(compose: dict[str, Any]) -> None:
    assert "-----BEGIN" not in (DEPLOY / "compose.yaml").read_text()
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            assert not SECRET_NAME.search(key), f"{name}: {key} looks like a secret"
            assert not SECRET_VALUE.search(str(value)), f"{name}: {key}'s value looks like one"
    assert "secrets" not in compose


def test_compose_config_files_exist_and_load(
    services: dict[str, dict[str, Any]], compose_configs: dict[str, Any]
) -> None:
    assert set(compose_configs) == {
        "coordinator",
        *NODES,
        "crypto-provider",
        "model-owner",
        "predict",
    }
    issued = issued_by_init(services)
    for name, config in compose_configs.items():
        for path in tls_paths(config):
            assert under(path, PKI), f"{name}: {path} is not in the certificates' volume"
        assert config.tls.certificate.stem in issued, f"{name}: init issues no such certificate"
        assert config.tls.key.stem == config.tls.certificate.stem, name


def test_compose_nodes_and_coordinator_agree(
    services: dict[str, dict[str, Any]], compose_configs: dict[str, Any]
) -> None:
    coordinator = compose_configs["coordinator"]
    assert coordinator.roster == NODES
    assert host_of(coordinator.listen) == "0.0.0.0"
    for node in NODES:
        config = compose_configs[node]
        assert config.tls.certificate.stem == node
        assert host_of(config.coordinator) == "coordinator"
        assert port_of(config.coordinator) == port_of(coordinator.listen)
        assert config.coordinator_name == coordinator.tls.certificate.stem
    text = (DEPLOY / init_script(services)).read_text()
    (nodes,) = re.findall(r'^NODES="([^"]*)"', text, re.MULTILINE)
    assert nodes.split() == coordinator.roster, "init makes data for other nodes"
    assert "primia data synth" in text and "primia certs init" in text


def test_compose_inference_parties_find_each_other(
    services: dict[str, dict[str, Any]], compose_configs: dict[str, Any]
) -> None:
    model_owner = compose_configs["model-owner"]
    crypto_provider = compose_configs["crypto-provider"]
    data_owner = compose_configs["predict"]
    assert model_owner.rendezvous_host == "model-owner" == model_owner.tls.certificate.stem
    assert host_of(model_owner.crypto_provider) == "crypto-provider"
    assert port_of(model_owner.crypto_provider) == port_of(crypto_provider.listen)
    assert model_owner.crypto_provider_name == crypto_provider.tls.certificate.stem
    assert host_of(data_owner.server) == "model-owner"
    assert port_of(data_owner.server) == port_of(model_owner.listen)
    assert data_owner.server_name == model_owner.tls.certificate.stem
    assert data_owner.tls.certificate.stem in model_owner.allowed_data_owners
    # The model owner serves the run directory the coordinator writes, read-only.
    run_dir = PurePosixPath(compose_configs["coordinator"].run_dir)
    coordinator_state = mount_at(services["coordinator"], STATE)
    assert coordinator_state is not None and under(run_dir, STATE)
    model = PurePosixPath(option(services["model-owner"]["command"], "--model"))
    shared = [
        m
        for m in mounts(services["model-owner"])
        if m["source"] == coordinator_state["source"] and under(model, m["target"])
    ]
    assert len(shared) == 1 and shared[0]["read_only"], "the model owner cannot read the model"
    assert model.relative_to(shared[0]["target"]) == run_dir.relative_to(STATE)


def test_compose_volumes_per_service(
    compose: dict[str, Any], compose_configs: dict[str, Any]
) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    writable: dict[str, str] = {}
    for name, service in services.items():
        for mount in mounts(service):
            if mount["type"] != "volume":
                continue
            assert mount["source"] in declared, f"{name}: volume {mount['source']} undeclared"
            if not mount.get("read_only") and name != "init":
                assert mount["source"] not in writable, (
                    f"{name} and {writable.get(mount['source'])} write to one volume"
                )
                writable[mount["source"]] = name
        if name != "init":
            state = mount_at(service, STATE)
            assert state is not None and not state.get("read_only"), f"{name}: no state volume"
    for node in NODES:
        config = compose_configs[node]
        data = mount_at(services[node], config.data.path.as_posix())
        assert data is not None and data["read_only"], f"{node}: its images are not mounted"
        assert data["source"] == f"data-{node}"
        state = mount_at(services[node], config.state_dir.as_posix())
        assert state is not None and not state.get("read_only"), f"{node}: ledger not on a volume"
        assert state["source"] == f"state-{node}"


def test_compose_healthcheck_asks_the_coordinator(
    services: dict[str, dict[str, Any]], compose_configs: dict[str, Any]
) -> None:
    test = services["coordinator"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "primia", "status"]
    coordinator = compose_configs["coordinator"]
    assert port_of(option(test, "--coordinator")) == port_of(coordinator.listen)
    assert option(test, "--cert") == coordinator.tls.certificate.as_posix()
    assert option(test, "--key") == coordinator.tls.key.as_posix()


# --------------------------------------------------------------------------- Kubernetes

WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: yaml_documents(path)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml" and not path.name.endswith("-patch.yaml")
    }


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


def workloads(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (document for document in documents if document["kind"] in WORKLOADS)


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def pod_volume(workload: dict[str, Any], container: dict[str, Any], path: PurePosixPath) -> Any:
    """(mount, volume) of what ``container`` mounts at ``path``; volume None for a template."""
    mount = next(
        (m for m in container.get("volumeMounts", []) if m["mountPath"] == str(path)), None
    )
    assert mount is not None, f"{workload['metadata']['name']} mounts nothing at {path}"
    volumes = workload["spec"]["template"]["spec"].get("volumes", [])
    volume = next((v for v in volumes if v["name"] == mount["name"]), None)
    return mount, volume


def test_kustomization_lists_every_manifest(
    kustomization: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    for resource in resources:
        assert (KUBERNETES / resource).is_file(), f"kustomization lists missing {resource}"
    patches = {patch["path"] for patch in kustomization.get("patches", [])}
    for patch in patches:
        assert (KUBERNETES / patch).is_file()
    unlisted = set(manifests) - set(resources)
    assert not unlisted, f"manifests kustomization.yaml does not apply: {unlisted}"
    assert {"coordinator.yaml", "node.yaml"} <= set(resources)


def test_kubernetes_documents_have_kind_and_name(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    for name, documents in manifests.items():
        for document in documents:
            assert isinstance(document.get("apiVersion"), str), name
            assert isinstance(document.get("kind"), str), name
            assert isinstance(document.get("metadata", {}).get("name"), str), name
    kinds = {d["kind"] for d in manifests["coordinator.yaml"]}
    assert {"ConfigMap", "PersistentVolumeClaim", "Service"} <= kinds
    assert kinds & WORKLOADS
    assert {d["kind"] for d in manifests["node.yaml"]} >= {"ConfigMap", "StatefulSet"}


def test_kubernetes_containers_have_resources_and_run_as_non_root(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    found = 0
    for name, documents in manifests.items():
        for workload in workloads(documents):
            pod = workload["spec"]["template"]["spec"]
            pod_security = pod.get("securityContext", {})
            assert pod_security.get("runAsUser", 1) != 0, name
            for container in containers(workload):
                found += 1
                where = f"{name}: {container['name']}"
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][kind]), where
                security = {**pod_security, **container.get("securityContext", {})}
                assert security.get("runAsNonRoot") is True, where
                assert security.get("readOnlyRootFilesystem") is True, where
                assert security.get("allowPrivilegeEscalation") is False, where
                assert "ALL" in security.get("capabilities", {}).get("drop", []), where
                assert container["image"].partition(":")[0] == "primia", where
    assert found >= 2


def test_kubernetes_tls_files_come_from_a_secret(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    for name, documents in manifests.items():
        for document in documents:
            if document["kind"] == "Secret":  # a Secret here would put keys in the repository
                assert not document.get("data") and not document.get("stringData"), name
        for workload in workloads(documents):
            for container in containers(workload):
                mount, volume = pod_volume(workload, container, PKI)
                assert mount.get("readOnly") is True, name
                assert volume is not None and "secret" in volume, f"{name}: TLS not from a Secret"
                assert volume["secret"]["defaultMode"] & 0o007 == 0, "keys readable by others"


@pytest.fixture(scope="module")
def kubernetes_configs(
    manifests: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[dict[str, Any], dict[str, Any], Any]]:
    """workload name -> (workload, container, its config loaded from its ConfigMap)."""
    folder = tmp_path_factory.mktemp("configmaps")
    result = {}
    used = set()
    for name, documents in manifests.items():
        config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
        for workload in workloads(documents):
            (container,) = workload["spec"]["template"]["spec"]["containers"]
            args = container["args"]
            path = PurePosixPath(option(args, "--config"))
            _, volume = pod_volume(workload, container, path.parent)
            assert volume is not None and "configMap" in volume, name
            config_map = config_maps[volume["configMap"]["name"]]
            text = config_map["data"][path.name]
            file = folder / config_map["metadata"]["name"] / path.name
            file.parent.mkdir()
            file.write_text(text)
            used.add((config_map["metadata"]["name"], path.name))
            result[workload["metadata"]["name"]] = (workload, container, loader_for(args)(file))
        for config_map in config_maps.values():
            for key in config_map["data"]:
                assert (config_map["metadata"]["name"], key) in used, f"{key} is never used"
    return result


def test_kubernetes_configmaps_load_and_name_the_mounted_files(
    manifests: dict[str, list[dict[str, Any]]],
    kubernetes_configs: dict[str, tuple[dict[str, Any], dict[str, Any], Any]],
) -> None:
    assert {"primia-coordinator", "primia-node"} <= set(kubernetes_configs)
    for name, (_, _, config) in kubernetes_configs.items():
        for path in tls_paths(config):
            assert under(path, PKI), f"{name}: {path} is not where the Secret is mounted"
    coordinator = kubernetes_configs["primia-coordinator"][2]
    node = kubernetes_configs["primia-node"][2]
    assert host_of(coordinator.listen) == "0.0.0.0"
    assert port_of(node.coordinator) == port_of(coordinator.listen)
    assert node.coordinator_name == coordinator.tls.certificate.stem


def test_kubernetes_state_is_on_a_claim(
    manifests: dict[str, list[dict[str, Any]]],
    kubernetes_configs: dict[str, tuple[dict[str, Any], dict[str, Any], Any]],
) -> None:
    claims = {
        d["metadata"]["name"]
        for documents in manifests.values()
        for d in documents
        if d["kind"] == "PersistentVolumeClaim"
    }
    for name, (workload, container, config) in kubernetes_configs.items():
        state = config.run_dir if hasattr(config, "run_dir") else config.state_dir
        assert under(state, STATE), f"{name}: its state is not on the state volume"
        mount, volume = pod_volume(workload, container, STATE)
        assert not mount.get("readOnly"), name
        templates = {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        if volume is None:
            assert mount["name"] in templates, f"{name}: {STATE} is neither volume nor claim"
        else:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, name


def test_kubernetes_node_data_is_read_only_and_nodes_have_no_service(
    manifests: dict[str, list[dict[str, Any]]],
    kubernetes_configs: dict[str, tuple[dict[str, Any], dict[str, Any], Any]],
) -> None:
    workload, container, config = kubernetes_configs["primia-node"]
    assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 1
    mount, volume = pod_volume(workload, container, PurePosixPath(config.data.path))
    assert mount.get("readOnly") is True
    assert volume is not None and ("persistentVolumeClaim" in volume or "hostPath" in volume)
    node_labels = workload["spec"]["template"]["metadata"]["labels"]
    coordinator, coordinator_container, coordinator_config = kubernetes_configs[
        "primia-coordinator"
    ]
    services = [d for documents in manifests.values() for d in documents if d["kind"] == "Service"]
    assert services
    for service in services:
        selector = service["spec"]["selector"]
        assert not selector.items() <= node_labels.items(), "a Service selects the node"
        assert selector.items() <= coordinator["spec"]["template"]["metadata"]["labels"].items()
        (port,) = service["spec"]["ports"]
        assert port["port"] == port_of(coordinator_config.listen)
        named = {p["name"]: p["containerPort"] for p in coordinator_container["ports"]}
        assert named[port["targetPort"]] == port_of(coordinator_config.listen)


def test_kubernetes_gpu_patch_targets_the_node(manifests: dict[str, list[dict[str, Any]]]) -> None:
    (patch,) = yaml_documents(KUBERNETES / "node-gpu-patch.yaml")
    assert patch["apiVersion"] == "apps/v1"
    (node,) = [d for d in manifests["node.yaml"] if d["kind"] == "StatefulSet"]
    assert (patch["kind"], patch["metadata"]["name"]) == ("StatefulSet", node["metadata"]["name"])
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] in {c["name"] for c in containers(node)}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Not applied by default: a CPU node must not wait for a GPU.
    for c in containers(node):
        assert "nvidia.com/gpu" not in c["resources"]["limits"]


# --------------------------------------------------------------------------- Containerfile


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Containerfile ends inside a continuation"
    return result


@pytest.fixture(scope="module")
def containerfile() -> list[tuple[str, str]]:
    return instructions((DEPLOY / "Containerfile").read_text())


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in steps:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def test_containerfile_base_image_is_pinned(containerfile: list[tuple[str, str]]) -> None:
    defaults = arg_defaults(containerfile)
    stages: set[str] = set()
    bases = []
    for keyword, arguments in containerfile:
        if keyword != "FROM":
            continue
        words = [w for w in arguments.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], words[0])
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image in stages:
            continue
        bases.append(image)
        name, _, tag = image.split("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"base image {image} is not pinned to a tag"
    assert bases and all(b.startswith("python:3.11-slim") for b in bases), bases


def test_containerfile_runs_primia_as_a_non_root_user(
    containerfile: list[tuple[str, str]],
) -> None:
    keywords = [keyword for keyword, _ in containerfile]
    last_from = len(keywords) - 1 - keywords[::-1].index("FROM")
    entrypoint = keywords.index("ENTRYPOINT")
    users = [i for i in range(last_from, entrypoint) if keywords[i] == "USER"]
    assert users, "no USER in the final stage before ENTRYPOINT"
    user = containerfile[users[-1]][1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "USER must be a non-root uid"
    assert json.loads(containerfile[entrypoint][1]) == ["primia"]
    assert keywords.count("ENTRYPOINT") == 1
    assert json.loads(dict(containerfile)["CMD"]) == ["--help"]
    creates = " ".join(arguments for keyword, arguments in containerfile if keyword == "RUN")
    assert f"--uid {user}" in creates, "the USER is not the user the image creates"


def test_containerfile_copies_no_key_certificate_or_data(
    containerfile: list[tuple[str, str]],
) -> None:
    forbidden = re.compile(r"(^|/)(pki|data|runs|\.venv)(/|$)|\.(pem|key|crt|p12)$|^\.$|\*")
    copied = []
    for keyword, arguments in containerfile:
        if keyword not in ("COPY", "ADD"):
            continue
        assert keyword == "COPY", "ADD fetches and unpacks: use COPY"
        words = arguments.split()
        if any(word.startswith("--from=") for word in words):
            continue  # from a build stage, not from the build context
        sources = [word for word in words if not word.startswith("--")][:-1]
        for source in sources:
            assert not forbidden.search(source), f"COPY {source} may carry secrets or data"
            copied.append(source)
    assert set(copied) == {"pyproject.toml", "README.md", "primia"}
    for keyword, arguments in containerfile:
        assert "BEGIN" not in arguments and ".pem" not in arguments, keyword


def test_containerfile_pins_torch_and_crypten_like_the_makefile(
    containerfile: list[tuple[str, str]],
) -> None:
    makefile = (REPO / "Makefile").read_text()
    (torch_version,) = re.findall(r"^TORCH_VERSION \?= (\S+)$", makefile, re.MULTILINE)
    (crypten_version,) = re.findall(r"^CRYPTEN_VERSION \?= (\S+)$", makefile, re.MULTILINE)
    defaults = arg_defaults(containerfile)
    assert defaults["TORCH_SPEC"] == f"torch=={torch_version}"
    assert defaults["CRYPTEN_VERSION"] == crypten_version
    runs = [arguments for keyword, arguments in containerfile if keyword == "RUN"]
    torch_first = next(i for i, run in enumerate(runs) if '"${TORCH_SPEC}"' in run)
    primia = next(i for i, run in enumerate(runs) if '".[inference]"' in run)
    assert torch_first < primia, "torch must be installed, pinned, before primia"
    assert '"${TORCH_SPEC}"' in runs[primia], "installing primia must hold torch at its pin"
    assert re.search(r'pip install --no-deps "crypten==\$\{CRYPTEN_VERSION\}"', runs[primia])


def test_containerfile_exposes_the_default_ports_and_declares_the_volumes(
    containerfile: list[tuple[str, str]],
) -> None:
    exposed: set[int] = set()
    for keyword, arguments in containerfile:
        if keyword == "EXPOSE":
            for word in arguments.split():
                low, _, high = word.split("/")[0].partition("-")
                exposed.update(range(int(low), int(high or low) + 1))
    first, last = default_of(ModelOwnerConfig, "rendezvous_ports")
    wanted = {
        port_of(default_of(CoordinatorConfig, "listen")),
        port_of(default_of(ModelOwnerConfig, "listen")),
        port_of(default_of(CryptoProviderConfig, "listen")),
        *range(first, last + 1),
    }
    assert wanted <= exposed, sorted(wanted - exposed)
    steps = dict(containerfile)
    assert set(json.loads(steps["VOLUME"])) == {"/srv/primia/pki", "/srv/primia/data", str(STATE)}
    assert steps["WORKDIR"] == "/srv/primia"


def test_dockerignore_is_the_containerfiles_and_keeps_secrets_out() -> None:
    # BuildKit reads <Dockerfile name>.dockerignore next to the Dockerfile given with -f.
    ignore = DEPLOY / "Containerfile.dockerignore"
    lines = [line.strip() for line in ignore.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert {".venv", "runs", "pki", "data", "**/*.pem", "**/*.key"} <= set(patterns)
    assert patterns[0] == "*", "start from nothing and let in only what the image needs"
    assert {p[1:] for p in patterns if p.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "primia/",
    }


# --------------------------------------------------------------------------- systemd


def unit_file(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "on", "1")


@pytest.mark.parametrize(
    ("unit", "command"),
    [("primia-node.service", "node"), ("primia-coordinator.service", "coordinator")],
)
def test_systemd_unit_runs_primia_hardened(unit: str, command: str) -> None:
    parser = unit_file(SYSTEMD / unit)
    service = parser["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/primia/.venv/bin/primia"
    assert argv[1:3] == [command, "serve"]
    assert service["User"] not in ("root", "0", "")
    assert yes(service["NoNewPrivileges"])
    assert service["ProtectSystem"] == "strict"
    assert yes(service["PrivateTmp"])
    assert service["ProtectHome"] in ("yes", "read-only", "tmpfs")
    assert service["Restart"] == "on-failure" and service["RestartSec"]
    assert service["CapabilityBoundingSet"] == ""
    assert parser["Install"]["WantedBy"] == "multi-user.target"

    # Its configuration, as installed under /etc/primia, is the one written next to it.
    config_path = PurePosixPath(option(argv, "--config"))
    assert config_path.parent == PurePosixPath("/etc/primia")
    config = LOADERS[(command, "serve")](SYSTEMD / config_path.name)
    state = config.state_dir if command == "node" else config.run_dir
    writable = service["ReadWritePaths"].split()
    assert any(under(state, path) for path in writable), f"{state} is read-only to the unit"
    assert any(under(state, f"/var/lib/{d}") for d in service["StateDirectory"].split())
    # The key comes from LoadCredential, to this unit alone.
    name, _, source = service["LoadCredential"].partition(":")
    assert PurePosixPath(config.tls.key) == PurePosixPath("/run/credentials", unit, name)
    assert under(source, "/etc/primia") and source.endswith(".key")
