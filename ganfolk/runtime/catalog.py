"""The one table of GANfolk's services: module, default port, node type, operations, stages.

``ganfolk serve`` and ``ganfolk up`` find a service's module and port here, every stage
worker registers its NATS stage under a :class:`Stage` name from here, the coordinator
maps its pipeline onto these stages and their services, and the README's service table is
rendered from it (``python -m ganfolk.runtime.catalog`` prints it; a test keeps the README
in step). Nothing here imports a service: modules are named, not loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """NATS stage names: tasks go out on ``ganfolk.tasks.<stage>``."""

    PROMPTS = "prompts"
    SAMPLE = "sample"
    RANK = "rank"
    REFINE = "refine"
    FINISH = "finish"
    NAME = "name"
    BACKSTORY = "backstory"
    MINT = "mint"
    ALIGN = "align"
    INPAINT = "inpaint"
    PREPARE_DATASET = "prepare_dataset"


@dataclass(frozen=True)
class ServiceEntry:
    """One service: where its code lives and what it serves."""

    name: str
    # Module exposing ``SERVICE`` (a ServiceDefinition).
    module: str
    port: int
    # Where it belongs in a cluster: "GPU", "CPU", or "GPU/CPU" (runs well on either).
    node: str
    # Full name of its gRPC service (health, reflection, clients).
    grpc_service: str
    operations: tuple[str, ...]
    # NATS stages its workers consume.
    stages: tuple[Stage, ...] = ()
    # What it consumes besides tasks (documentation only).
    consumes: str = ""
    # A web app's HTTP port beside the gRPC one (0: none).
    http_port: int = 0


SERVICES: dict[str, ServiceEntry] = {
    e.name: e
    for e in (
        ServiceEntry(
            "align",
            "services.align.main",
            50061,
            "CPU",
            "ganfolk.v1.AlignService",
            ("AlignFace", "Inpaint", "PrepareDataset (stream)"),
            (Stage.ALIGN, Stage.INPAINT, Stage.PREPARE_DATASET),
        ),
        ServiceEntry(
            "stylegan",
            "services.stylegan.main",
            50062,
            "GPU",
            "ganfolk.v1.StyleGANService",
            ("Sample",),
            (Stage.SAMPLE,),
        ),
        ServiceEntry(
            "clip",
            "services.clip.main",
            50063,
            "GPU",
            "ganfolk.v1.ClipService",
            ("EmbedTexts", "EmbedImages", "Rank"),
            (Stage.RANK,),
        ),
        ServiceEntry(
            "vqgan",
            "services.vqgan.main",
            50064,
            "GPU",
            "ganfolk.v1.VQGANService",
            ("Refine (stream)",),
            (Stage.REFINE,),
        ),
        ServiceEntry(
            "upscale",
            "services.upscale.main",
            50065,
            "GPU/CPU",
            "ganfolk.v1.UpscaleService",
            ("Finish",),
            (Stage.FINISH,),
        ),
        ServiceEntry(
            "text",
            "services.text.main",
            50066,
            "CPU",
            "ganfolk.v1.TextService",
            ("Prompts", "Name", "Backstory"),
            (Stage.PROMPTS, Stage.NAME, Stage.BACKSTORY),
        ),
        ServiceEntry(
            "mint",
            "services.mint.main",
            50067,
            "CPU",
            "ganfolk.v1.MintService",
            ("Mint", "GetToken"),
            (Stage.MINT,),
        ),
        ServiceEntry(
            "coordinator",
            "services.coordinator.main",
            50051,
            "CPU",
            "ganfolk.v1.JobService",
            ("Submit", "Get", "List", "Watch (stream)", "Cancel", "Review", "GetOutputs"),
            consumes="`ganfolk.events.*`",
        ),
        ServiceEntry(
            "gallery",
            "services.gallery.main",
            50071,
            "CPU",
            "ganfolk.v1.InfoService",
            ("HTTP: review pages, actions, live progress, exports",),
            http_port=8071,
        ),
    )
}

# Stage -> the service whose workers consume it.
STAGE_SERVICE: dict[Stage, str] = {stage: e.name for e in SERVICES.values() for stage in e.stages}


def entry(name: str) -> ServiceEntry:
    """The table's entry of a service; a clear error for an unknown name."""
    try:
        return SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}") from None


def service_for(stage: Stage | str) -> str:
    """The service that runs a stage."""
    return STAGE_SERVICE[Stage(stage)]


def markdown_table() -> str:
    """The README's service table."""
    rows = [
        "| service | node | gRPC service | operations | NATS stages | port |",
        "|---|---|---|---|---|---|",
    ]
    for e in SERVICES.values():
        stages = ", ".join(f"`{s}`" for s in e.stages) or (f"consumes {e.consumes}" if e.consumes else "–")
        port = f"{e.port}, HTTP {e.http_port}" if e.http_port else str(e.port)
        rows.append(
            f"| [{e.name}](services/{e.name}) | {e.node} | `{e.grpc_service}` | "
            f"{', '.join(e.operations)} | {stages} | {port} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
