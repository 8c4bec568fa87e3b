"""Collections: filters, balance within them, names unique within a collection; backstories that
do not contradict the person."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import pytest

from ganfolk.v1 import text_pb2, text_pb2_grpc
from services.text.config import TextSettings
from services.text.core import TextCore, check_person, name_key, validate_backstory
from services.text.filters import CollectionFilter
from services.text.llm import LLMClient
from services.text.main import SERVICE
from services.text.names import NameSource
from services.text.notability import NotabilityChecker
from services.text.persons import find_person
from tests.fixtures.services import serving
from tests.text.conftest import Scripted


def scripted_core(scripted: Scripted, notability: NotabilityChecker, **settings: Any) -> TextCore:
    s = TextSettings(text_llm_base_url=scripted.base_url, text_wikipedia_api_url="", **settings)
    llm = LLMClient(scripted.base_url, "scripted", None, timeout=5, retries=0, retry_wait=0.01)
    return TextCore(s, llm, notability)


@pytest.fixture(scope="module")
async def template_stub(tmp_path_factory: pytest.TempPathFactory, name_source: NameSource) -> Any:
    """The text service with no LLM endpoint: the template writer answers."""
    async with serving(
        SERVICE, worker_enabled=False, store_url=str(tmp_path_factory.mktemp("text-templates"))
    ) as (_, channel):
        yield text_pb2_grpc.TextServiceStub(channel)


async def test_filtered_collection_is_balanced_and_named_uniquely(template_stub: Any) -> None:
    wanted = text_pb2.CollectionFilter(
        nationalities=["Portuguese", "Bulgaria", "GB"],
        age_groups=["child", "elder"],
        genders=["female", "male"],
        media=["charcoal sketch", "Oil Painting"],
    )
    reply = await template_stub.Prompts(
        text_pb2.PromptsRequest(count=24, seed=5, filter=wanted, with_names=True)
    )
    prompts = list(reply.prompts)
    assert Counter(p.country_code for p in prompts) == {"PT": 8, "BG": 8, "GB": 8}
    assert Counter((p.age_group, p.gender) for p in prompts) == {
        ("child", "female"): 6,
        ("child", "male"): 6,
        ("elder", "female"): 6,
        ("elder", "male"): 6,
    }
    assert Counter(p.medium for p in prompts) == {"charcoal sketch": 12, "oil painting": 12}
    names = [name_key(p.first_name, p.last_name) for p in prompts]
    assert all(p.first_name and p.last_name for p in prompts) and len(set(names)) == len(names)
    assert reply.provenance.parameters["filter"]["nationalities"] == ["Portuguese", "Bulgaria", "GB"]


async def test_regions_as_nationalities(template_stub: Any) -> None:
    wanted = text_pb2.CollectionFilter(nationalities=["South America"], genders=["f"])
    reply = await template_stub.Prompts(text_pb2.PromptsRequest(count=8, seed=1, filter=wanted))
    assert {p.country_code for p in reply.prompts} == {"AR", "BO", "BR", "CL", "CO", "EC", "PE", "UY"}
    assert {p.gender for p in reply.prompts} == {"female"}


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (text_pb2.CollectionFilter(nationalities=["Martian"]), "'Martian' is not a known nationality"),
        (text_pb2.CollectionFilter(age_groups=["baby boomer"]), "age group 'baby boomer' is not one of"),
        (text_pb2.CollectionFilter(genders=["robot"]), "gender 'robot' is not one of: female, male"),
        (text_pb2.CollectionFilter(media=["interpretive dance"]), "names no technique"),
        (text_pb2.CollectionFilter(media=["a" * 70]), "too long"),
    ],
)
async def test_bad_filters_are_invalid_argument(template_stub: Any, wanted: Any, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await template_stub.Prompts(text_pb2.PromptsRequest(count=2, filter=wanted))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_reserved_and_excluded_names(template_stub: Any) -> None:
    kept = await template_stub.Name(
        text_pb2.NameRequest(description="a shy Portuguese girl", seed=1, reserved_name="Joana Ferreira")
    )
    assert (kept.first_name, kept.last_name) == ("Joana", "Ferreira")
    notable = await template_stub.Name(
        text_pb2.NameRequest(description="a shy Mexican woman", seed=1, reserved_name="Frida Kahlo Jr.")
    )
    assert notable.first_name != "Frida" or notable.last_name != "Kahlo"
    first = await template_stub.Name(text_pb2.NameRequest(description="a shy Turkish boy", seed=3))
    again = await template_stub.Name(
        text_pb2.NameRequest(
            description="a shy Turkish boy",
            seed=3,
            exclude_names=[f"{first.first_name.upper()} {first.last_name}"],
        )
    )
    assert (again.first_name, again.last_name) != (first.first_name, first.last_name)
    assert any(r.startswith("duplicate: ") for r in again.rejected)


async def test_a_repeated_llm_name_is_reasked_then_drawn_from_the_templates(
    scripted: Scripted, notability: NotabilityChecker, name_source: NameSource
) -> None:
    scripted.play("Mehmet Kaya")  # every prompt and every name answer
    core = scripted_core(scripted, notability, text_llm_concurrency=2)
    wanted = CollectionFilter(countries=("TR",), genders=("m",))
    prompts, outcome = await core.prompts(4, seed=2, max_attempts=2, wanted=wanted, with_names=True)
    names = [name_key(p.first_name, p.last_name) for p in prompts]
    assert len(set(names)) == 4 and names.count("mehmet kaya") == 1
    duplicates = [r for r in outcome.rejected if r.startswith("duplicate: Mehmet Kaya")]
    assert len(duplicates) == 3 * 2  # three prompts, each asked twice, then the templates
    assert "template-writer" in outcome.fallbacks


@pytest.mark.parametrize(
    ("text", "description", "error"),
    [
        (
            "Mehmet grew up in Izmir, where she sold bread with her aunt.",
            "a shy Turkish boy",
            "calls a boy 'she'",
        ),
        ("Ayla is retired now and spends time with her grandchildren.", "a shy Turkish girl", "adult's life"),
        (
            "Ayla, a 45-year-old teacher, lives in Izmir with her cat.",
            "a shy Turkish girl",
            "says 45 years old",
        ),
        (
            "Orhan is a child who loves his kindergarten class in Izmir.",
            "an old Turkish man",
            "makes a man a child",
        ),
        ("Ayla paints boats in Izmir; see her work at ayla-art.com today.", "a shy Turkish girl", "links"),
    ],
)
def test_backstories_that_contradict_the_person(text: str, description: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        validate_backstory(text, "Mehmet Ayla Orhan", 60, 5, find_person(description))


def test_backstories_that_fit() -> None:
    boy = find_person("an inquisitive Turkish boy")
    check_person("Mehmet grew up in Izmir. His mother taught her pupils to read; he helped.", boy)
    check_person("Mehmet is 9 years old and loves kites.", boy)
    check_person("They say Deniz is a quiet teenager.", find_person("a mischievous Turkish teenager"))
    check_person("At 7 years old she moved; now she has grandchildren.", find_person("a Turkish grandmother"))


async def test_backstory_reasked_then_template_when_it_contradicts(
    scripted: Scripted, notability: NotabilityChecker
) -> None:
    wrong = "Mehmet Kaya is a retired teacher who lives with his wife in Izmir and reads every day."
    scripted.play(wrong)
    core = scripted_core(scripted, notability)
    text, outcome = await core.backstory(
        "Mehmet Kaya", "an inquisitive Turkish boy", seed=1, max_words=60, max_attempts=2
    )
    assert text != wrong and "Mehmet" in text and outcome.fallbacks == ["template-writer"]
    assert all("adult's life" in r for r in outcome.rejected)
    check_person(text, find_person("an inquisitive Turkish boy"))


def test_filters_and_names_pass_through_the_coordinator() -> None:
    """CLI flags -> JobSpec -> PromptsRequest; each written name -> the child's NameRequest."""
    from ganfolk import cli
    from ganfolk.runtime.catalog import Stage
    from ganfolk.runtime.errors import InvalidArgument
    from ganfolk.v1 import jobs_pb2
    from services.coordinator import pipeline

    argv = ["portrait", "--collection", "2", "--nationalities", "Bulgarian,PT", "--nationalities", "Nordic"]
    args = cli.build_parser().parse_args(
        [*argv, "--ages", "child", "--genders", "female", "--media", "etching"]
    )
    spec = cli._spec(args)
    assert list(spec.collection_filter.nationalities) == ["Bulgarian", "PT", "Nordic"]
    pipeline.validate_spec(spec)
    job = jobs_pb2.Job(job_id="job-c", spec=spec)
    (task,) = pipeline._prompts_requests(job, Stage.PROMPTS)
    request = text_pb2.PromptsRequest.FromString(task.payload)
    assert request.with_names and request.filter == spec.collection_filter and request.count == 2
    written = text_pb2.PromptsResponse(
        prompts=[
            text_pb2.PortraitPrompt(
                text="etching of a shy Bulgarian girl",
                medium="etching",
                adjective="shy",
                nationality="Bulgarian",
                person="girl",
                first_name=first,
                last_name="Ivanova",
            )
            for first in ("Desislava", "Gergana")
        ]
    )
    children = pipeline.child_specs(job, written)
    assert [s.reserved_name for _, s in children] == ["Desislava Ivanova", "Gergana Ivanova"]
    assert not children[0][1].HasField("collection_filter")
    child = jobs_pb2.Job(job_id="job-d", spec=children[0][1], description=children[0][1].description)
    (name_task,) = pipeline._name_requests(child, Stage.NAME)
    assert text_pb2.NameRequest.FromString(name_task.payload).reserved_name == "Desislava Ivanova"

    with pytest.raises(InvalidArgument, match="'Martian' is not a known nationality"):
        pipeline.validate_spec(
            jobs_pb2.JobSpec(
                collection_size=2, collection_filter=text_pb2.CollectionFilter(nationalities=["Martian"])
            )
        )
    with pytest.raises(InvalidArgument, match="set collection_size too"):
        pipeline.validate_spec(
            jobs_pb2.JobSpec(collection_filter=text_pb2.CollectionFilter(genders=["female"]))
        )
